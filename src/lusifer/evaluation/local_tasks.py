"""Local-data tasks: a directory with ``task.json`` and data files, run offline through mteb.

Layout (``type`` in task.json):

- retrieval: BEIR files ``corpus.jsonl`` (``_id``, ``text``, optional ``title``),
  ``queries.jsonl`` (``_id``, ``text``), ``qrels/test.tsv`` (header, ``query-id corpus-id score``)
- reranking: ``test.jsonl`` rows ``{"query", "positive": [...], "negative": [...]}``
- sts: ``test.jsonl`` rows ``{"sentence1", "sentence2", "score"}``
- classification: ``train.jsonl`` and ``test.jsonl`` rows ``{"text", "label"}``
- clustering: ``test.jsonl`` rows ``{"text", "label"}``
- bitext: ``test.jsonl`` rows ``{"sentence1", "sentence2"}``

Each becomes a subclass of the matching mteb abstract task whose ``load_data`` reads the
files. The subclasses also keep the per-example results of the last evaluation (per-query
scores, predictions, ...) in ``per_example`` for the bootstrap statistics.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from .entry import TYPE_TO_MTEB_TYPE, TaskEntry
from .instructions import DEFAULT_INSTRUCTIONS
from .languages import aggregation_languages, get_language

TASK_TYPES: tuple[str, ...] = (
    "retrieval",
    "reranking",
    "sts",
    "classification",
    "clustering",
    "bitext",
)

#: Default main score per type: mteb's own choice for that task family.
DEFAULT_MAIN_SCORE: dict[str, str] = {
    "retrieval": "ndcg_at_10",
    "reranking": "map_at_1000",
    "sts": "cosine_spearman",
    "classification": "accuracy",
    "clustering": "v_measure",
    "bitext": "f1",
}
#: Main scores the bootstrap statistics know how to recompute per example.
SUPPORTED_MAIN_SCORES: dict[str, tuple[str, ...]] = {
    "retrieval": ("ndcg_at_10", "ndcg_at_1", "ndcg_at_5", "ndcg_at_20", "ndcg_at_100", "map_at_10", "map_at_100", "map_at_1000", "recall_at_10", "recall_at_100"),
    "reranking": ("map_at_1000", "map_at_10", "ndcg_at_10"),
    "sts": ("cosine_spearman", "cosine_pearson"),
    "classification": ("accuracy", "f1"),
    "clustering": ("v_measure",),
    "bitext": ("f1", "accuracy"),
}  # fmt: skip

_DATA_FILES: dict[str, tuple[str, ...]] = {
    "retrieval": ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"),
    "reranking": ("test.jsonl",),
    "sts": ("test.jsonl",),
    "classification": ("train.jsonl", "test.jsonl"),
    "clustering": ("test.jsonl",),
    "bitext": ("test.jsonl",),
}


class TaskDirError(ValueError):
    """A malformed local task directory; the message names the file, line and field."""


@dataclass(frozen=True)
class LocalTaskSpec:
    """The parsed ``task.json`` of a local task directory."""

    path: Path
    name: str
    type: str
    languages: tuple[str, ...]
    instruction: str
    main_score: str
    description: str = ""
    source: str | None = None
    license: str | None = None
    # what the texts are about, e.g. "english-out-of-domain" (reports group tasks by it)
    domain: str | None = None

    @property
    def crosslingual(self) -> bool:
        return len(set(self.languages)) > 1

    def fingerprint(self) -> str:
        """Hash of task.json and the data files: a changed task is rerun."""
        digest = hashlib.sha1()
        for rel in ("task.json", *_DATA_FILES[self.type]):
            digest.update(rel.encode())
            digest.update((self.path / rel).read_bytes())
        return digest.hexdigest()[:16]


_TASK_KEYS = (
    "name",
    "type",
    "languages",
    "instruction",
    "main_score",
    "description",
    "source",
    "license",
    "domain",
)

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxdict = 6
_short.maxlevel = 3


def _show(value: Any) -> str:
    """``repr(value)``, cut short: a message never quotes a whole huge or deep value."""
    return _short.repr(value)


def _decode(path: Path, raw: bytes, first_line: int = 1) -> str:
    """``raw`` as UTF-8, or a :class:`TaskDirError` naming the line of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)
        raise _fail(
            path,
            f"invalid UTF-8 byte {raw[err.start : err.start + 1]!r}; expected UTF-8 encoded text",
            line=line,
        ) from None


