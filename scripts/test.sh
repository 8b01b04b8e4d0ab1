#!/usr/bin/env bash
# Everything CI runs, in order: lint, the unit-rendering tests, then the Molecule scenario on
# a fresh sandbox host (converge, idempotence, testinfra checks and the switch tests).
# Run it as `make test`, which first builds the offline sandbox artifacts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_NOCOLOR=1 PY_COLORS=0
export SWITCHYARD_SANDBOX="${SWITCHYARD_SANDBOX:-switchyard-molecule}"

step() { printf '\n==> %s\n' "$*"; }

step "building the test doubles"
molecule/default/build_test_doubles.sh

step "lint: yamllint, ansible-lint (production profile), ruff"
yamllint --strict .
ansible-lint --profile production
ruff check .

step "rendered units for every backend, engine and GPU setting"
pytest -p no:cacheprovider tests/

step "molecule: the sandbox host, converged twice, verified, switched"
molecule test
