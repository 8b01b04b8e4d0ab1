# Shared by the sandbox's builds (build.sh, build_pooling.sh, build_vllm.sh, the test doubles)
# and up.sh; sourced, not run. Expects $root (the project) and defines $cache, $hub and what the
# builds have in common.

# The artifacts outlive the checkout: .cache/sandbox is a link to a cache of this machine's
# user (SWITCHYARD_CACHE, default ~/.cache/switchyard), so that a fresh clone (CI's) finds what
# an earlier run built. Each artifact is rebuilt when its recipe changes (recipe, below).
shared_cache=${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}/sandbox
mkdir -p "$shared_cache" "$root/.cache"
# Two builds start side by side: the one that loses the race finds the other's link.
ln -sT "$shared_cache" "$root/.cache/sandbox" 2>/dev/null || true
cache=$(readlink -f "$root/.cache/sandbox")
hub="$cache/models/huggingface/hub"
python="${PYTHON:-$root/.venv/bin/python}"
# The engine images (Infinity 2 GB, vLLM 4 GB, and their Python base) are built into an image
# store of their own, which every sandbox host mounts read-only as an additional image store
# (scripts/sandbox/up.sh): the services find them there, none is saved, copied or loaded.
image_store="$cache/images"
# Its run state in a directory of its own per store: another checkout's store must not share it.
store_podman=(podman --root "$image_store" --runroot "/run/switchyard-images/$(printf '%s' "$image_store" | sha256sum | cut -c1-16)")
# Debian 12 with Python and what pip's wheels of torch-based servers load at run time.
python_base_image=localhost/switchyard/python-base:bookworm
# The CPU build of torch both torch-based images install (vLLM's and Infinity's).
torch_version=2.13.0
# Flags these build machines need for a container started on the machine itself
# (the same quirks as scripts/sandbox/up.sh): crun refuses the cgroup layout, rlimits cannot be raised.
podman_run=("${store_podman[@]}" --runtime runc run --rm --network host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000)
mkdir -p "$cache" "$hub"

log() { printf '==> %s\n' "$*" >&2; }

# recipe [INPUT...]: a short hash of what the calling function makes its artifact from: its own
# text (none when called from a script's top level), and each INPUT (a version, a file's
# content, the recipe of an artifact it builds on).
recipe() { { declare -f "${FUNCNAME[1]}" || true; printf '%s\n' "$@"; } | sha256sum | cut -c1-16; }
# made_from NAME RECIPE: whether the artifact NAME was last made from RECIPE.
made_from() { [ "$(recipe_of "$1")" = "$2" ]; }
recipe_of() { cat "$cache/recipes/$1" 2>/dev/null || true; }
record_recipe() { mkdir -p "$cache/recipes" && printf '%s\n' "$2" >"$cache/recipes/$1"; }

build_python_base_image() {
  local made
  made=$(recipe)
  if "${store_podman[@]}" image exists "$python_base_image" && made_from python-base "$made"; then return; fi
  log "building $python_base_image with debootstrap"
  local rootfs="$cache/python-rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,libnuma1,libgomp1,ca-certificates,g++,python3-dev \
    bookworm "$rootfs" >"$cache/python-debootstrap.log"
  tar -C "$rootfs" -c . | "${store_podman[@]}" import --quiet - "$python_base_image" >/dev/null
  rm -rf "$rootfs"
  record_recipe python-base "$made"
}

# pip_build NAME SCRIPT: runs SCRIPT (sh) in a container NAME from the base image, left for
# the caller to commit. pip inside trusts what this machine's pip trusts (its CA bundle, a
# TLS-inspecting proxy's included) and sees its local wheels (a CPU build of torch). Set in
# the command, not with -e, so that none of it stays in the image.
pip_build() {
  local name=$1 script=$2
  local mounts=(-v "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}:/etc/ssl/certs/build-ca.crt:ro")
  local pip_env="PIP_CERT=/etc/ssl/certs/build-ca.crt PIP_DEFAULT_TIMEOUT=180"
  for links in ${PIP_FIND_LINKS:-/opt/wheels}; do
    if [ -d "$links" ]; then mounts+=(-v "$links:$links:ro") && pip_env+=" PIP_FIND_LINKS=$links"; fi
  done
  "${store_podman[@]}" rm --force "$name" >/dev/null 2>&1 || true
  "${store_podman[@]}" --runtime runc run --name "$name" --network host --ulimit nofile=1024:1024 \
    --ulimit nproc=1000:1000 "${mounts[@]}" "$python_base_image" sh -euc "export $pip_env; $script" \
    >"$cache/$name.log" 2>&1
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
