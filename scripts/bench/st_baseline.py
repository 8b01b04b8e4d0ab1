"""The baseline of the pooling benchmarks (vllm.py, pooling.py): sentence-transformers in one
process on the same model files.

Run with the benchmark venv's Python (sentence-transformers, CPU torch), from the project's root:
    python -m scripts.bench.st_baseline EMBEDDING_DIR STARTED_AT [BACKEND [CROSS_ENCODER_DIR]] < workload.json
STARTED_AT is the wall-clock time at which the caller started this process, so "ready" counts
Python's and torch's start as a service's start counts them. BACKEND is sentence-transformers'
torch (default), onnx or openvino. Rerank scores the documents with CROSS_ENCODER_DIR when
given, else by the embeddings' cosine (as vLLM scores with an embedding model). Prints one JSON
object: seconds to ready, resident memory (VmRSS, as measured for the services), and raw
per-call seconds for the caller to summarise.
"""

import json
import re
import sys
import time
from pathlib import Path

from .stats import timed


def main() -> None:
    model_dir, started_at = sys.argv[1], float(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "torch"
    cross_encoder_dir = sys.argv[4] if len(sys.argv) > 4 else None
    from sentence_transformers import CrossEncoder, SentenceTransformer, util

    model = SentenceTransformer(model_dir, device="cpu", backend=backend)
    model.encode(["ready"])
    cross_encoder = CrossEncoder(cross_encoder_dir, device="cpu", backend=backend) if cross_encoder_dir else None
    if cross_encoder is not None:
        cross_encoder.predict([("ready", "ready")])
    ready_seconds = time.time() - started_at
    work = json.load(sys.stdin)
    texts, query, documents = work["texts"], work["query"], work["documents"]

    def rerank() -> None:
        if cross_encoder is not None:
            cross_encoder.predict([(query, document) for document in documents], batch_size=len(documents))
            return
        vectors = model.encode([query, *documents], batch_size=len(documents) + 1)
        util.cos_sim(vectors[:1], vectors[1:])

    one_by_one = iter(texts * work["batch1_requests"])
    results = {
        "ready_seconds": ready_seconds,
        "warmup": timed(lambda: model.encode(texts, batch_size=32), work["warmup"]),
        "batch1": timed(lambda: model.encode([next(one_by_one)], batch_size=1), work["batch1_requests"]),
        "batch32": timed(lambda: model.encode(texts, batch_size=32), work["batch32_requests"]),
        "rerank": timed(rerank, work["rerank_requests"]),
        "rss_mib": int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024,
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
