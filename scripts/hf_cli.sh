# Sourced by the download scripts: finds the Hugging Face CLI (`hf`, from huggingface-hub).
# roles/models installs it in /opt/switchyard/models/venv; anywhere else, `pip install
# huggingface-hub` provides it. HF_TOKEN, if set, is used for gated or private repos and is
# never printed.
find_hf() {
  for candidate in "${SWITCHYARD_HF_CLI:-}" "$(command -v hf || true)" /opt/switchyard/models/venv/bin/hf; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return
    fi
  done
  echo "error: the Hugging Face CLI (hf) is not installed: run 'pip install huggingface-hub'," \
    "or playbooks/models.yml once on this host" >&2
  exit 1
}