def _parse_json(path: Path, text: str, line: int | None = None) -> Any:
    """``json.loads`` whose every refusal (bad syntax, nesting too deep, a number too long)
    is a :class:`TaskDirError` naming the file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = line if line is not None else err.lineno
        raise _fail(path, f"invalid JSON ({err.msg}, column {err.colno})", line=where) from None
    except RecursionError:
        raise _fail(path, "invalid JSON (nested too deeply)", line=line) from None
    except ValueError:  # an integer longer than Python reads (4300 digits)
        raise _fail(path, "invalid JSON (a number with too many digits)", line=line) from None


def _fail(
    path: Path, message: str, line: int | None = None, field_name: str | None = None
) -> TaskDirError:
    where = str(path) + (f", line {line}" if line is not None else "")
    what = f"field {_show(field_name)}: " if field_name else ""  # a huge key is cut short
    return TaskDirError(f"{where}: {what}{message}")


def read_task_spec(task_dir: str | Path) -> LocalTaskSpec:
    """Parse and check ``task_dir/task.json`` (not the data files: see :func:`load_task_data`)."""
    task_dir = Path(task_dir)
    path = task_dir / "task.json"
    if not task_dir.is_dir():
        raise TaskDirError(
            f"{task_dir}: not a directory (expected a task directory with task.json)"
        )
    if not path.is_file():
        raise _fail(path, "file not found; a task directory needs a task.json")
    raw = _parse_json(path, _decode(path, path.read_bytes()))
    if not isinstance(raw, dict):
        raise _fail(path, f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in _TASK_KEYS)
    if unknown:
        raise _fail(
            path,
            f"unknown key; valid keys: {', '.join(sorted(_TASK_KEYS))}",
            field_name=unknown[0],
        )

    def text_field(key: str, required: bool) -> str | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise _fail(path, "missing (required)", field_name=key)
            return None
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, f"expected a non-empty string, got {_show(value)}", field_name=key)
        _check_unicode(path, value, None, key)
        return value.strip()

    name = text_field("name", True)
    task_type = text_field("type", True)
    if task_type not in TASK_TYPES:
        raise _fail(
            path,
            f"unknown type {_show(task_type)}; expected one of {', '.join(TASK_TYPES)}",
            field_name="type",
        )
    languages = raw.get("languages")
    if (
        not isinstance(languages, list)
        or not languages
        or not all(isinstance(x, str) for x in languages)
    ):
        raise _fail(
            path,
            f'expected a non-empty list of language codes such as ["en"] or ["en", "fr"], got {_show(languages)}',
            field_name="languages",
        )
    for code in languages:
        try:
            get_language(code)
        except ValueError as err:
            raise _fail(path, str(err), field_name="languages") from None
    main_score = text_field("main_score", False) or DEFAULT_MAIN_SCORE[task_type]
    if main_score not in SUPPORTED_MAIN_SCORES[task_type]:
        raise _fail(
            path,
            f"{_show(main_score)} is not supported for {task_type}; use one of {', '.join(SUPPORTED_MAIN_SCORES[task_type])}",
            field_name="main_score",
        )
    return LocalTaskSpec(
        path=task_dir,
        name=name,
        type=task_type,
        languages=tuple(languages),
        instruction=text_field("instruction", False) or DEFAULT_INSTRUCTIONS[task_type],
        main_score=main_score,
        description=text_field("description", False) or f"Local {task_type} task {name}",
        source=text_field("source", False),
        license=text_field("license", False),
        domain=text_field("domain", False),
    )


# --------------------------------------------------------------------------- data files

_STR = "a non-empty string"
_NUM = "a number"
_STRLIST = "a list of strings"
_LABEL = "a string or integer label"


def _check_value(value: Any, kind: str) -> bool:
    if kind == _STR:
        return isinstance(value, str) and value.strip() != ""
    if kind == _NUM:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        try:
            return math.isfinite(float(value))
        except OverflowError:  # an integer beyond any float
            return False
    if kind == _STRLIST:
        return isinstance(value, list) and all(isinstance(x, str) and x.strip() for x in value)
    if kind == _LABEL:
        return (isinstance(value, str) and value != "") or (
            isinstance(value, int) and not isinstance(value, bool)
        )
    raise AssertionError(kind)


class JsonlRows(list):
    """The rows of a JSON-lines file (plain dicts, as written) plus ``lines``: each row's line number."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []


