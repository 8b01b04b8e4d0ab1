"""Write a small cross-encoder for rerank tests: all-MiniLM-L6-v2's encoder with a score head,
fine-tuned here for a minute on made-up pairs to score a document by the words it shares
with the query. No cross-encoder ships on the registries these machines reach; this one
ranks "a kitten sleeps beside the cats" first for "cats and kittens" (the tests' ranking
check), and knows nothing else.

    python make_tiny_reranker.py MINILM_DIR OUT_DIR
"""

import random
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

STEPS, BATCH, LEARNING_RATE = 160, 32, 5e-5
FILLERS = ["the", "a", "of", "and", "is", "on", "in", "to", "with", "for"]


def with_fillers(words: list[str], rng: random.Random) -> str:
    """The words with a filler ("the", "of", ...) before each one half of the time."""
    out = []
    for word in words:
        if rng.random() < 0.5:
            out.append(rng.choice(FILLERS))
        out.append(word)
    return " ".join(out)


def pair(vocabulary: list[str], rng: random.Random) -> tuple[str, str, float]:
    """A query of 1-3 words and a document of 3-7 others, which shares some of the query's
    words half of the time (label 1)."""
    query = rng.sample(vocabulary, rng.randint(1, 3))
    document = rng.sample(vocabulary, rng.randint(3, 7))
    relevant = rng.random() < 0.5
    if relevant:
        document += rng.sample(query, rng.randint(1, len(query)))
    rng.shuffle(document)
    return with_fillers(query, rng), with_fillers(document, rng), float(relevant)


def main() -> None:
    source, out = sys.argv[1], sys.argv[2]
    rng = random.Random(0)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(source)
    # Whole words only, past the rarest ids: common English words.
    vocabulary = [word for word, index in tokenizer.vocab.items() if word.isalpha() and len(word) >= 3 and index > 2000]
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for _ in range(STEPS):
        batch = [pair(vocabulary, rng) for _ in range(BATCH)]
        inputs = tokenizer(
            [query for query, _, _ in batch],
            [document for _, document, _ in batch],
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )
        labels = torch.tensor([label for _, _, label in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**inputs).logits.squeeze(-1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"final loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
