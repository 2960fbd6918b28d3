"""Run by test_corpus.py as a child process to be killed mid-run: encode a corpus into
shards with an encoder slowed down by DELAY seconds a call (so the kill lands while
shards are still being written).

    python tests/corpus_worker.py MODEL INPUT OUTDIR SHARD_SIZE DELAY
"""

from __future__ import annotations

import sys
import time

from lusifer import load_embedder
from lusifer.corpus import encode_corpus


class Slow:
    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay, self.name = inner, delay, inner.name

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def encode(self, texts, **kwargs):
        time.sleep(self.delay)
        return self.inner.encode(texts, **kwargs)


if __name__ == "__main__":
    model, src, outdir, shard_size, delay = sys.argv[1:6]
    encoder = Slow(load_embedder(model), float(delay))
    print("loaded", flush=True)
    encode_corpus(encoder, src, outdir, shard_size=int(shard_size), model_reference=model)
