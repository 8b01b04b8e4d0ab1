"""The benchmarks (`make bench`, `make bench-gateway`, `make bench-vllm`, `make bench-pooling`,
`make bench-routers`, `make bench-fleet`), run as modules of this package:
`python -m scripts.bench.gateway` from the project's root."""
