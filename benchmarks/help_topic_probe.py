"""Where a trained LUSIFER model loses English, probed on the LibreOffice help topics.

Not a test: prints one table. For each model, HelpTopicClassification (en, fr) with all
training paragraphs, the whole test set and a logistic regression, next to nDCG@10 on the
bundled cross-lingual retrieval tasks (English queries) and English Debian retrieval.
Rows: the target alone, the encoder alone, the trained model, the "perfect token map"
(the untrained target reading its own input embeddings of the same characters, placed at
the encoder's token positions: what a flawless connector would feed it on English), and
the trained model with a lexical mix at inference (``--mix``): each soft token moved a
fraction of the way toward the target's own embedding of its characters, only where the
target's vocabulary holds the whole word.

    .venv/bin/python benchmarks/help_topic_probe.py --model lusifer-demo/model
    .venv/bin/python benchmarks/help_topic_probe.py --model DIR --mix 0.25 0.5 --output probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lusifer import LusiferModel  # noqa: E402
from lusifer.evaluation.local_data import load_task_data  # noqa: E402
from lusifer.evaluation.local_tasks import offline_suite_dirs, read_task_spec  # noqa: E402
from lusifer.model import PlainEmbedder  # noqa: E402
from lusifer.model.pooling import pool  # noqa: E402
from lusifer.training.losses import real_offsets, token_alignment  # noqa: E402

Embed = Callable[[list[str]], np.ndarray]
MAX_LENGTH = 128


def suite() -> dict[str, Path]:
    return {d.name: d for d in offline_suite_dirs()}


def task_data(task: Path):
    return load_task_data(read_task_spec(task))


def classification(task: Path, embed: Embed) -> float:
    from sklearn.linear_model import LogisticRegression

    data = task_data(task)
    train, test = data["train"], data["test"]
    clf = LogisticRegression(max_iter=1000).fit(embed(train["text"]), train["label"])
    return 100 * clf.score(embed(test["text"]), test["label"])


def retrieval(task: Path, embed: Embed, n_queries: int, n_other: int) -> float:
    """nDCG@10 of ``n_queries`` queries over their relevant documents plus ``n_other``."""
    data = task_data(task)["default"]["test"]
    relevant = {
        qid: {did for did, score in docs.items() if score > 0}
        for qid, docs in data["relevant_docs"].items()
    }
    queries = [q for q in data["queries"].select(range(n_queries)) if relevant.get(q["id"])]
    wanted = set().union(*(relevant[q["id"]] for q in queries))
    corpus = list(data["corpus"])
    docs = [d for d in corpus if d["id"] in wanted]
    docs += [d for d in corpus if d["id"] not in wanted][:n_other]
    scores = embed([q["text"] for q in queries]) @ embed([d["text"] for d in docs]).T
    ids = np.array([d["id"] for d in docs])
    discounts = 1 / np.log2(np.arange(2, 12))
    total = 0.0
    for row, q in zip(scores, queries, strict=True):
        gains = np.isin(ids[np.argsort(-row)[:10]], list(relevant[q["id"]])).astype(float)
        ideal = discounts[: min(10, len(relevant[q["id"]]))].sum()
        total += float(gains @ discounts[: len(gains)]) / ideal
    return 100 * total / len(queries)


def continuation_pieces(model: LusiferModel) -> torch.Tensor:
    """[V] bool: which of the target's vocabulary entries continue a word (``##...``)."""
    size = model.target.input_embeddings().weight.shape[0]
    pieces = model.target.tokenizer.convert_ids_to_tokens(list(range(size)))
    return torch.tensor([p.startswith("##") for p in pieces])


