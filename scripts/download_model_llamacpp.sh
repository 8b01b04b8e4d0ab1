#!/usr/bin/env bash
# Download one GGUF file from a Hugging Face repo into llama.cpp's model directory.
#   scripts/download_model_llamacpp.sh REPO FILE
#   scripts/download_model_llamacpp.sh Qwen/Qwen3-8B-GGUF qwen3-8b-q4_k_m.gguf
# LLAMACPP_MODELS_DIR (default /var/lib/switchyard/llamacpp, llm_llamacpp_models_dir) is
# where it lands; an interrupted download resumes; a file already there is not fetched again.
set -euo pipefail
. "$(dirname "$0")/hf_cli.sh"

if [ $# -ne 2 ]; then
  echo "usage: $0 REPO FILE   e.g. $0 Qwen/Qwen3-8B-GGUF qwen3-8b-q4_k_m.gguf" >&2
  exit 2
fi
repo=$1 file=$2
models_dir="${LLAMACPP_MODELS_DIR:-/var/lib/switchyard/llamacpp}"
hf=$(find_hf)
mkdir -p "$models_dir"
echo "downloading $file from $repo into $models_dir"
"$hf" download "$repo" "$file" --local-dir "$models_dir"
echo "done: set llm_llamacpp_model_file: $file"
