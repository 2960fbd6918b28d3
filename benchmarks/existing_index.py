"""The existing-index case: an English index built by stock sentence-transformers
all-MiniLM-L6-v2 stays as it is, and queries in 13 other languages search it through a
routed LUSIFER model.

For each language of the bundled suite's Bitext sets (human translations of English
software strings, disjoint from the training data), the English sentences are the
corpus, embedded once by ``SentenceTransformer(all-MiniLM-L6-v2)``; the translations
are the queries, each with one relevant document (its English original). Printed per
language, nDCG@10 x100 of:

- ``minilm``: queries by MiniLM alone (what the index answers today);
- ``routed``: queries by the routed model, route auto (the router's choice per text);
- ``routed, connector``: the same queries all forced onto the connector route (the
  difference to ``routed`` is what the router's misroutes cost);
- ``e5 (re-embedded)``: multilingual-e5-small on both sides, the corpus re-embedded
  (the upper reference a user would pay a re-index for);
- ``native share``: the share of queries the router sent to the native route (each is
  a misroute: no query here is English).

    .venv/bin/python benchmarks/existing_index.py lusifer-demo/model --output lusifer-existing-index
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

LANGUAGES = ("es", "ru", "fr", "vi", "fa", "id", "ar", "fi", "ko", "hi", "bn", "te", "sw")


def ndcg_at_10(queries: np.ndarray, corpus: np.ndarray) -> float:
    """Mean nDCG@10 x100 where query i's one relevant document is corpus row i."""
    scores = queries @ corpus.T
    wanted = scores[np.arange(len(queries)), np.arange(len(queries))]
    rank = (scores > wanted[:, None]).sum(1)  # 0 = first
    gains = np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)
    return float(100 * gains.mean())


def bitext_pairs(language: str, limit: int) -> tuple[list[str], list[str]]:
    """(English sentences, their translations) of the bundled Bitext.en-<language> set,
    the first ``limit`` rows with distinct English sides."""
    from lusifer.evaluation.local_tasks import offline_suite_dirs

    folder = next(d for d in offline_suite_dirs() if d.name == f"Bitext.en-{language}")
    english, other, seen = [], [], set()
    for line in (folder / "test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["sentence1"] in seen:
            continue
        seen.add(row["sentence1"])
        english.append(row["sentence1"])
        other.append(row["sentence2"])
        if len(english) == limit:
            break
    return english, other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a routed LUSIFER model folder (e.g. lusifer-demo/model)")
    parser.add_argument("--limit", type=int, default=500, help="pairs per language")
    parser.add_argument("--output", type=Path, default=Path("lusifer-existing-index"))
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from lusifer import LusiferModel, PlainEmbedder
    from lusifer.backbones.offline import ensure_offline_backbone

    model = LusiferModel.from_pretrained(args.model).merge_and_unload()
    if not model.routed:
        raise SystemExit(f"{args.model} is not a routed model (its config has no routes)")
    stock = SentenceTransformer(str(ensure_offline_backbone("all-MiniLM-L6-v2")), device="cpu")
    e5 = PlainEmbedder.load("multilingual-e5-small")
    rows, tic = [], time.perf_counter()
    for lang in LANGUAGES:
        english, other = bitext_pairs(lang, args.limit)
        index = stock.encode(english, normalize_embeddings=True, batch_size=64)
        routes = model.router.routes(other)
        row = {
            "language": lang,
            "pairs": len(english),
            "minilm": ndcg_at_10(stock.encode(other, normalize_embeddings=True), index),
            "routed": ndcg_at_10(model.encode(other, batch_size=64), index),
            "routed, connector": ndcg_at_10(
                model.encode(other, batch_size=64, route="connector"), index
            ),
            "e5 (re-embedded)": ndcg_at_10(
                e5.encode(other, kind="query", batch_size=64),
                e5.encode(english, kind="document", batch_size=64),
            ),
            "native share": 100 * routes.count("native") / len(routes),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    columns = ["minilm", "routed", "routed, connector", "e5 (re-embedded)", "native share"]
    mean = {c: sum(r[c] for r in rows) / len(rows) for c in columns}
    gap = mean["e5 (re-embedded)"] - mean["minilm"]
    closed = (mean["routed"] - mean["minilm"]) / gap if gap else math.nan
    lines = [
        "| language | pairs | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
        *(
            f"| {r['language']} | {r['pairs']} | "
            + " | ".join(f"{r[c]:.2f}" for c in columns)
            + " |"
            for r in rows
        ),
        "| **mean** | | " + " | ".join(f"**{mean[c]:.2f}**" for c in columns) + " |",
    ]
    table = "\n".join(lines)
    print(table)
    print(
        f"\nThe MiniLM index answers queries in 13 languages: routed {mean['routed']:.2f} against "
        f"MiniLM alone {mean['minilm']:.2f}; {100 * closed:.1f}% of the gap to e5 re-embedding "
        f"both sides ({mean['e5 (re-embedded)']:.2f}) closed without re-embedding an English row "
        f"({time.perf_counter() - tic:.0f} s)."
    )
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "existing_index.json").write_text(
        json.dumps(
            {"model": str(args.model), "rows": rows, "mean": mean, "gap_closed": closed}, indent=2
        )
    )
    (args.output / "existing_index.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
