"""The benchmarks (`make bench`, `make bench-gateway`, `make bench-vllm`), run as modules of
this package: `python -m scripts.bench.gateway` from the project's root."""
