"""The pooling engines on a CPU, in one run on the same model files: Infinity (what
llm_pooling_engine auto picks on a host without a GPU), vLLM's CPU build, and
sentence-transformers in one process with its torch and ONNX backends (the baseline).

A fresh sandbox host provisioned as molecule/default provisions it (llama.cpp backend;
embedding all-MiniLM-L6-v2, reranker the tiny cross-encoder made from it) runs its embedding
and reranker services on Infinity, then, converged again with llm_pooling_engine=vllm, on
vLLM. For each service engine:
  - seconds of `systemctl restart` of each service: stop, start, and the readiness probe's
    first embedding or rerank (started means serving);
  - resident memory of each service: the VmRSS of every process in its container, summed;
  - embedding throughput in texts/s with 1 and 32 texts per request (POST /v1/embeddings);
  - rerank latency p50/p99 for a query and 10 documents (POST /v1/rerank);
and the same for sentence-transformers (scripts/bench/st_baseline.py: both models in one
process, so its memory is of both). Ratios are against the torch baseline of the same run.
Run it as `make bench-pooling` (about 15 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import sys
import time

import httpx

from .sandbox import PROJECT, Sandbox
from .stats import percentile, timed
from .vllm import (
    BASELINE_REQUIREMENTS,
    DOCUMENTS,
    MODEL,
    QUERY,
    TEXTS,
    WORKLOAD,
    measure_baseline,
    post,
    resident_mib,
    texts_per_second,
)

SANDBOX = os.environ.get("SWITCHYARD_SANDBOX", "switchyard-bench")
RERANKER = "switchyard/tiny-reranker"
SERVICES = (("llm-embedding", 8001), ("llm-reranker", 8002))
ON_VLLM = {
    "llm_pooling_engine": "vllm",
    "llm_vllm_cpu_image": "localhost/switchyard/vllm-cpu:local",
    "llm_embedding_max_model_len": 256,
    "llm_reranker_max_model_len": 256,
}


def measure_services(sandbox: Sandbox) -> dict:
    results: dict = {"ready_seconds": {}, "rss_mib": {}}
    for unit, _port in SERVICES:
        started = time.monotonic()
        sandbox.run("systemctl", "restart", unit)
        results["ready_seconds"][unit] = time.monotonic() - started
    embeddings, rerank = "http://127.0.0.1:8001/v1/embeddings", "http://127.0.0.1:8002/v1/rerank"
    ranking = {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS}
    one_by_one = iter(TEXTS * WORKLOAD["batch1_requests"])
    with httpx.Client(timeout=120) as client:
        timed(lambda: post(client, embeddings, {"model": MODEL, "input": TEXTS}), WORKLOAD["warmup"])
        timed(lambda: post(client, rerank, ranking), WORKLOAD["warmup"])
        results["batch1"] = timed(
            lambda: post(client, embeddings, {"model": MODEL, "input": [next(one_by_one)]}), WORKLOAD["batch1_requests"]
        )
        results["batch32"] = timed(
            lambda: post(client, embeddings, {"model": MODEL, "input": TEXTS}), WORKLOAD["batch32_requests"]
        )
        results["rerank"] = timed(lambda: post(client, rerank, ranking), WORKLOAD["rerank_requests"])
    for unit, _port in SERVICES:
        results["rss_mib"][unit] = resident_mib(sandbox, unit)
    return results


def rows(result: dict) -> dict[str, float]:
    """The figures of one candidate; a baseline has one start and one memory for both models."""
    ready, rss = result["ready_seconds"], result["rss_mib"]
    each = isinstance(ready, dict)
    figures = {
        "embedding: start to ready (s)": ready["llm-embedding"] if each else ready,
        "reranker: start to ready (s)": ready["llm-reranker"] if each else ready,
        "resident memory, both services (MiB)": sum(rss.values()) if each else rss,
        "embedding, batch 1 (texts/s)": texts_per_second(result["batch1"], 1),
        "embedding, batch 32 (texts/s)": texts_per_second(result["batch32"], 32),
    }
    for q in (50, 99):
        figures[f"rerank, 10 documents, p{q} (ms)"] = 1000 * percentile(result["rerank"], q)
    return figures


def report(candidates: dict[str, dict]) -> None:
    tables = {name: rows(result) for name, result in candidates.items()}
    baseline = tables["st torch"]
    names = list(tables)
    print(f"\n{'measure':<40}" + "".join(f"{name:>14}" for name in names))
    for measure in baseline:
        print(f"{measure:<40}" + "".join(f"{tables[name][measure]:>14.1f}" for name in names))
    print(f"\n{'ratio to st torch':<40}" + "".join(f"{name:>14}" for name in names))
    for measure, base in baseline.items():
        print(f"{measure:<40}" + "".join(f"{tables[name][measure] / base:>14.2f}" for name in names))
    print(
        f"\nst: {BASELINE_REQUIREMENTS[1]} in one process on this machine, both models loaded (its start"
        " and memory are of both; onnx's start includes exporting both models); the services' figures"
        " include HTTP to the sandbox host."
    )


def main() -> None:
    candidates: dict[str, dict] = {}
    with Sandbox(SANDBOX, PROJECT / "molecule/default/inventory/hosts.yml") as sandbox:
        print(f"converge, services on Infinity: {sandbox.site():.0f} s", file=sys.stderr)
        candidates["infinity"] = measure_services(sandbox)
        print(f"converge again, services on vLLM: {sandbox.site(json.dumps(ON_VLLM)):.0f} s", file=sys.stderr)
        candidates["vllm"] = measure_services(sandbox)
    for backend in ("torch", "onnx"):
        candidates[f"st {backend}"] = measure_baseline(backend, RERANKER)
    report(candidates)


if __name__ == "__main__":
    main()
