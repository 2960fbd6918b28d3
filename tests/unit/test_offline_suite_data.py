"""Checks on the bundled offline evaluation suite (built by scripts/build_offline_suite.py)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

import lusifer
from lusifer.data.splits import help_paragraph_key, is_held_out

SUITE = Path(lusifer.__file__).parent / "resources" / "offline_suite"
TRAIN_DATA = Path(lusifer.__file__).parent / "resources" / "data" / "english_train.jsonl.gz"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_offline_suite.py"

LANGUAGES = ["en", "es", "ru", "fr", "vi", "fa", "id", "ar", "fi", "ko", "hi", "bn", "te", "sw"]
HELP_LANGUAGES = {"en", "es", "fi", "fr", "hi", "id", "ko", "ru", "vi"}
TYPES = {"retrieval", "reranking", "sts", "classification", "clustering", "bitext"}
FILES = {
    "retrieval": ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"],
    "classification": ["train.jsonl", "test.jsonl"],
    "clustering": ["test.jsonl"],
    "bitext": ["test.jsonl"],
}
TEXT_FIELDS = {
    "corpus.jsonl": ["_id", "text"],
    "queries.jsonl": ["_id", "text"],
    "train.jsonl": ["text", "label"],
    "test.jsonl": ["text", "label"],
}
DEBIAN_SOURCE = re.compile(r"^debian-package:([a-z0-9][a-z0-9+.-]+)$")


def task_dirs() -> list[Path]:
    return sorted(d for d in SUITE.iterdir() if d.is_dir())


@cache
def meta(task: str) -> dict:
    return json.loads((SUITE / task / "task.json").read_text(encoding="utf-8"))


@cache
def rows(task: str, file: str) -> list[dict]:
    path = SUITE / task / file
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            pytest.fail(f"{path}:{n}: not JSON ({exc})")
    return out


def suite_texts() -> dict[str, str]:
    """Every text of the suite (whitespace-normalised, casefolded) -> the task it is in."""
    out = {}
    for d in task_dirs():
        kind = meta(d.name)["type"]
        files = ["test.jsonl"] if kind == "bitext" else FILES[kind][:2]
        for file in files:
            for row in rows(d.name, file):
                for field in ("text", "sentence1", "sentence2"):
                    if field in row:
                        out[" ".join(row[field].split()).casefold()] = d.name
    return out


def test_suite_exists_and_is_small() -> None:
    assert len(task_dirs()) >= 40, f"expected the built suite in {SUITE}"
    size = sum(f.stat().st_size for f in SUITE.rglob("*") if f.is_file())
    assert size < 25e6, f"suite is {size / 1e6:.1f} MB, over the 25 MB budget"
    assert (SUITE / "README.md").exists()


@pytest.mark.parametrize("task", [d.name for d in task_dirs()])
def test_task_json_and_files(task: str) -> None:
    m = meta(task)
    for key in ("name", "type", "languages", "instruction", "main_score", "description"):
        assert m.get(key), f"{task}/task.json: missing or empty {key!r}"
    assert m["name"] == task
    assert m["type"] in TYPES
    assert 1 <= len(m["languages"]) <= 2 and set(m["languages"]) <= set(LANGUAGES)
    assert "\n" not in m["instruction"]
    for file in FILES[m["type"]]:
        assert (SUITE / task / file).is_file(), f"{task}: {file} missing for type {m['type']}"
    data_files = ["test.jsonl"] if m["type"] == "bitext" else FILES[m["type"]][:2]
    for file in data_files:
        data = rows(task, file)
        assert data, f"{task}/{file} is empty"
        fields = ["sentence1", "sentence2"] if m["type"] == "bitext" else TEXT_FIELDS[file]
        for n, row in enumerate(data, 1):
            for field in [*fields, "source", "license"]:
                value = row.get(field)
                assert isinstance(value, str) and value.strip(), (
                    f"{task}/{file}:{n}: field {field!r} missing or empty"
                )


@pytest.mark.parametrize(
    "task", [d.name for d in task_dirs() if meta(d.name)["type"] == "retrieval"]
)
def test_retrieval_qrels_reference_existing_ids(task: str) -> None:
    qids = [r["_id"] for r in rows(task, "queries.jsonl")]
    dids = [r["_id"] for r in rows(task, "corpus.jsonl")]
    assert len(set(qids)) == len(qids) and len(set(dids)) == len(dids), "duplicate ids"
    lines = (SUITE / task / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    judged = set()
    for line in lines[1:]:
        q, d, score = line.split("\t")
        assert q in set(qids) and d in set(dids), f"{task}: qrel {q} -> {d} names a missing id"
        assert int(score) > 0
        judged.add(q)
    assert judged == set(qids), f"{task}: {len(set(qids) - judged)} queries without a qrel"


@pytest.mark.parametrize(
    "task", [d.name for d in task_dirs() if meta(d.name)["type"] == "classification"]
)
def test_classification_splits_are_disjoint_and_share_labels(task: str) -> None:
    train, test = rows(task, "train.jsonl"), rows(task, "test.jsonl")
    assert {r["source"] for r in train}.isdisjoint(r["source"] for r in test), (
        f"{task}: a paragraph/package is in both train and test"
    )
    assert {r["text"] for r in train}.isdisjoint(r["text"] for r in test)
    train_labels = {r["label"] for r in train}
    assert len(train_labels) >= 5
    assert {r["label"] for r in test} <= train_labels, f"{task}: test label unseen in train"


def test_languages_and_task_families_covered() -> None:
    have: dict[str, set[str]] = defaultdict(set)
    for d in task_dirs():
        langs = meta(d.name)["languages"]
        have[langs[-1]].add(d.name.split(".")[0])
        if len(langs) == 2:
            assert langs[0] == "en" and d.name.endswith(f".en-{langs[1]}")
    assert set(have) == set(LANGUAGES)
    for lang in LANGUAGES:
        expected = set()
        if lang != "en":
            expected |= {"XlingRetrieval", "Bitext"}
        if lang in HELP_LANGUAGES:
            expected |= {"HelpTopicClassification", "HelpTopicClustering"}
        if lang == "en":
            expected |= {
                "DebianSectionClassification",
                "DebianSectionClustering",
                "DebianDescriptionRetrieval",
                # out of the training domain (scripts/build_english_ood.py, test_english_ood.py)
                "BiblePassageRetrieval",
                "BibleDivisionClassification",
                "FortuneTopicClassification",
                "FortuneTopicClustering",
            }
        assert have[lang] == expected, f"{lang}: has {sorted(have[lang])}"


def test_debian_tasks_use_only_held_out_packages() -> None:
    debian = [d.name for d in task_dirs() if d.name.startswith("Debian")]
    assert len(debian) == 3
    packages = set()
    for task in debian:
        files = ["queries.jsonl", "corpus.jsonl"] if "Retrieval" in task else ["test.jsonl"]
        if meta(task)["type"] == "classification":
            files.append("train.jsonl")
        for file in files:
            for row in rows(task, file):
                match = DEBIAN_SOURCE.match(row["source"])
                assert match, f"{task}/{file}: source {row['source']!r} names no package"
                packages.add(match.group(1))
    assert packages and all(is_held_out(p) for p in packages), sorted(
        p for p in packages if not is_held_out(p)
    )[:5]


def _train_strings(value, out: set[str]) -> None:
    if isinstance(value, str):
        if len(value) >= 20:
            out.add(" ".join(value.split()).casefold())
    elif isinstance(value, dict):
        for v in value.values():
            _train_strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _train_strings(v, out)


@pytest.mark.skipif(
    not TRAIN_DATA.exists(),
    reason=f"bundled English training data {TRAIN_DATA} not built yet (owned by the training-data builder)",
)
def test_no_suite_text_in_bundled_training_data() -> None:
    train: set[str] = set()
    with gzip.open(TRAIN_DATA, "rt", encoding="utf-8") as f:
        for line in f:
            _train_strings(json.loads(line), train)
    assert len(train) > 1000, f"{TRAIN_DATA} holds suspiciously few texts"
    leaks = [(t, task) for t, task in suite_texts().items() if t in train]
    assert not leaks, f"{len(leaks)} suite texts are in the training data, e.g. {leaks[:3]}"
    # the training side's Debian rows must come from packages that are not held out
    sources = set()
    with gzip.open(TRAIN_DATA, "rt", encoding="utf-8") as f:
        for line in f:
            sources.add(str(json.loads(line).get("source", "")))
    train_packages = {
        m.group(1)
        for s in sources
        if (m := re.match(r"^debian(?:-package|:package-descriptions):([a-z0-9][a-z0-9+.-]+)$", s))
    }
    assert train_packages, "expected Debian description rows in the training data"
    assert not {p for p in train_packages if is_held_out(p)}
    # help paragraphs: no (page, paragraph id) of any suite task, in any language
    train_keys = {k for s in sources if (k := help_paragraph_key(s))}
    suite_keys = {
        k
        for d in task_dirs()
        for f in sorted(d.glob("*.jsonl"))
        for row in rows(d.name, f.name)
        if (k := help_paragraph_key(str(row.get("source", ""))))
    }
    assert train_keys and suite_keys and not train_keys & suite_keys


# ----------------------------------------------------------------- the build script's parts


@cache
def builder():
    spec = importlib.util.spec_from_file_location("build_offline_suite", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("en", "tr", "lang", "keep"),
    [
        (
            "Saves the current document under a new name.",
            "Enregistre le document sous un nouveau nom.",
            "fr",
            True,
        ),
        (
            "Saves the current document under a new name.",
            "Сохраняет документ под новым именем.",
            "ru",
            True,
        ),
        (
            "Saves the current document under a new name.",
            "Сохраняет документ под новым именем.",
            "ar",
            False,
        ),
        ("Saves %s under a new name now.", "Enregistre %s sous un nouveau nom.", "fr", False),
        ("Saves the ~current document now.", "Enregistre le ~document courant.", "fr", False),
        ("Open the <b>current</b> document now.", "Ouvre le document <b>courant</b>.", "fr", False),
        (
            "Saves the current document under a new name.",
            "Saves the current document under a new name.",
            "fr",
            False,
        ),
        ("Save it now", "Enregistrer maintenant", "fr", False),
    ],
)
def test_pair_filter(en: str, tr: str, lang: str, keep: bool) -> None:
    assert builder().keep_pair(en, tr, lang) is keep


def test_help_parser_keeps_default_variant_only() -> None:
    parser = builder().HelpParagraphs()
    parser.feed(
        '<p id="par_id1" class="paragraph">Choose <span class="switchinline">'
        '<span hidden="true" id="MACtextx_1" class="MAC">Preferences</span>'
        '<span hidden="true" id="defaulttextx_1">Tools - Options</span></span> now.</p>'
        '<div class="embedded"><p id="par_id2">Embedded from elsewhere.</p></div>'
        '<p id="hd_id3">Heading-like</p><p id="par_id4">A &amp; B<br>done</p>'
    )
    assert parser.paragraphs == {"par_id1": "Choose Tools - Options now.", "par_id4": "A & B done"}


def test_dedupe_keeps_one_pair_per_side() -> None:
    b = builder()
    pairs = [
        b.Pair("Open a file now please", "Ouvrir un fichier", "s2", "x"),
        b.Pair("Open a file now please", "Ouvre un fichier", "s1", "x"),
        b.Pair("Open the file now please", "Ouvrir un fichier", "s3", "x"),
    ]
    out = b.dedupe(pairs)
    assert [(p.en, p.tr) for p in out] == [
        ("Open a file now please", "Ouvre un fichier"),
        ("Open the file now please", "Ouvrir un fichier"),
    ]


def test_excluded_texts_are_handed_to_the_builders() -> None:
    # no module-level set filled by main(): each filter takes the excluded texts it checks
    b = builder()
    from offline_suite.common import ExcludedTexts

    assert not hasattr(b, "EXCLUDED")
    en, tr = (
        "Saves the current document under a new name.",
        "Enregistre le document sous un nouveau nom.",
    )
    assert b.keep_pair(en, tr, "fr")
    excluded = ExcludedTexts(
        frozenset({b.text_key("  saves the CURRENT document under a new name. ")})
    )
    assert len(excluded) == 1 and excluded.any_of(en)
    assert not b.keep_pair(en, tr, "fr", excluded=excluded)
