# The two commands: `make demo` (a working service on a local sandbox host, no GPU needed)
# and `make test` (everything CI runs). Both install what they need first.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: demo demo-down test lint bench bench-gateway bench-vllm bench-pooling bench-routers bench-fleet bootstrap demo-artifacts sandbox-artifacts pooling-artifacts vllm-artifacts

bootstrap:
	scripts/ci/bootstrap.sh

## The sandbox host, llama-server and its image (build.sh), and the embedding and reranker's
## (build_pooling.sh), built side by side: one compiles while the other mostly downloads.
demo-artifacts:
	$(MAKE) --no-print-directory -j2 --output-sync=target sandbox-artifacts pooling-artifacts

sandbox-artifacts: bootstrap
	scripts/sandbox/build.sh

## Infinity (the CPU pooling engine) as an image, all-MiniLM-L6-v2 and a tiny reranker (about 3 minutes, 2 GB).
pooling-artifacts: bootstrap
	scripts/sandbox/build_pooling.sh

## vLLM's CPU build as an image and a tiny Qwen3 (about 5 minutes, 4 GB); it reuses the
## Python base image and all-MiniLM-L6-v2 of build_pooling.sh.
vllm-artifacts: demo-artifacts
	scripts/sandbox/build_vllm.sh

## Provision the sandbox host: llama.cpp's CPU backend on 127.0.0.1:8000, embedding on :8001,
## reranker on :8002, the gateway in front of all three on :8080; then the original's
## test_api.py checks all three, directly and through the gateway (the sandbox's committed
## key). It prints how long it took, building the artifacts included.
demo:
	@start=$$(date +%s); $(MAKE) --no-print-directory demo-artifacts && scripts/sandbox/up.sh \
	  && ansible-playbook site.yml \
	  && $(VENV)/python test_api.py \
	  && $(VENV)/python test_api.py --gateway http://127.0.0.1:8080 --api-key sandbox-key-not-secret-0001 \
	  && echo "make demo: serving after $$(( $$(date +%s) - start )) s. Try README's curl examples."

demo-down:
	scripts/sandbox/down.sh

## Everything CI runs: artifacts, lint, unit and gateway tests and the Molecule scenarios,
## side by side where they can (scripts/ci/pipeline.py), with a table of each phase's time.
test:
	scripts/ci/test.sh

lint: bootstrap
	scripts/ci/lint.sh

## Timings of a converge, a re-run and a backend switch on the sandbox host, with Podman and with Docker.
bench: sandbox-artifacts
	molecule/default/build_test_doubles.sh
	$(VENV)/python -m scripts.bench.switch

## The gateway's added latency and throughput vs a direct connection, nginx and LiteLLM's proxy.
bench-gateway: bootstrap
	command -v wrk >/dev/null && command -v nginx >/dev/null || apt-get install -y --no-install-recommends wrk nginx-light
	$(VENV)/python -m scripts.bench.gateway

## HAProxy vs vllm-router in front of two workers: added latency, SSE, drain, a killed worker.
bench-routers: sandbox-artifacts
	command -v wrk >/dev/null && command -v haproxy >/dev/null || apt-get install -y --no-install-recommends wrk haproxy
	$(VENV)/python -m scripts.bench.routers

## Two sandbox hosts behind the router: latency with 1 and 2 hosts vs direct, a rolling switch.
bench-fleet: sandbox-artifacts
	command -v wrk >/dev/null || apt-get install -y --no-install-recommends wrk
	molecule/default/build_test_doubles.sh
	$(VENV)/python -m scripts.bench.fleet

## vLLM's services (start time, memory, embedding and rerank speed) vs sentence-transformers.
bench-vllm: vllm-artifacts
	$(VENV)/python -m scripts.bench.vllm

## The pooling engines: Infinity vs vLLM's CPU build vs sentence-transformers in-process.
bench-pooling: vllm-artifacts
	$(VENV)/python -m scripts.bench.pooling
