#!/usr/bin/env bash
# Build, offline, what the sandbox host needs and no registry can give here:
#   - localhost/switchyard/sandbox-host:bookworm-ssh  a Debian 12 rootfs with systemd and an
#     SSH server on 127.0.0.1:2222 (debootstrap)
#   - llama-server, built from the llama.cpp tree vendored in the llama-cpp-python sdist
#   - localhost/switchyard/llama.cpp:server-local  an image laid out like the official
#     llama.cpp server image (/app/llama-server), saved to an archive for the host to load
#   - models/llamacpp/tiny-llama.gguf              a tiny random-weight model
#   - wheelhouse/                                  wheels of gateway/requirements.txt, so the
#     sandbox host installs the gateway offline, as an air-gapped host would
#   - wheelhouse-models/                           wheels of the huggingface-hub that
#     roles/models installs on the host, for its downloads
# Everything lands in .cache/sandbox/ (lib.sh: a cache that outlives the checkout) and is
# reused while its recipe is unchanged; the two images, in this machine's Podman store.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/sandbox/lib.sh
. "$root/scripts/sandbox/lib.sh"
llama_cpp_python_version=0.3.36
host_image=localhost/switchyard/sandbox-host:bookworm-ssh
server_image=localhost/switchyard/llama.cpp:server-local

build_host_image() {
  local made
  made=$(recipe "$(cat "$root/scripts/sandbox/zipimport_cache.py")")
  if podman image exists "$host_image" && made_from sandbox-host "$made"; then return; fi
  log "building $host_image with debootstrap"
  local rootfs="$cache/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,python3,python3-apt,dbus,sudo,ca-certificates,iproute2,curl,openssh-server \
    bookworm "$rootfs" >"$cache/debootstrap.log"
  # Ansible reaches the sandbox over SSH (scripts/sandbox/up.sh installs the key): on the
  # machine's network, so on loopback and a port of its own, keys only.
  printf '%s\n' 'Port 2222' 'ListenAddress 127.0.0.1' 'PermitRootLogin prohibit-password' \
    'PasswordAuthentication no' 'KbdInteractiveAuthentication no' >"$rootfs/etc/ssh/sshd_config.d/sandbox.conf"
  # Ansible's modules cost the host less CPU: the byte code of what they import from their zip
  # is kept between tasks (zipimport_cache.py says why; a test host's, never the roles').
  cp "$root/scripts/sandbox/zipimport_cache.py" "$rootfs/usr/lib/python3/dist-packages/"
  echo 'import zipimport_cache' >"$rootfs/usr/lib/python3/dist-packages/zipimport_cache.pth"
  # A sandbox host gets its machine id at first boot, like a fresh install.
  : >"$rootfs/etc/machine-id"
  tar -C "$rootfs" -c . | podman import --quiet \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$host_image" >/dev/null
  rm -rf "$rootfs"
  record_recipe sandbox-host "$made"
}

llama_source() {
  local src="$cache/llama-cpp-python-$llama_cpp_python_version"
  if [ ! -d "$src/vendor/llama.cpp" ]; then
    log "fetching the llama-cpp-python $llama_cpp_python_version sdist"
    "$python" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
      -d "$cache" "llama-cpp-python==$llama_cpp_python_version" 2>/dev/null \
      || "$python" -m pip download --quiet --no-deps --no-binary :all: \
        -d "$cache" "llama-cpp-python==$llama_cpp_python_version"
    tar -C "$cache" -xzf "$cache/llama_cpp_python-$llama_cpp_python_version.tar.gz"
    mv "$cache/llama_cpp_python-$llama_cpp_python_version" "$src"
  fi
  printf '%s\n' "$src/vendor/llama.cpp"
}