def lexical_embeddings(
    model: LusiferModel, texts: list[str], enc: dict, continues: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's own input embeddings of each encoder token's characters [B, L, d] and
    whether the target's vocabulary holds that token's whole word [B, L] (``continues``:
    :func:`continuation_pieces`)."""
    tokenizer = model.target.tokenizer
    table = model.target.input_embeddings().weight
    tgt = tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=4 * MAX_LENGTH,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    links = token_alignment(
        real_offsets(enc), real_offsets(tgt), enc["input_ids"].shape[1], tgt["input_ids"].shape[1]
    )
    continued = continues[tgt["input_ids"]]
    next_continues = torch.cat([continued[:, 1:], torch.zeros_like(continued[:, :1])], 1)
    whole = ~continued & ~next_continues & (tgt["input_ids"] != tokenizer.unk_token_id)
    linked = links > 0
    keep = linked.any(-1) & ~(linked & ~whole.unsqueeze(1)).any(-1)
    return links @ table[tgt["input_ids"]].float(), keep


def lusifer_embed(model: LusiferModel, *, mix: float = 0.0, oracle: bool = False) -> Embed:
    """Embeddings with the connector's soft tokens, the lexical ones (``oracle``), or a mix."""
    continues = continuation_pieces(model) if oracle or mix else None

    @torch.inference_mode()
    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 64):
            batch = texts[start : start + 64]
            enc = model.tokenize(batch, max_length=MAX_LENGTH, return_offsets=True)
            soft, mask = model.soft_tokens(enc["input_ids"], enc["attention_mask"])
            if oracle or mix:
                lex, whole = lexical_embeddings(model, batch, enc, continues)
                length = enc["input_ids"].shape[1]
                lex = lex.to(soft.dtype)
                if oracle:
                    soft[:, :length] = lex
                else:
                    gate = mix * whole.unsqueeze(-1).to(soft.dtype)
                    soft[:, :length] += gate * (lex - soft[:, :length])
            hidden = model.target.hidden_states(soft, mask, causal=False)
            out.append(F.normalize(pool(hidden, mask, model.config.pooling).float(), dim=-1))
        return torch.cat(out).numpy()

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained LUSIFER folder.")
    parser.add_argument("--mix", type=float, nargs="*", default=[0.25, 0.5])
    parser.add_argument("--queries", type=int, default=100, help="Queries per retrieval task.")
    parser.add_argument("--other-docs", type=int, default=200, help="Non-relevant documents.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", help="Also write the table as JSON here.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = LusiferModel.from_pretrained(args.model).eval()
    untrained = LusiferModel.build(encoder=model.config.encoder, target=model.config.target)
    rows: dict[str, Embed] = {
        f"{model.config.target} (target alone)": PlainEmbedder.load(
            model.config.target, max_length=MAX_LENGTH
        ).encode,
        f"{model.config.encoder} (encoder alone)": PlainEmbedder.load(
            model.config.encoder, max_length=MAX_LENGTH
        ).encode,
        "perfect token map (untrained target, own embeddings)": lusifer_embed(
            untrained.eval(), oracle=True
        ),
        "trained LUSIFER": lusifer_embed(model),
        **{f"trained LUSIFER, lexical mix {m:g}": lusifer_embed(model, mix=m) for m in args.mix},
    }
    tasks = suite()
    xling = sorted(name for name in tasks if name.startswith("XlingRetrieval."))
    columns = ["help en", "help fr", "xling nDCG@10", "Debian en nDCG@10"]
    table: dict[str, dict[str, float]] = {}
    for name, embed in rows.items():
        start = time.perf_counter()
        scores = {
            "help en": classification(tasks["HelpTopicClassification.en"], embed),
            "help fr": classification(tasks["HelpTopicClassification.fr"], embed),
            "xling nDCG@10": float(
                np.mean([retrieval(tasks[t], embed, args.queries, args.other_docs) for t in xling])
            ),
            "Debian en nDCG@10": retrieval(
                tasks["DebianDescriptionRetrieval.en"], embed, args.queries, args.other_docs
            ),
        }
        table[name] = scores
        print(
            f"{name}: " + ", ".join(f"{c} {scores[c]:.1f}" for c in columns),
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    print(f"\n| model | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for name, scores in table.items():
        print(f"| {name} | " + " | ".join(f"{scores[c]:.1f}" for c in columns) + " |")
    if args.output:
        Path(args.output).write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
