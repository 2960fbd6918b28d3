"""Batches sorted by token count against batches sorted by characters, in one run.

``Embedder.encode`` sorts texts longest first so that a batch pads little. Characters are a
poor measure of length across scripts: for an English WordPiece vocabulary a Hindi or
Korean sentence is several times as many tokens per character as a French one, so a
character-sorted batch of mixed languages pads short-in-tokens texts to long ones. This
script encodes the same mixed-language texts of the bundled suite both ways (the same
model, batch size and token limit) and prints seconds, padded tokens (what the model
computes on) and their ratios.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/length_sort.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import machine_line, mixed_texts  # noqa: E402


def run(model, texts: list[str], lengths: list[int] | None, batch_size: int) -> tuple:
    """Seconds and padded tokens of one length-ordered encode."""
    from lusifer.encoding import embed_in_length_order

    padded = []

    def embed_batch(batch: list[str]):
        enc = model.processor(batch, kind="query")
        padded.append(enc["input_ids"].numel())
        return model.embed_tokens(enc)

    start = time.perf_counter()
    embed_in_length_order(texts, embed_batch, batch_size=batch_size, lengths=lengths)
    return time.perf_counter() - start, sum(padded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--n", type=int, default=3000, help="Texts from the bundled suite.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import lusifer
    from lusifer.encoding import token_lengths

    print(machine_line(), flush=True)
    model = lusifer.load(args.model, threads=args.threads)
    texts = mixed_texts(args.n)
    tokens = token_lengths(model.processor.tokenizer, texts, model.max_length)
    run(model, texts[: 2 * args.batch_size], None, args.batch_size)  # warm-up
    by_chars = run(model, texts, None, args.batch_size)
    by_tokens = run(model, texts, tokens, args.batch_size)
    print(
        f"\n{args.model}, {args.n} mixed-language texts of the bundled suite, batch size "
        f"{args.batch_size}, {model.max_length} tokens at most, {sum(tokens):,} real tokens\n"
    )
    print("| batches sorted by | seconds | padded tokens |\n|---|---:|---:|")
    print(f"| characters (before) | {by_chars[0]:.1f} | {by_chars[1]:,} |")
    print(f"| tokens (encode today) | {by_tokens[0]:.1f} | {by_tokens[1]:,} |")
    print(
        f"\nspeed tokens / characters: {by_chars[0] / by_tokens[0]:.2f}x; padded tokens "
        f"characters / tokens: {by_chars[1] / by_tokens[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
