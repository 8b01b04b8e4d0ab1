"""Memory and time of vLLM's three services on the sandbox host, against sentence-transformers.

On a fresh sandbox host provisioned as molecule/vllm provisions it (the CPU build of vLLM, a
tiny Qwen3 as the chat model, all-MiniLM-L6-v2 as embedding and reranker model), it measures:
  - seconds from `systemctl start` to a healthy /health, for each service started alone
    while the other two run;
  - resident memory of each service: the VmRSS of every process in its container, summed;
  - embedding throughput in texts/s with 1 and 32 texts per request (POST /v1/embeddings);
  - rerank latency p50/p99 for a query and 10 documents (POST /v1/rerank);
and, in the same run on the same machine, the same with sentence-transformers loading the same
model files in one Python process (scripts/bench/st_baseline.py): the baseline of the ratios.
Run it as `make bench-vllm` (about 20 minutes on 2 cores; it needs `make vllm-artifacts`).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .sandbox import PROJECT, Sandbox
from .stats import percentile, timed

SANDBOX = os.environ.get("SWITCHYARD_SANDBOX", "switchyard-bench")
BASELINE_VENV = PROJECT / ".cache/bench/st-venv"
# The ONNX backend is one of pooling.py's candidates.
BASELINE_REQUIREMENTS = ("torch==2.13.0", "sentence-transformers[onnx]==5.7.0")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HUB = PROJECT / ".cache/sandbox/models/huggingface/hub"
# unit, container, port
SERVICES = (
    ("llm-embedding", "llm-embedding", 8001),
    ("llm-reranker", "llm-reranker", 8002),
    ("llm-backend", "llm-vllm", 8000),
)
WORDS = [
    "the",
    "model",
    "reads",
    "a",
    "short",
    "text",
    "about",
    "cats",
    "trucks",
    "rivers",
    "cities",
    "music",
    "code",
    "weather",
    "history",
    "gardens",
]
WORKLOAD = {"warmup": 3, "batch1_requests": 200, "batch32_requests": 20, "rerank_requests": 100}


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 24))).capitalize() + "." for _ in range(count)]


TEXTS = sentences(32, seed=1)
QUERY = "Which text is about cats in the city?"
DOCUMENTS = sentences(10, seed=2)


def start_to_healthy(sandbox: Sandbox, unit: str, port: int) -> float:
    sandbox.run("systemctl", "stop", unit)
    started = time.monotonic()
    sandbox.run("systemctl", "start", "--no-block", unit)
    deadline = started + 900
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    raise RuntimeError(f"{unit} was not healthy on port {port} within 900 s")


def resident_mib(sandbox: Sandbox, container: str) -> float:
    status = sandbox.run("podman", "exec", container, "sh", "-c", "cat /proc/[0-9]*/status 2>/dev/null")
    return sum(int(kib) for kib in re.findall(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)) / 1024


def post(client: httpx.Client, url: str, body: dict) -> None:
    client.post(url, json=body).raise_for_status()


def measure_vllm(sandbox: Sandbox) -> dict:
    results: dict = {"ready_seconds": {}, "rss_mib": {}}
    for unit, _, port in SERVICES:
        results["ready_seconds"][unit] = start_to_healthy(sandbox, unit, port)
    embeddings, rerank = "http://127.0.0.1:8001/v1/embeddings", "http://127.0.0.1:8002/v1/rerank"
    one_by_one = iter(TEXTS * WORKLOAD["batch1_requests"])
    with httpx.Client(timeout=120) as client:
        timed(lambda: post(client, embeddings, {"model": MODEL, "input": TEXTS}), WORKLOAD["warmup"])
        timed(
            lambda: post(client, rerank, {"model": MODEL, "query": QUERY, "documents": DOCUMENTS}), WORKLOAD["warmup"]
        )
        results["batch1"] = timed(
            lambda: post(client, embeddings, {"model": MODEL, "input": [next(one_by_one)]}), WORKLOAD["batch1_requests"]
        )
        results["batch32"] = timed(
            lambda: post(client, embeddings, {"model": MODEL, "input": TEXTS}), WORKLOAD["batch32_requests"]
        )
        results["rerank"] = timed(
            lambda: post(client, rerank, {"model": MODEL, "query": QUERY, "documents": DOCUMENTS}),
            WORKLOAD["rerank_requests"],
        )
    for unit, container, _ in SERVICES:
        results["rss_mib"][unit] = resident_mib(sandbox, container)
    return results


def snapshot(repo: str) -> Path:
    """The model files of a Hugging Face cache entry in the sandbox cache."""
    return next((HUB / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir())


def measure_baseline(backend: str = "torch", cross_encoder: str | None = None) -> dict:
    """sentence-transformers in one process (st_baseline.py) on MODEL, and on the cross-encoder
    repo `cross_encoder` for rerank when given, with one of its backends."""
    python = BASELINE_VENV / "bin/python"
    if not python.exists():
        print(f"installing {' '.join(BASELINE_REQUIREMENTS)} into {BASELINE_VENV} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(BASELINE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *BASELINE_REQUIREMENTS], check=True)
    work = json.dumps(WORKLOAD | {"texts": TEXTS, "query": QUERY, "documents": DOCUMENTS})
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(PROJECT),
    }
    models = [str(snapshot(MODEL)), str(time.time()), backend]
    if cross_encoder:
        models.append(str(snapshot(cross_encoder)))
    done = subprocess.run(
        [str(python), "-m", "scripts.bench.st_baseline", *models],
        input=work,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(done.stdout)


def texts_per_second(seconds: list[float], batch: int) -> float:
    return batch * len(seconds) / sum(seconds)


def report(vllm: dict, baseline: dict) -> None:
    rows = [
        ("embedding: start to healthy (s)", vllm["ready_seconds"]["llm-embedding"], baseline["ready_seconds"]),
        ("reranker: start to healthy (s)", vllm["ready_seconds"]["llm-reranker"], baseline["ready_seconds"]),
        ("chat backend (tiny Qwen3): start to healthy (s)", vllm["ready_seconds"]["llm-backend"], None),
        ("embedding: resident memory (MiB)", vllm["rss_mib"]["llm-embedding"], baseline["rss_mib"]),
        ("reranker: resident memory (MiB)", vllm["rss_mib"]["llm-reranker"], baseline["rss_mib"]),
        ("chat backend: resident memory (MiB)", vllm["rss_mib"]["llm-backend"], None),
        *(
            (
                f"embedding, batch {batch}: texts/s",
                texts_per_second(vllm[key], batch),
                texts_per_second(baseline[key], batch),
            )
            for key, batch in (("batch1", 1), ("batch32", 32))
        ),
        *(
            (
                f"rerank, 10 documents: p{q} (ms)",
                1000 * percentile(vllm["rerank"], q),
                1000 * percentile(baseline["rerank"], q),
            )
            for q in (50, 99)
        ),
    ]
    print(f"\n{'measure':<50}{'vLLM':>10}{'baseline':>10}{'vLLM/base':>11}")
    for name, ours, base in rows:
        if base is None:
            print(f"{name:<50}{ours:>10.1f}{'-':>10}{'-':>11}")
        else:
            print(f"{name:<50}{ours:>10.1f}{base:>10.1f}{ours / base:>11.2f}")
    print(
        "\nbaseline: sentence-transformers 6.2.0 on the same model files, one process on this machine;"
        " vLLM figures include HTTP to the sandbox host."
    )


def main() -> None:
    with Sandbox(SANDBOX, PROJECT / "molecule/vllm/inventory/hosts.yml") as sandbox:
        converge = sandbox.site()
        print(f"converge of the fresh sandbox host: {converge:.0f} s", file=sys.stderr)
        vllm = measure_vllm(sandbox)
        baseline = measure_baseline()
    report(vllm, baseline)


if __name__ == "__main__":
    main()
