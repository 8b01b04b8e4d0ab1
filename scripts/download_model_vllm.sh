#!/usr/bin/env bash
# Download a Hugging Face model for vLLM into the cache the vLLM containers mount.
#   scripts/download_model_vllm.sh REPO [REVISION]
#   scripts/download_model_vllm.sh Qwen/Qwen3-8B-AWQ
# HF_HOME (default /var/lib/switchyard/huggingface, llm_vllm_hf_cache_dir) is where it lands;
# an interrupted download resumes; a model already there is not fetched again.
set -euo pipefail
. "$(dirname "$0")/hf_cli.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 REPO [REVISION]   e.g. $0 Qwen/Qwen3-8B-AWQ" >&2
  exit 2
fi
repo=$1 revision=${2:-main}
export HF_HOME="${HF_HOME:-/var/lib/switchyard/huggingface}"
hf=$(find_hf)
echo "downloading $repo@$revision into $HF_HOME/hub"
"$hf" download "$repo" --revision "$revision"
echo "done: set llm_vllm_model: $repo"
