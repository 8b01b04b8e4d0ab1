#!/usr/bin/env bash
# Build the Ollama test double (no Ollama binary is available here) into an image archive
# next to the sandbox artifacts in .cache/sandbox/ (rebuilt when this script, the double or
# the sandbox host image it is built on change). The image carries /registry, the double's
# stand-in for registry.ollama.ai: one model, tiny:latest, for the models role to pull.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/sandbox/lib.sh
. "$root/scripts/sandbox/lib.sh"
image=localhost/switchyard/ollama-test-double:latest
archive="$cache/ollama-test-double.tar"
double="$root/molecule/default/files/ollama_test_double.py"

made=$(recipe "$(cat "$0" "$double")" "$(recipe_of sandbox-host)")
if [ -f "$archive" ] && made_from ollama-test-double "$made"; then
  exit 0
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
install -m 0755 "$double" "$context/ollama"

# An Ollama store: blobs named by their sha256, and a manifest listing them.
registry="$context/registry"
mkdir -p "$registry/blobs" "$registry/manifests/registry.ollama.ai/library/tiny"
blob() {  # blob FILE -> '"digest": "sha256:...", "size": N', the file moved into blobs/
  local digest size
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$registry/blobs/sha256-$digest"
  printf '"digest": "sha256:%s", "size": %s' "$digest" "$size"
}
printf '{"model_format": "gguf", "model_family": "tiny"}' >"$context/config"
head -c 1048576 /dev/urandom >"$context/weights"
config=$(blob "$context/config")
weights=$(blob "$context/weights")
cat >"$registry/manifests/registry.ollama.ai/library/tiny/latest" <<MANIFEST
{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
 "config": {"mediaType": "application/vnd.docker.container.image.v1+json", $config},
 "layers": [{"mediaType": "application/vnd.ollama.image.model", $weights}]}
MANIFEST

cat >"$context/Containerfile" <<'CONTAINERFILE'
FROM localhost/switchyard/sandbox-host:bookworm-ssh
COPY ollama /bin/ollama
COPY registry /registry
# The base image is a systemd host, whose stop signal is SIGRTMIN+3; Ollama stops on SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/ollama"]
CMD ["serve"]
CONTAINERFILE
podman build --runtime runc --quiet --tag "$image" "$context" >/dev/null
podman save --quiet --format docker-archive -o "$archive.partial" "$image"
mv "$archive.partial" "$archive"
record_recipe ollama-test-double "$made"
log "built $image"
