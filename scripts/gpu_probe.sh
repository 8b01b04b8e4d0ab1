#!/usr/bin/env bash
# What an NVIDIA host looks like to Switchyard, read without network and without changing
# anything: run it on a GPU host (as root) before a first `site.yml`, or when the GPU checks
# fail, and keep its output. It prints
#   - the distribution and kernel, and the NVIDIA devices on the PCI bus (what roles/gpu
#     detects: vendor 0x10de);
#   - the conformance of the driver stack, as the nvidia role checks it (the same script):
#     the driver reachable and matching its NVML libraries (the "Driver/library version
#     mismatch" after an upgrade without a reboot), the CDI spec in effect made for the
#     running driver, /dev/nvidia-uvm;
#   - nvidia-smi -L and the GPUs' name, driver and memory;
#   - with ansible-playbook at hand, the gpu role's own decision in check mode (gpu_use),
#     and the driver branch and source the nvidia role would use.
# Usage: scripts/gpu_probe.sh   (exit 0 when the stack conforms, 1 when it does not)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
problems=0
section() { printf '\n== %s\n' "$*"; }
problem() { echo "PROBLEM: $*"; problems=$((problems + 1)); }

section "distribution"
# shellcheck disable=SC1091
. /etc/os-release && echo "$PRETTY_NAME (ID=$ID VERSION_ID=$VERSION_ID), kernel $(uname -r)"

section "NVIDIA devices on the PCI bus (vendor 0x10de)"
found=0
for device in /sys/bus/pci/devices/*; do
  [ "$(cat "$device/vendor" 2>/dev/null)" = 0x10de ] || continue
  found=$((found + 1))
  echo "$(basename "$device") device=$(cat "$device/device") class=$(cat "$device/class") driver=$(basename "$(readlink "$device/driver" 2>/dev/null || echo none)")"
done
[ "$found" -gt 0 ] || problem "no NVIDIA device on the PCI bus: gpu_enabled: auto would run everything on the CPU"

section "driver stack: the nvidia role's conformance check (roles/nvidia/files/switchyard-gpu-check)"
module=$(sed -n 's/.*Kernel Module\( for [a-z_0-9]*\)\? *\([0-9][0-9.]*\).*/\2/p' /proc/driver/nvidia/version 2>/dev/null | head -n 1)
echo "kernel module: ${module:-not loaded}"
engine=podman
command -v podman >/dev/null || ! command -v docker >/dev/null || engine=docker
python3 "$root/roles/nvidia/files/switchyard-gpu-check" --engine="$engine" \
  || problem "the GPU stack does not conform (the problems and their fixes are above)"
for tool in nvidia-ctk nvidia-container-cli; do
  command -v "$tool" >/dev/null && echo "$tool: $("$tool" --version 2>&1 | head -n 1)"
done

section "nvidia-smi"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L || problem "nvidia-smi -L failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,persistence_mode --format=csv,noheader || true
else
  problem "nvidia-smi is not installed"
fi

section "the gpu role's decision (check mode)"
if command -v ansible-playbook >/dev/null; then
  playbook=$(mktemp --suffix=.yml)
  trap 'rm -f "$playbook"' EXIT
  cat >"$playbook" <<'PLAYBOOK'
- name: What the gpu play decides on this host
  hosts: localhost
  connection: local
  gather_facts: true
  gather_subset: [min]
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Detect the GPU as roles/gpu does
      ansible.builtin.include_role:
        name: gpu
        tasks_from: detect
    - name: Report the decision and the driver the nvidia role would install
      ansible.builtin.debug:
        msg: >-
          gpu_use={{ gpu_use }}; distribution={{ ansible_facts['distribution'] }}
          {{ ansible_facts['distribution_version'] }}; nvidia_driver_branch={{ nvidia_driver_branch }};
          nvidia_driver_source={{ nvidia_driver_source }}; CUDA repository={{ nvidia_cuda_repo_url }}
PLAYBOOK
  if output=$(ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_ROLES_PATH="$root/roles" ansible-playbook --check \
    -i localhost, -e "@$root/roles/switchyard_defaults/defaults/main/gpu.yml" -e "@$root/roles/switchyard_defaults/defaults/main/nvidia.yml" "$playbook" 2>&1); then
    sed -n 's/^ *"msg": "\(.*\)"$/\1/p' <<<"$output"
  else
    problem "the gpu role's check failed:"
    tail -n 20 <<<"$output"
  fi
else
  echo "ansible-playbook is not installed here: skipped"
fi

section "verdict"
if [ "$problems" -eq 0 ]; then echo "the GPU stack conforms"; else echo "$problems problem(s) above"; fi
[ "$problems" -eq 0 ]
