"""Write a tiny llama-architecture GGUF model with random weights.

The sandbox host and the tests have no route to a model hub, so they serve this model:
2 layers, 64 wide, the tokenizer of llama.cpp's own vocabulary test file, and a ChatML
chat template with Qwen3-style thinking. Its text is gibberish; the protocol is real.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
LAYERS = 2
WIDTH = 64
HEADS = 4
FEED_FORWARD = 128
CONTEXT = 2048

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def copy_tokenizer(writer: gguf.GGUFWriter, vocab_file: Path) -> int:
    """Copy the tokenizer fields of a llama.cpp vocabulary file; return the vocabulary size."""
    reader = gguf.GGUFReader(vocab_file)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = [bytes(tokens.parts[i]) for i in tokens.data]
    scores = reader.fields["tokenizer.ggml.scores"]
    types = reader.fields["tokenizer.ggml.token_type"]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_scores([float(scores.parts[i][0]) for i in scores.data])
    writer.add_token_types([int(types.parts[i][0]) for i in types.data])
    for key, add in (
        ("tokenizer.ggml.bos_token_id", writer.add_bos_token_id),
        ("tokenizer.ggml.eos_token_id", writer.add_eos_token_id),
        ("tokenizer.ggml.unknown_token_id", writer.add_unk_token_id),
    ):
        field = reader.fields[key]
        add(int(field.parts[field.data[0]][0]))
    return len(vocab)


def write_model(vocab_file: Path, out: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out, ARCH)
    writer.add_name("tiny-llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(WIDTH)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_chat_template(CHAT_TEMPLATE)
    vocab_size = copy_tokenizer(writer, vocab_file)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab_size, WIDTH))
    writer.add_tensor("output_norm.weight", np.ones(WIDTH, dtype=np.float32))
    writer.add_tensor("output.weight", weight(vocab_size, WIDTH))
    for layer in range(LAYERS):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(WIDTH, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weight(WIDTH, WIDTH))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(WIDTH, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(FEED_FORWARD, WIDTH))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(FEED_FORWARD, WIDTH))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(WIDTH, FEED_FORWARD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vocab", type=Path, help="llama.cpp models/ggml-vocab-llama-spm.gguf")
    parser.add_argument("out", type=Path, help="GGUF file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_model(args.vocab, args.out, args.seed)


if __name__ == "__main__":
    main()
