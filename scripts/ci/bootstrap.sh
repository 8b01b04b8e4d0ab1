#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian/Ubuntu machine, as root:
# podman, runc, debootstrap, a C++ toolchain and network namespace tools from the distribution, and a Python venv
# (.venv) with requirements-dev.txt. Safe to run again: it skips what is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

# iproute2 and slirp4netns: the network namespace each Molecule scenario runs in (scripts/ci/lanes.py).
packages=(podman runc crun debootstrap uidmap cmake g++ make python3-venv curl openssh-client iproute2 slirp4netns)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp="$root/.venv/.requirements"
if [ ! -x "$root/.venv/bin/python" ] || ! cmp -s <(cat "$root"/requirements*.txt) "$stamp"; then
  echo "==> installing Python requirements into .venv"
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install --quiet --upgrade pip
  "$root/.venv/bin/pip" install --quiet -r "$root/requirements-dev.txt"
  cat "$root"/requirements*.txt >"$stamp"
fi