def read_jsonl(
    path: Path, schema: dict[str, str], optional: dict[str, str] | None = None
) -> JsonlRows:
    """Rows of a JSON-lines file, each checked against ``schema`` (field -> kind); extra fields are kept."""
    if not path.is_file():
        raise _fail(path, "file not found")
    rows = JsonlRows()
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            row = _parse_json(path, _decode(path, raw, lineno), lineno)
            if not isinstance(row, dict):
                raise _fail(path, f"expected a JSON object, got {type(row).__name__}", line=lineno)
            for key, kind in schema.items():
                if key not in row:
                    raise _fail(path, "missing (required)", line=lineno, field_name=key)
                if not _check_value(row[key], kind):
                    raise _fail(
                        path, f"expected {kind}, got {_show(row[key])}", line=lineno, field_name=key
                    )
            for key, kind in (optional or {}).items():
                if row.get(key) is not None and not isinstance(row[key], str):
                    raise _fail(
                        path, f"expected {kind}, got {_show(row[key])}", line=lineno, field_name=key
                    )
            for key in (*schema, *(optional or {})):
                values = row.get(key)
                for value in values if isinstance(values, list) else [values]:
                    if isinstance(value, str):
                        _check_unicode(path, value, lineno, key)
            rows.append(row)
            rows.lines.append(lineno)
    if not rows:
        raise _fail(path, "no rows; the file is empty")
    return rows


