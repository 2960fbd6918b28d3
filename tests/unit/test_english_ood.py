"""The English out-of-domain tasks of the bundled suite (scripts/build_english_ood.py):
their layout, and that nothing of them (package, file, reference, text) is in the bundled
English training data."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import sys
from functools import cache
from pathlib import Path

import pytest

import lusifer
from lusifer.evaluation.local_tasks import offline_suite_dirs
from lusifer.evaluation.suites import ENGLISH_OOD_DOMAIN, split_english_ood

SUITE = Path(lusifer.__file__).parent / "resources" / "offline_suite"
TRAIN_DATA = Path(lusifer.__file__).parent / "resources" / "data" / "english_train.jsonl.gz"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_english_ood.py"
OOD_TASKS = {
    "BiblePassageRetrieval.en",
    "BibleDivisionClassification.en",
    "FortuneTopicClassification.en",
    "FortuneTopicClustering.en",
}
DATA_FILES = {
    "retrieval": ("queries.jsonl", "corpus.jsonl"),
    "classification": ("train.jsonl", "test.jsonl"),
    "clustering": ("test.jsonl",),
}
# debian:<package>=<version>:<file or reference>
OOD_SOURCE = re.compile(r"^debian:([a-z0-9][a-z0-9+.-]+)=([^:]+(?::[^:/]+)?):(.+)$")
NGRAM = 8
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def key(text: str) -> str:
    return " ".join(text.split()).casefold()


def ngrams(text: str) -> set[str]:
    w = WORD.findall(text.casefold())
    return {" ".join(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)}


@cache
def meta(task: str) -> dict:
    return json.loads((SUITE / task / "task.json").read_text(encoding="utf-8"))


@cache
def rows(task: str) -> tuple[dict, ...]:
    out = []
    for file in DATA_FILES[meta(task)["type"]]:
        lines = (SUITE / task / file).read_text(encoding="utf-8").splitlines()
        out += [json.loads(line) for line in lines]
    return tuple(out)


@cache
def manifest() -> dict:
    return json.loads((SUITE / "english_ood_manifest.json").read_text(encoding="utf-8"))


def test_ood_tasks_are_registered_by_their_domain() -> None:
    inside, outside = split_english_ood(offline_suite_dirs())
    assert {d.name for d in outside} == OOD_TASKS
    assert not OOD_TASKS & {d.name for d in inside}
    assert any(meta(d.name)["languages"] == ["en"] for d in inside)  # in-domain English stays
    types = [meta(t)["type"] for t in OOD_TASKS]
    assert "retrieval" in types and "classification" in types and len(types) >= 3
    for task in OOD_TASKS:
        assert meta(task)["domain"] == ENGLISH_OOD_DOMAIN
        assert meta(task)["languages"] == ["en"]
        assert meta(task)["source"] and meta(task)["license"]
    assert set(manifest()["counts"]) == OOD_TASKS


def test_ood_tasks_are_small() -> None:
    size = sum(f.stat().st_size for t in OOD_TASKS for f in (SUITE / t).rglob("*") if f.is_file())
    assert size < 1.5e6, f"the out-of-domain tasks take {size / 1e6:.2f} MB"


@pytest.mark.parametrize("task", sorted(OOD_TASKS))
def test_every_row_names_its_package_version_and_licence(task: str) -> None:
    packages = manifest()["packages"]
    for row in rows(task):
        match = OOD_SOURCE.match(row["source"])
        assert match, f"{task}: source {row['source']!r} is not debian:<package>=<version>:<where>"
        assert packages.get(match.group(1)) == match.group(2), row["source"]
        assert row["license"].strip()
        assert row["text"].strip() and row["text"] == " ".join(row["text"].split())
        assert "<" not in row["text"], f"{task}: markup left in {row['text'][:80]!r}"


def test_classification_splits_are_disjoint() -> None:
    for task in ("BibleDivisionClassification.en", "FortuneTopicClassification.en"):
        train = [json.loads(x) for x in (SUITE / task / "train.jsonl").open(encoding="utf-8")]
        test = [json.loads(x) for x in (SUITE / task / "test.jsonl").open(encoding="utf-8")]
        assert {key(r["text"]) for r in train}.isdisjoint(key(r["text"]) for r in test)
        assert {r["source"] for r in train}.isdisjoint(r["source"] for r in test)
        assert {r["label"] for r in test} <= {r["label"] for r in train}
        assert len({r["label"] for r in train}) >= 5
    # the Bible split is by chapter: no chapter on both sides
    chapter = lambda r: r["source"].rsplit(".", 1)[0]  # noqa: E731
    bible = SUITE / "BibleDivisionClassification.en"
    train = {chapter(json.loads(x)) for x in (bible / "train.jsonl").open(encoding="utf-8")}
    test = {chapter(json.loads(x)) for x in (bible / "test.jsonl").open(encoding="utf-8")}
    assert train.isdisjoint(test)


# ----------------------------------------------------------------- leakage into training


@cache
def training() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(source strings, normalised texts, word n-grams) of the bundled training data, the
    n-grams restricted to those the out-of-domain tasks hold (the check needs no more)."""
    ood_grams = {g for t in OOD_TASKS for r in rows(t) for g in ngrams(r["text"])}
    sources, texts, shared = set(), set(), set()

    def walk(value) -> None:
        if isinstance(value, str):
            texts.add(key(value))
            shared.update(ngrams(value) & ood_grams)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    with gzip.open(TRAIN_DATA, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            sources.add(str(row.get("source", "")))
            walk(row)
    return frozenset(sources), frozenset(texts), frozenset(shared)


needs_training_data = pytest.mark.skipif(
    not TRAIN_DATA.exists(), reason=f"bundled English training data {TRAIN_DATA} not built"
)


def _package(source: str) -> str | None:
    """The Debian package a training row's source names (its contents or its description)."""
    m = re.match(r"^debian(?::package-descriptions:|-package:|:)([a-z0-9][a-z0-9+.-]+)", source)
    return m.group(1) if m else None


@needs_training_data
def test_no_ood_package_or_source_in_training_data() -> None:
    sources, _, _ = training()
    assert len(sources) > 1000
    train_packages = {p for s in sources if (p := _package(s))}
    assert "libreoffice-help-en-us" in train_packages  # the parser reads both source forms
    ood_packages = set(manifest()["packages"])
    assert ood_packages and not ood_packages & train_packages, sorted(ood_packages & train_packages)
    # looked up in sets: "debian:<package>" before a source's first "=" (package names
    # hold no "="), and every tail of a debian source after one of its ":"
    debian = [s for s in sources if s.startswith("debian:")]
    versioned = {s.split("=", 1)[0] for s in sources if "=" in s}
    tails = {s[i + 1 :] for s in debian for i, c in enumerate(s) if c == ":"}
    for task in OOD_TASKS:
        for row in rows(task):
            assert row["source"] not in sources
            package, _, where = OOD_SOURCE.match(row["source"]).groups()
            # no file or passage of the packages (at any version) in training
            assert f"debian:{package}" not in versioned
            assert where not in tails


@needs_training_data
def test_no_ood_text_in_training_data() -> None:
    _, texts, shared = training()
    for task in OOD_TASKS:
        leaked = [r["text"] for r in rows(task) if key(r["text"]) in texts]
        assert not leaked, f"{task}: {len(leaked)} texts are in the training data: {leaked[:2]}"
        overlapping = [r["text"] for r in rows(task) if ngrams(r["text"]) & shared]
        assert not overlapping, (
            f"{task}: {len(overlapping)} texts share {NGRAM} words in a row with training texts: "
            f"{overlapping[:2]}"
        )


# ----------------------------------------------------------------- the build script's parts


@cache
def builder():
    sys.path.insert(0, str(BUILD_SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("build_english_ood", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_build_constants_match_the_package() -> None:
    b = builder()
    assert b.DOMAIN == ENGLISH_OOD_DOMAIN
    assert b.NGRAM == NGRAM
    assert set(b.PACKAGES) == set(manifest()["packages"])


def test_osis_markup_is_removed() -> None:
    raw = (
        '<div type="x-milestone" subType="x-preverse" sID="pv1"/><title type="psalm">A Psalm'
        '</title> ¶ The <divineName><w lemma="strong:H3068">LORD</w></divineName> '
        '<transChange type="added">is</transChange> my <w lemma="x">shepherd</w> ; I shall '
        'not <w>want</w><note placement="foot">a note</note>.'
    )
    assert builder().clean_osis(raw) == "The LORD is my shepherd; I shall not want."


def test_fortune_filter() -> None:
    keep = builder().keep_fortune
    assert keep("Cheese -- milk's leap toward immortality, as the saying goes among cooks. -- C.F.")
    assert not keep("Too short to tell a topic.")
    assert not keep("Sept 14 Pasadena 049 Sept 21 Troop 049 Sept 28 Blind 1234 5678 9012 3456 78")


def test_screen_drops_exact_and_ngram_overlaps() -> None:
    b = builder()
    screen = b.Screen(
        [
            "The quick brown fox jumps over the lazy dog near the river bank.",
            "An entirely different sentence about apples and pears in autumn.",
            "Exactly a training text.",
        ]
    )
    screen.scan(
        [
            "A dog: the quick brown fox jumps over the lazy dog near here.",
            "exactly a  training TEXT.",
        ]
    )
    assert not screen.ok("The quick brown fox jumps over the lazy dog near the river bank.")
    assert not screen.ok("Exactly a training text.")
    assert screen.ok("An entirely different sentence about apples and pears in autumn.")


def test_english_is_reported_in_and_out_of_the_training_domain(tmp_path) -> None:
    """The demo's and the ablation script's English figures: English-only tasks split by
    the task folders' domain; cross-lingual and other-language tasks count in neither."""
    from types import SimpleNamespace

    from lusifer.evaluation.local_tasks import read_task_spec
    from lusifer.evaluation.results import TaskScore
    from lusifer.evaluation.sampling import sample_task_dirs
    from lusifer.evaluation.suites import english_by_domain

    names = ("FortuneTopicClustering.en", "DebianSectionClustering.en", "XlingRetrieval.en-fr")
    tasks = sample_task_dirs([SUITE / n for n in names], tmp_path / "suite", 20)
    inside, outside = split_english_ood(tasks)
    assert [d.name for d in outside] == ["FortuneTopicClustering.en"]  # the copy keeps its domain
    ood = [read_task_spec(d).name for d in outside]

    def score(name: str, languages: list[str], value: float) -> TaskScore:
        crosslingual = len(languages) > 1
        return TaskScore(
            name, name, "clustering", "v", "test", languages, crosslingual, value, {}, {}
        )

    summary = SimpleNamespace(
        tasks={
            "a": score("FortuneTopicClustering.en", ["en"], 40.0),
            "b": score("DebianSectionClustering.en", ["en"], 70.0),
            "c": score("DebianDescriptionRetrieval.en", ["en"], 90.0),
            "d": score("XlingRetrieval.en-fr", ["en", "fr"], 10.0),
            "e": score("HelpTopicClassification.fr", ["fr"], 5.0),
        }
    )
    assert english_by_domain(summary, ood) == {"in_domain": 80.0, "out_of_domain": 40.0}
    assert english_by_domain(summary, []) == {"in_domain": 200.0 / 3, "out_of_domain": None}
