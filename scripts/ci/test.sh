#!/usr/bin/env bash
# Everything CI runs, in order: lint, the unit-rendering tests, the gateway's tests, then the
# Molecule scenarios on fresh sandbox hosts (converge, idempotence, testinfra checks and the
# switch tests, with Podman and with Docker; a fleet of two behind the router; vLLM), and the GPU stack's scenario against a local stand-in for NVIDIA's repositories.
# Run it as `make test`, which first builds the offline sandbox artifacts.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_NOCOLOR=1 PY_COLORS=0
export SWITCHYARD_SANDBOX="${SWITCHYARD_SANDBOX:-switchyard-molecule}"

step() { printf '\n==> %s\n' "$*"; }

step "building the test doubles and the NVIDIA repository fixture"
molecule/default/build_test_doubles.sh
molecule/gpu/build_repo.sh

step "lint: yamllint, ansible-lint (production profile), ruff"
scripts/ci/lint.sh

step "rendered units for every backend, engine and GPU setting"
pytest -p no:cacheprovider tests/

step "gateway: its own tests against a real llama-server, with the openai SDK as the client"
pytest -p no:cacheprovider gateway/tests/

step "molecule default: the sandbox host, converged twice, verified, switched"
molecule test --scenario-name default

step "molecule fleet: two sandbox hosts behind HAProxy, a rolling switch under traffic, a host added, a host killed"
molecule test --scenario-name fleet

step "molecule docker: container_engine docker for real (dockerd in the sandbox host), switched, rolled back, restarted"
molecule test --scenario-name docker

step "molecule vllm: vLLM's backend, embedding and reranker for real, and a switch beside them"
molecule test --scenario-name vllm

step "molecule gpu: the NVIDIA stack against the repository fixture on 127.0.0.1:8765"
python3 -m http.server 8765 --bind 127.0.0.1 --directory .cache/gpu-repo >/dev/null 2>&1 &
fixture_server=$!
trap 'kill "$fixture_server" 2>/dev/null || true' EXIT
molecule test --scenario-name gpu
