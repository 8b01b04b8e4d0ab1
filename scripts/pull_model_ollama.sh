#!/usr/bin/env bash
# Pull a model into Ollama's store through the Ollama API, with progress.
#   scripts/pull_model_ollama.sh NAME
#   scripts/pull_model_ollama.sh qwen3:8b
# OLLAMA_URL (default http://127.0.0.1:8000, where llm-backend serves Ollama) is the Ollama
# to pull through. When Ollama is not the active backend, `ansible-playbook
# playbooks/models.yml -e llm_backend=ollama -e llm_ollama_model=NAME` pulls through a
# temporary Ollama instead, without touching the running backend.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 NAME   e.g. $0 qwen3:8b" >&2
  exit 2
fi
name=$1
url="${OLLAMA_URL:-http://127.0.0.1:8000}"
if ! curl -fsS --max-time 5 "$url/api/version" >/dev/null; then
  echo "error: no Ollama answers at $url: set OLLAMA_URL, or switch to it (-e llm_backend=ollama)" >&2
  exit 1
fi
echo "pulling $name through $url"
# One JSON object per line: {"status": ..., "completed": n, "total": n} or {"error": ...}.
progress=$(cat <<'PY'
import json, sys
last = ""
for line in sys.stdin:
    event = json.loads(line)
    if "error" in event:
        sys.exit("\nerror: " + event["error"])
    status, total = event.get("status", ""), event.get("total")
    if last and status != last:
        print()
    if total:
        done = event.get("completed", 0)
        print(f"\r{status[:40]:40} {done / 2**20:9.1f} / {total / 2**20:.1f} MiB {100 * done // total:3d}%",
              end="", flush=True)
    elif status != last:
        print(status, end="", flush=True)
    last = status
print()
PY
)
curl -fsS -N "$url/api/pull" -H 'Content-Type: application/json' -d "{\"model\": \"$name\"}" | python3 -c "$progress"
echo "done: set llm_ollama_model: $name"
