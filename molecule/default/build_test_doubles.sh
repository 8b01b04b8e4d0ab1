#!/usr/bin/env bash
# Build the Ollama test double (no Ollama binary is available here) into an image archive,
# with a model manifest for it to list, next to the sandbox artifacts in .cache/sandbox/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache/sandbox"
image=localhost/switchyard/ollama-test-double:latest
archive="$cache/ollama-test-double.tar"
manifest="$cache/models/ollama/models/manifests/registry.ollama.ai/library/tiny/latest"

mkdir -p "$(dirname "$manifest")"
printf '{"schemaVersion": 2, "layers": []}\n' >"$manifest"

if [ -f "$archive" ] && [ "$archive" -nt "$root/molecule/default/files/ollama_test_double.py" ]; then
  exit 0
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
install -m 0755 "$root/molecule/default/files/ollama_test_double.py" "$context/ollama"
cat >"$context/Containerfile" <<'CONTAINERFILE'
FROM localhost/switchyard/sandbox-host:bookworm
COPY ollama /bin/ollama
ENTRYPOINT ["/bin/ollama"]
CMD ["serve"]
CONTAINERFILE
podman build --runtime runc --quiet --tag "$image" "$context" >/dev/null
podman save --quiet --format docker-archive -o "$archive.partial" "$image"
mv "$archive.partial" "$archive"
echo "==> built $image"