def _check_unicode(path: Path, value: str, line: int | None, key: str) -> None:
    """Refuse a lone surrogate (a ``\\ud800`` escape without its pair): no tokenizer or
    Arrow table takes one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _fail(
            path,
            f"lone surrogate {value[err.start]!r} at character {err.start} (a broken \\u "
            "escape); expected valid Unicode text",
            line=line,
            field_name=key,
        ) from None


def _read_qrels(path: Path, query_ids: set[str], corpus_ids: set[str]) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise _fail(path, "file not found")
    reader = csv.reader(io.StringIO(_decode(path, path.read_bytes()), newline=""), delimiter="\t")
    try:
        qrels = _qrels_rows(path, reader, query_ids, corpus_ids)
    except csv.Error as err:  # e.g. a quoted field running past csv's size limit
        raise _fail(path, f"unreadable TSV ({err})", line=reader.line_num) from None
    if not any(v > 0 for rels in qrels.values() for v in rels.values()):
        raise _fail(path, "no relevant (score > 0) pairs")
    return qrels


def _qrels_rows(
    path: Path, reader: Any, query_ids: set[str], corpus_ids: set[str]
) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
        raise _fail(
            path,
            f"expected the header 'query-id<TAB>corpus-id<TAB>score', got {_show(header)}",
            line=1,
        )
    for lineno, cells in enumerate(reader, start=2):
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) < 3:
            raise _fail(path, f"expected 3 tab-separated columns, got {len(cells)}", line=lineno)
        qid, did, score = (c.strip() for c in cells[:3])
        if qid not in query_ids:
            raise _fail(
                path,
                f"unknown query id {_show(qid)} (not in queries.jsonl)",
                line=lineno,
                field_name="query-id",
            )
        if did not in corpus_ids:
            raise _fail(
                path,
                f"unknown corpus id {_show(did)} (not in corpus.jsonl)",
                line=lineno,
                field_name="corpus-id",
            )
        try:
            value = int(float(score))
        except (ValueError, OverflowError):  # not a number, nan, inf
            raise _fail(
                path,
                f"expected an integer relevance, got {_show(score)}",
                line=lineno,
                field_name="score",
            ) from None
        qrels.setdefault(qid, {})[did] = value
    return qrels


def _unique_ids(path: Path, rows: JsonlRows) -> None:
    seen: set[str] = set()
    for row, line in zip(rows, rows.lines, strict=True):
        if row["_id"] in seen:
            raise _fail(path, f"duplicate id {_show(row['_id'])}", line=line, field_name="_id")
        seen.add(row["_id"])


def _label_ids(path: Path, *splits: list[dict[str, Any]]) -> tuple[list[list[int]], list[str]]:
    """Labels as integer ids (sorted by their string form) so every mteb metric accepts them."""
    names = sorted({str(row["label"]) for rows in splits for row in rows})
    index = {name: i for i, name in enumerate(names)}
    if len(names) < 2:
        raise _fail(path, f"needs at least 2 distinct labels, found {names}", field_name="label")
    return [[index[str(row["label"])] for row in rows] for rows in splits], names


def load_task_data(spec: LocalTaskSpec) -> dict[str, Any]:
    """Read and check the data files of ``spec``; returns the mteb dataset structure."""
    from datasets import Dataset, DatasetDict

    d = spec.path
    if spec.type == "retrieval":
        corpus = read_jsonl(d / "corpus.jsonl", {"_id": _STR, "text": _STR}, {"title": _STR})
        queries = read_jsonl(d / "queries.jsonl", {"_id": _STR, "text": _STR})
        _unique_ids(d / "corpus.jsonl", corpus)
        _unique_ids(d / "queries.jsonl", queries)
        qrels = _read_qrels(
            d / "qrels" / "test.tsv", {q["_id"] for q in queries}, {c["_id"] for c in corpus}
        )
        return {
            "default": {
                "test": {
                    "corpus": Dataset.from_dict(
                        {
                            "id": [c["_id"] for c in corpus],
                            "text": [c["text"] for c in corpus],
                            "title": [c.get("title") or "" for c in corpus],
                        }
                    ),
                    "queries": Dataset.from_dict(
                        {"id": [q["_id"] for q in queries], "text": [q["text"] for q in queries]}
                    ),
                    "relevant_docs": qrels,
                    "top_ranked": None,
                }
            }
        }
    if spec.type == "reranking":
        path = d / "test.jsonl"
        rows = read_jsonl(path, {"query": _STR, "positive": _STRLIST, "negative": _STRLIST})
        ids, texts, queries, qrels, top = [], [], [], {}, {}
        for i, row in enumerate(rows):
            if not row["positive"]:
                raise _fail(
                    path, "needs at least one positive", line=rows.lines[i], field_name="positive"
                )
            if not row["negative"]:
                raise _fail(
                    path, "needs at least one negative", line=rows.lines[i], field_name="negative"
                )
            qid = f"q{i}"
            queries.append((qid, row["query"]))
            docs = [(f"{qid}-p{j}", t, 1) for j, t in enumerate(row["positive"])]
            docs += [(f"{qid}-n{j}", t, 0) for j, t in enumerate(row["negative"])]
            for did, text, _rel in docs:
                ids.append(did)
                texts.append(text)
            qrels[qid] = {did: rel for did, _, rel in docs}
            top[qid] = [did for did, _, _ in docs]
        return {
            "default": {
                "test": {
                    "corpus": Dataset.from_dict(
                        {"id": ids, "text": texts, "title": [""] * len(ids)}
                    ),
                    "queries": Dataset.from_dict(
                        {"id": [q for q, _ in queries], "text": [t for _, t in queries]}
                    ),
                    "relevant_docs": qrels,
                    "top_ranked": top,
                }
            }
        }
    if spec.type == "sts":
        rows = read_jsonl(d / "test.jsonl", {"sentence1": _STR, "sentence2": _STR, "score": _NUM})
        if len({row["score"] for row in rows}) < 2:
            raise _fail(
                d / "test.jsonl",
                "all scores are equal; a correlation needs varied scores",
                field_name="score",
            )
        return DatasetDict(
            test=Dataset.from_dict(
                {
                    "sentence1": [r["sentence1"] for r in rows],
                    "sentence2": [r["sentence2"] for r in rows],
                    "score": [float(r["score"]) for r in rows],
                }
            )
        )
    if spec.type == "classification":
        train = read_jsonl(d / "train.jsonl", {"text": _STR, "label": _LABEL})
        test = read_jsonl(d / "test.jsonl", {"text": _STR, "label": _LABEL})
        (train_ids, test_ids), _ = _label_ids(d / "train.jsonl", train, test)
        return DatasetDict(
            train=Dataset.from_dict({"text": [r["text"] for r in train], "label": train_ids}),
            test=Dataset.from_dict({"text": [r["text"] for r in test], "label": test_ids}),
        )
    if spec.type == "clustering":
        rows = read_jsonl(d / "test.jsonl", {"text": _STR, "label": _LABEL})
        (ids,), _ = _label_ids(d / "test.jsonl", rows)
        return DatasetDict(
            test=Dataset.from_dict({"sentences": [r["text"] for r in rows], "labels": ids})
        )
    if spec.type == "bitext":
        rows = read_jsonl(d / "test.jsonl", {"sentence1": _STR, "sentence2": _STR})
        return DatasetDict(
            test=Dataset.from_dict(
                {
                    "sentence1": [r["sentence1"] for r in rows],
                    "sentence2": [r["sentence2"] for r in rows],
                }
            )
        )
    raise AssertionError(spec.type)


# --------------------------------------------------------------------------- mteb classes
#
# mteb (pinned to one minor version in pyproject.toml) has no public way to hand back the
# per-example results the bootstrap needs, so each class overrides the mteb method that
# holds them, calls mteb's own and records its inputs. ``load_data`` and
# ``task_specific_scores`` are mteb's documented extension points; ``_calculate_scores``,
# ``_run_experiment``, ``_evaluate_subset`` and ``_compute_metrics`` are private to mteb.
# tests/test_mteb_contract.py fails, naming the method, when mteb renames, removes or
# re-signs any of them, or changes the k-means settings :func:`_mteb_kmeans` copies.


def _mteb_kmeans(n_clusters: int, batch_size: int, seed: int) -> Any:
    """The k-means mteb's ``AbsTaskClustering`` fits in each clustering experiment (its
    settings live in the private ``mteb.abstasks.clustering._evaluate_clustering_bootstrapped``,
    which only clusters resamples drawn with replacement; mteb's public-facing
    ``ClusteringEvaluator`` uses other settings). Fitted once on every item for the bootstrap."""
    from sklearn.cluster import MiniBatchKMeans

    return MiniBatchKMeans(
        n_clusters=n_clusters,
        batch_size=batch_size,
        init="k-means++",
        n_init=1,
        random_state=seed,
    )


class _Recorder:
    """An mteb ``EncoderProtocol`` that delegates to the evaluated model and keeps what it
    returned (clustering needs the vectors)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mteb_model_meta = inner.mteb_model_meta
        self.outputs: list[Any] = []

    def encode(self, inputs, **kwargs):  # noqa: ANN001
        out = self.inner.encode(inputs, **kwargs)
        self.outputs.append(out)
        return out

    def similarity(self, a, b):  # noqa: ANN001
        return self.inner.similarity(a, b)

    def similarity_pairwise(self, a, b):  # noqa: ANN001
        return self.inner.similarity_pairwise(a, b)