build_llama_server() {
  local tree=$1 build="$cache/llama-build" made
  made=$(recipe "$tree")
  if [ -x "$build/bin/llama-server" ] && made_from llama-server "$made"; then return; fi
  log "building llama-server (about 4 minutes on 2 cores)"
  rm -rf "$build"
  # -O1: a third less compile time than Release's -O3 (measured per file: arg.cpp 18.2 → 12.2
  # CPU-seconds, ggml-cpu's ops.cpp 7.5 → 4.1), and the sandbox's tiny model needs no more.
  # The compile is on the longest chain of a bare machine's `make test`.
  cmake -S "$tree" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DCMAKE_C_FLAGS_RELEASE="-O1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DBUILD_SHARED_LIBS=OFF -DGGML_OPENMP=OFF >"$cache/llama-build.log"
  cmake --build "$build" --target llama-server -j "$(nproc)" >>"$cache/llama-build.log"
  record_recipe llama-server "$made"
}

build_server_image() {
  local archive="$cache/llama-server-image.tar" made
  made=$(recipe "$(recipe_of llama-server)")
  if [ -f "$archive" ] && made_from llama-server-image "$made"; then return; fi
  log "packing $server_image"
  local layer="$cache/server-rootfs"
  rm -rf "$layer" && mkdir -p "$layer/app" "$layer/tmp" "$layer/etc"
  cp "$cache/llama-build/bin/llama-server" "$layer/app/"
  # The binary and the shared libraries it links, at their own paths: nothing else.
  ldd "$layer/app/llama-server" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$layer$(dirname "$lib")"
    cp -L "$lib" "$layer$lib"
  done
  echo 'root:x:0:0:root:/root:/sbin/nologin' >"$layer/etc/passwd"
  chmod 1777 "$layer/tmp"
  podman rmi --force "$server_image" >/dev/null 2>&1 || true
  tar -C "$layer" -c . | podman import --quiet \
    --change 'ENTRYPOINT ["/app/llama-server"]' --change 'WORKDIR /app' \
    --change 'ENV LLAMA_ARG_HOST=0.0.0.0' - "$server_image" >/dev/null
  podman save --quiet --format docker-archive -o "$archive.partial" "$server_image"
  mv "$archive.partial" "$archive"
  rm -rf "$layer"
  record_recipe llama-server-image "$made"
}

make_model() {
  local tree=$1 model="$cache/models/llamacpp/tiny-llama.gguf" made
  made=$(recipe "$tree" "$(cat "$root/scripts/sandbox/make_tiny_gguf.py")")
  if [ -f "$model" ] && made_from tiny-gguf "$made"; then return; fi
  log "writing the tiny GGUF model"
  "$python" "$root/scripts/sandbox/make_tiny_gguf.py" "$tree/models/ggml-vocab-llama-spm.gguf" "$model"
  record_recipe tiny-gguf "$made"
}

# build_wheelhouse DIR PIP_REQUIREMENTS...: the wheels of what pip is asked for, in
# $cache/DIR, fetched again only when what is asked for changes. Binary wheels only: the host
# needs no compiler. The sandbox host's Python is this one's.
build_wheelhouse() {
  local wheelhouse="$cache/$1" wanted
  shift
  wanted=$(if [ "$1" = -r ]; then cat "$2"; else printf '%s\n' "$@"; fi)
  if [ "$(cat "$wheelhouse/.requirements" 2>/dev/null)" = "$wanted" ]; then return; fi
  log "downloading the wheels for $(basename "$wheelhouse")"
  rm -rf "$wheelhouse" && mkdir -p "$wheelhouse"
  "$python" -m pip download --quiet --only-binary=:all: "$@" -d "$wheelhouse"
  printf '%s\n' "$wanted" >"$wheelhouse/.requirements"
}

build_host_image
build_wheelhouse wheelhouse -r "$root/gateway/requirements.txt"
# The pin the models role installs, read from its vars so that the two cannot drift.
build_wheelhouse wheelhouse-models "$(sed -n 's/^__models_hf_requirement: *//p' "$root/roles/models/vars/main.yml")"
tree=$(llama_source)
build_llama_server "$tree"
build_server_image
make_model "$tree"
log "sandbox artifacts ready in $cache"
