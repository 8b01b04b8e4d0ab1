#!/usr/bin/env bash
# Remove the sandbox host and its nested container storage. Usage: down.sh [NAME]
set -euo pipefail
name=${1:-${SWITCHYARD_SANDBOX:-switchyard-sandbox}}
podman rm --force --time 10 "$name" >/dev/null 2>&1 || true
podman volume rm --force "$name-containers" "$name-docker" >/dev/null 2>&1 || true
echo "sandbox host $name removed"