@cache
def _task_classes() -> dict[str, type]:
    """The mteb subclasses, built on first use so that importing this module does not import mteb."""
    from mteb.abstasks import (
        AbsTaskBitextMining,
        AbsTaskClassification,
        AbsTaskClustering,
        AbsTaskRetrieval,
        AbsTaskSTS,
    )

    class _LocalMixin:
        spec: LocalTaskSpec

        def load_data(
            self, num_proc: int | None = None, *, timer: Any = None, **kwargs: Any
        ) -> None:
            if self.data_loaded:
                return
            self.dataset = load_task_data(self.spec)
            self.per_example = {}
            self._after_load_data()
            self.data_loaded = True

        def _after_load_data(self) -> None:
            """Ours, not mteb's: set what depends on the loaded data."""

    class LocalRetrievalTask(_LocalMixin, AbsTaskRetrieval):
        """Retrieval/reranking on local files; keeps per-query values of the main score."""

        def task_specific_scores(self, scores, qrels, results, hf_split, hf_subset):  # noqa: ANN001
            key = _pytrec_key(self.metadata.main_score)
            self.per_example = {
                "query_ids": list(scores),
                "values": [float(scores[q][key]) for q in scores],
            }
            return {}

    class LocalSTSTask(_LocalMixin, AbsTaskSTS):
        """STS on local files; keeps gold scores and cosine similarities per pair."""

        def _after_load_data(self) -> None:
            scores = self.dataset["test"]["score"]
            self.min_score, self.max_score = min(scores), max(scores)

        def _calculate_scores(self, scores, normalized_scores):  # noqa: ANN001
            self.per_example = {
                "gold": list(map(float, normalized_scores)),
                "cosine": list(map(float, scores["cosine_scores"])),
            }
            return super()._calculate_scores(scores, normalized_scores)

    class LocalClassificationTask(_LocalMixin, AbsTaskClassification):
        """Classification on local files; keeps every experiment's test predictions."""

        def _run_experiment(
            self, train_split, eval_split, train_embeddings, test_embeddings, timer
        ):  # noqa: ANN001
            scores, predictions = super()._run_experiment(
                train_split, eval_split, train_embeddings, test_embeddings, timer
            )
            record = self.per_example.setdefault("predictions", [])
            record.append([int(p) for p in predictions])
            self.per_example["labels"] = [int(y) for y in eval_split[self.label_column_name]]
            return scores, predictions

    class LocalClusteringTask(_LocalMixin, AbsTaskClustering):
        """Clustering on local files: every item is embedded and each of mteb's experiments clusters a
        resample of the full set. Also keeps one k-means assignment of all items (mteb's k-means
        settings) for the bootstrap."""

        max_fraction_of_documents_to_embed = None

        def _after_load_data(self) -> None:
            self.max_documents_per_cluster = len(self.dataset["test"])

        def _evaluate_subset(
            self,
            model,
            data_split,
            *,
            encode_kwargs,
            hf_split,
            hf_subset,
            prediction_folder=None,
            num_proc=None,
            timer,
            **kwargs,
        ):
            recorder = _Recorder(model)
            result = super()._evaluate_subset(
                recorder,
                data_split,
                encode_kwargs=encode_kwargs,
                hf_split=hf_split,
                hf_subset=hf_subset,
                prediction_folder=prediction_folder,
                num_proc=num_proc,
                timer=timer,
                **kwargs,
            )
            embeddings = np.asarray(recorder.outputs[-1], dtype=np.float32)
            labels = np.asarray(data_split[self.label_column_name])
            kmeans = _mteb_kmeans(np.unique(labels).size, self.k_mean_batch_size, self.seed)
            self.per_example = {
                "labels": labels.tolist(),
                "assignment": kmeans.fit_predict(embeddings).tolist(),
            }
            return result

    class LocalBitextTask(_LocalMixin, AbsTaskBitextMining):
        """Bitext mining on local files; keeps the gold and predicted match of every sentence."""

        def _compute_metrics(self, nearest_neighbors, gold):  # noqa: ANN001
            self.per_example = {
                "labels": [int(g[1]) for g in gold],
                "predictions": [int(x["corpus_id"]) for x in nearest_neighbors],
            }
            return super()._compute_metrics(nearest_neighbors, gold)

    return {
        "retrieval": LocalRetrievalTask,
        "reranking": LocalRetrievalTask,
        "sts": LocalSTSTask,
        "classification": LocalClassificationTask,
        "clustering": LocalClusteringTask,
        "bitext": LocalBitextTask,
    }


