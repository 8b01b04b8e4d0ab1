# The two commands: `make demo` (a working service on a local sandbox host, no GPU needed)
# and `make test` (everything CI runs). Both install what they need first.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: demo demo-down test lint bench bench-gateway bench-vllm bench-routers bench-fleet bootstrap sandbox-artifacts vllm-artifacts

bootstrap:
	scripts/ci/bootstrap.sh

sandbox-artifacts: bootstrap
	scripts/sandbox/build.sh

## vLLM's CPU build as an image, a tiny Qwen3 and all-MiniLM-L6-v2 (about 7 minutes, 4 GB).
vllm-artifacts: sandbox-artifacts
	scripts/sandbox/build_vllm.sh

## Provision the sandbox host with the CPU llama.cpp backend; it answers on 127.0.0.1:8000.
demo: sandbox-artifacts
	scripts/sandbox/up.sh
	ansible-playbook site.yml
	@echo "Try: curl -s http://127.0.0.1:8000/v1/models"

demo-down:
	scripts/sandbox/down.sh

## Lint, unit and gateway tests, then the Molecule scenarios on fresh sandbox hosts.
test: sandbox-artifacts vllm-artifacts
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
