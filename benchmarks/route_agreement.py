"""How well a routed model's two routes agree, and what cross-route retrieval reads from it.

    .venv/bin/python benchmarks/route_agreement.py MODEL_DIR [MODEL_DIR ...] [--queries 150]

For each routed LUSIFER folder: the mean cosine between each English training text's
native-route and connector-route embedding (2,000 texts of the bundled English data), and
nDCG@10 on the bundled XlingRetrieval tasks with the English queries on the native route
(the existing-index case) and on the connector route, beside all-MiniLM-L6-v2 and
multilingual-e5-small alone; also with the connector route's vectors mapped by closed-form
maps fitted on the same English texts (a mean shift; orthogonal Procrustes; a
ridge-regressed linear map), to tell a disagreement a rigid or linear map removes from one
it does not. Per language: the first ``--queries`` queries, their relevant documents and as
many other documents.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

import lusifer
from lusifer import LusiferModel
from lusifer.data.english import load_bundled_english
from lusifer.evaluation.local_data import load_task_data
from lusifer.evaluation.local_tasks import read_task_spec

SUITE = Path(lusifer.__file__).parent / "resources" / "offline_suite"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ndcg_at_10(queries: np.ndarray, docs: np.ndarray) -> float:
    """Query i's one relevant document is docs[i]."""
    scores = queries @ docs.T
    own = scores[np.arange(len(queries)), np.arange(len(queries))]
    ranks = (scores > own[:, None]).sum(1)
    return float(np.mean(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0.0)))


def _tasks(n: int) -> list[tuple[str, list[str], list[str]]]:
    """(language, queries, documents: the relevant ones first, in query order), read by
    the evaluation's own strict task reader."""
    out = []
    for task in sorted(SUITE.glob("XlingRetrieval.en-*")):
        test = load_task_data(read_task_spec(task))["default"]["test"]
        queries = test["queries"][:n]
        corpus = dict(zip(test["corpus"]["id"], test["corpus"]["text"], strict=True))
        relevant = [
            max(test["relevant_docs"][q], key=test["relevant_docs"][q].get) for q in queries["id"]
        ]
        others = [d for d in corpus if d not in set(relevant)][:n]
        docs = [corpus[d] for d in relevant + others]
        out.append((task.name.split("-")[-1], queries["text"], docs))
    return out


def _fit_maps(model: LusiferModel, n_texts: int, ridge: float) -> tuple[float, dict]:
    rows = load_bundled_english(limit_per_dataset=n_texts, seed=123)
    random.Random(0).shuffle(rows)
    texts = list(dict.fromkeys(t for r in rows for t in (r.query, r.positive)))[:n_texts]
    native = model.encode(texts, route="native", batch_size=64)
    connector = model.encode(texts, route="connector", batch_size=64)
    mu_c, mu_n = connector.mean(0), native.mean(0)
    centred_c, centred_n = connector - mu_c, native - mu_n
    u, _, vt = np.linalg.svd(centred_c.T @ centred_n)
    rotation = u @ vt
    gram = centred_c.T @ centred_c  # ridge relative to its mean eigenvalue
    penalty = ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    linear = np.linalg.solve(gram + penalty, centred_c.T @ centred_n)
    maps = {
        "none": lambda x: x,
        "mean shift": lambda x: _unit(x - mu_c + mu_n),
        "Procrustes": lambda x: _unit((x - mu_c) @ rotation + mu_n),
        "linear": lambda x: _unit((x - mu_c) @ linear + mu_n),
    }
    return float(np.mean(np.sum(native * connector, 1))), maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="routed LUSIFER model folders")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--fit-texts", type=int, default=2000)
    parser.add_argument(
        "--ridge", type=float, default=0.1, help="the linear map's ridge, x the mean eigenvalue"
    )
    args = parser.parse_args()
    tasks = _tasks(args.queries)
    minilm, e5 = lusifer.load("all-MiniLM-L6-v2"), lusifer.load("multilingual-e5-small")
    base = {
        name: np.mean(
            [
                _ndcg_at_10(m.encode(q, batch_size=64), m.encode(d, kind="document", batch_size=64))
                for _, q, d in tasks
            ]
        )
        for name, m in (("MiniLM", minilm), ("e5", e5))
    }
    gap = lambda v: (v - base["MiniLM"]) / (base["e5"] - base["MiniLM"])  # noqa: E731
    print(f"MiniLM alone {100 * base['MiniLM']:.2f}, e5 alone {100 * base['e5']:.2f} nDCG@10")
    print(
        "| model | cos(native, connector) | English native: none / mean shift / Procrustes / linear "
        "| English on the connector route |"
    )
    print("|---|---|---|---|")
    for folder in args.models:
        model = LusiferModel.from_pretrained(folder).merge_and_unload()
        agreement, maps = _fit_maps(model, args.fit_texts, args.ridge)
        native = {k: [] for k in maps}
        connector = []
        for _, queries, docs in tasks:
            d = model.encode(docs, route="connector", kind="document", batch_size=64)
            qn = model.encode(queries, route="native", batch_size=64)
            for name, f in maps.items():
                native[name].append(_ndcg_at_10(qn, f(d)))
            qc = model.encode(queries, route="connector", batch_size=64)
            connector.append(_ndcg_at_10(qc, d))
        cells = " / ".join(
            f"{100 * np.mean(v):.2f} ({gap(np.mean(v)):.1%})" for v in native.values()
        )
        c = np.mean(connector)
        print(
            f"| {folder} | {agreement:.3f} | {cells} | {100 * c:.2f} ({gap(c):.1%}) |", flush=True
        )


if __name__ == "__main__":
    main()
