#!/usr/bin/env bash
# The linters, as CI runs them: yamllint, ansible-lint (production profile), ruff.
set -euo pipefail
cd "$(dirname "$0")/../.."
yamllint --strict .
ansible-lint --profile production
ruff check .
ruff format --check .