def _pytrec_key(main_score: str) -> str:
    """mteb's ``ndcg_at_10`` is pytrec_eval's per-query ``ndcg_cut_10`` (and so on)."""
    metric, _, k = main_score.partition("_at_")
    return {
        "ndcg": f"ndcg_cut_{k}",
        "map": f"map_cut_{k}",
        "recall": f"recall_{k}",
        "precision": f"P_{k}",
    }[metric]


def _mteb_languages(spec: LocalTaskSpec) -> list[str]:
    return list(dict.fromkeys(get_language(code).mteb_code for code in spec.languages))


def make_mteb_task(spec: LocalTaskSpec) -> Any:
    """A fresh mteb task object for a local task.

    mteb describes a task by a class whose ``metadata`` attribute is a ``TaskMetadata``
    (``AbsTask.__init__`` reads it, and ``unload_data()`` drops an instance's own
    ``metadata``), so each local task is a new subclass carrying its metadata and spec.
    """
    from mteb import TaskMetadata

    metadata = TaskMetadata(
        name=spec.name,
        description=spec.description,
        dataset={"path": str(spec.path), "revision": spec.fingerprint()},
        type=TYPE_TO_MTEB_TYPE[spec.type],
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=_mteb_languages(spec),
        main_score=spec.main_score,
        prompt=spec.instruction,
    )
    base = _task_classes()[spec.type]
    cls = type(
        f"Local_{spec.type}_{abs(hash(spec.path))}", (base,), {"metadata": metadata, "spec": spec}
    )
    task = cls()
    task.per_example = {}
    return task


