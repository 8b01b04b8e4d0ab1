#!/usr/bin/env bash
# Everything CI runs (`make test`): what the machine needs installed (bootstrap.sh), then the
# phases of scripts/ci/pipeline.py side by side as soon as what each needs is built: the
# sandbox artifacts, lint, the unit-rendering and gateway tests, and the Molecule scenarios
# (default, switch, fleet, docker, vllm, gpu), each in a network namespace of its own. It ends with a
# table of every phase's time and one line counting the tests; any failure fails the run.
# Phases by name: scripts/ci/test.sh 'molecule gpu' (runs what that phase needs first).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_NOCOLOR=1 PY_COLORS=0
# pytest cuts a failed test's summary line to the terminal's width: wide enough for its reason.
export COLUMNS=200

started=$(date +%s)
scripts/ci/bootstrap.sh
SWITCHYARD_CI_BOOTSTRAP_S=$(($(date +%s) - started))
export SWITCHYARD_CI_BOOTSTRAP_S
exec "$root/.venv/bin/python" -m scripts.ci.pipeline "$@"