def task_entry(spec: LocalTaskSpec) -> TaskEntry:
    """The runner's view of a local task: one subset ("default") counted for its languages."""
    counts_for = aggregation_languages(list(spec.languages))
    return TaskEntry(
        key=spec.name,
        name=spec.name,
        type=spec.type,
        main_metric=spec.main_score,
        split="test",
        instruction=spec.instruction,
        subsets_by_language={lang: ("default",) for lang in counts_for},
        crosslingual=spec.crosslingual,
        source="local",
        fingerprint=spec.fingerprint(),
        factory=partial(make_mteb_task, spec),
        spec=spec,
    )


def load_task_dirs(
    task_dirs: Sequence[str | Path], *, check_data: bool = True
) -> list[LocalTaskSpec]:
    """Parse every task dir (and, with ``check_data``, its data files) before anything runs."""
    specs = [read_task_spec(d) for d in task_dirs]
    names: dict[str, Path] = {}
    for spec in specs:
        if spec.name in names:
            raise TaskDirError(
                f"{spec.path / 'task.json'}: field 'name': {spec.name!r} is also the name of {names[spec.name]}; task names must be unique"
            )
        names[spec.name] = spec.path
        if check_data:
            load_task_data(spec)
    return specs


def offline_suite_dirs() -> list[Path]:
    """The bundled offline suite: ``lusifer/resources/offline_suite/*/`` holding a task.json."""
    from importlib.resources import files

    root = files("lusifer") / "resources" / "offline_suite"
    if not root.is_dir():
        return []
    return sorted(
        Path(str(p)) for p in root.iterdir() if p.is_dir() and (p / "task.json").is_file()
    )
