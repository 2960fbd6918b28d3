"""The LUSIFER hub suites (construction only: the data needs internet) and the mteb model wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from lusifer.evaluation.languages import LUSIFER_LANGUAGES, aggregation_languages
from lusifer.evaluation.suites import CROSSLINGUAL_TASKS, LUSIFER_TASKS


@pytest.fixture(scope="module")
def lusifer_suite():
    from lusifer.evaluation.suites import build_lusifer_suite

    return build_lusifer_suite()


def test_task_lists_cover_the_14_languages():
    assert tuple(LUSIFER_TASKS) == LUSIFER_LANGUAGES
    counts = {lang: len(set(tasks)) for lang, tasks in LUSIFER_TASKS.items()}
    assert counts == {
        "en": 56,
        "es": 20,
        "ru": 17,
        "fr": 32,
        "vi": 12,
        "fa": 6,
        "id": 8,
        "ar": 7,
        "fi": 10,
        "ko": 14,
        "hi": 17,
        "bn": 12,
        "te": 12,
        "sw": 8,
    }
    assert aggregation_languages(["en", "fr"]) == ["fr"] and aggregation_languages(["en"]) == ["en"]


def test_lusifer_suite_pins_original_versions(lusifer_suite):
    import mteb

    entries = {e.key: e for e in lusifer_suite}
    assert len(entries) == 133
    for name in (
        "Banking77Classification",
        "STS22",
        "SIB200Classification",
        "MedrxivClusteringP2P",
    ):
        assert name in entries
        assert (
            mteb.get_task(name).metadata.superseded_by is not None
        )  # a newer version exists, not used
    task = entries["MassiveIntentClassification"]
    assert task.subsets_by_language["es"] == ("es",) and task.subsets_by_language["sw"] == ("sw",)
    assert len(task.subsets_by_language) == 13
    assert entries["IndicCrosslingualSTS"].subsets_by_language == {
        "hi": ("en-hi",),
        "bn": ("en-bn",),
        "te": ("en-te",),
    }
    # mteb 1.14's rule: every subset involving the language (STS17 es-en counts for en and es)
    assert entries["STS17"].subsets_by_language["en"] == (
        "en-ar", "en-de", "en-en", "en-tr", "es-en", "fr-en", "it-en", "nl-en",
    )  # fmt: skip
    assert entries["STS17"].subsets_by_language["es"] == ("es-en", "es-es")
    assert set(entries["BelebeleRetrieval"].subsets_by_language["fr"]) == {
        "fra_Latn-fra_Latn", "eng_Latn-fra_Latn", "fra_Latn-eng_Latn",
    }  # fmt: skip
    assert entries["MSMARCO"].split == "dev"
    for entry in lusifer_suite:
        assert entry.instruction and entry.source == "mteb"
    built = entries["MassiveIntentClassification"].factory()
    assert set(built.hf_subsets) == {s for subs in task.subsets_by_language.values() for s in subs}
    assert list(built.eval_splits) == ["test"] and not built.data_loaded


def test_lusifer_v2_uses_newer_versions():
    from lusifer.evaluation.suites import build_lusifer_suite

    names = {e.name for e in build_lusifer_suite(["en", "sw"], newest_versions=True)}
    assert "Banking77Classification.v2" in names and "Banking77Classification" not in names
    assert "SwahiliNewsClassification.v2" in names


def test_crosslingual_suite_subsets():
    """The reference code's get_task(name, languages=<the 14>): every subset involving one."""
    from lusifer.evaluation.suites import build_crosslingual_suite

    entries = {e.key: e for e in build_crosslingual_suite()}
    assert tuple(entries) == CROSSLINGUAL_TASKS
    sts17 = entries["STS17"]
    assert len(sts17.subsets) == 11  # all of STS17: each involves one of the 14 languages
    assert sts17.subset_languages["it-en"] == ("ita", "eng")
    assert sts17.subsets_by_language["es"] == ("es-en", "es-es")
    assert len(entries["IndicCrosslingualSTS"].subsets) == 12  # en-as ... en-ur, via English
    assert "de-de" not in entries["MLQARetrieval"].subsets
    assert len(entries["MLQARetrieval"].subsets) == 45
    belebele = entries["BelebeleRetrieval"]
    assert "eng_Latn-fra_Latn" in belebele.subsets and "deu_Latn-eng_Latn" in belebele.subsets
    assert "deu_Latn-deu_Latn" not in belebele.subsets
    assert all(e.crosslingual and e.instruction for e in entries.values())
    only_fr = {e.key: e for e in build_crosslingual_suite(["fr"])}
    assert set(only_fr["STS17"].subsets) == {"fr-en"}


#: The reference code's ISO 639-3 code per language (lusifer/eval/constants.py LANG_TO_CODES).
REFERENCE_CODES = {
    "ar": "ara", "bn": "ben", "es": "spa", "en": "eng", "fa": "fas", "fi": "fin", "fr": "fra",
    "hi": "hin", "id": "ind", "ko": "kor", "ru": "rus", "sw": "swa", "te": "tel", "vi": "vie",
}  # fmt: skip


def _mteb_114_filter(eval_langs: dict[str, list[str]], iso3: str) -> list[str]:
    """mteb 1.14.21 AbsTask.filter_languages(languages=[iso3]) with LanguageScripts: a subset
    stays when any of its "iso3-Script" tags has the code (scripts are not filtered)."""
    return [s for s, tags in eval_langs.items() if any(t.split("-")[0] == iso3 for t in tags)]


def test_every_language_gets_the_subsets_mteb_114_gave_the_reference_code(lusifer_suite):
    import mteb

    from lusifer.evaluation.languages import mteb_iso3

    assert {lang: mteb_iso3(lang) for lang in LUSIFER_LANGUAGES} == REFERENCE_CODES
    for entry in lusifer_suite:
        md = mteb.get_task(entry.name).metadata
        for lang, subsets in entry.subsets_by_language.items():
            expected = (
                _mteb_114_filter(md.hf_subsets_to_langscripts, REFERENCE_CODES[lang])
                if md.is_multilingual
                else ["default"]
            )
            assert list(subsets) == expected, (entry.name, lang)


def _runs(entries, scores: dict[str, dict[str, float]]) -> dict:
    return {
        "m": {
            e.key: {"subset_scores": {s: scores[e.key][s] for s in e.subsets}}
            for e in entries
            if e.key in scores
        }
    }


def test_spanish_average_from_subset_scores_follows_mteb_114(tmp_path):
    """A language average rebuilt from per-subset scores: cross-lingual subsets count."""
    from lusifer.evaluation.suites import build_lusifer_suite
    from lusifer.evaluation.summary import summarise

    scores = {
        "STS17": {"es-es": 80.0, "es-en": 60.0},
        "STS22": {"es": 65.0, "es-en": 75.0, "es-it": 55.0},
        "MassiveIntentClassification": {"es": 50.0},
        "BelebeleRetrieval": {
            "spa_Latn-spa_Latn": 90.0, "eng_Latn-spa_Latn": 70.0, "spa_Latn-eng_Latn": 80.0,
        },
        "SpanishNewsClassification": {"default": 40.0},
    }  # fmt: skip
    entries = [e for e in build_lusifer_suite(["es"]) if e.key in scores]
    assert {e.key: set(e.subsets) for e in entries} == {k: set(v) for k, v in scores.items()}
    report = summarise(
        entries, ["m"], _runs(entries, scores), suite="lusifer", bootstrap=0, seed=0,
        output_dir=tmp_path,
    )  # fmt: skip
    # by hand, mteb 1.14: plain mean over the subsets involving spa, then over the five tasks
    by_task = [(80 + 60) / 2, (65 + 75 + 55) / 3, 50, (90 + 70 + 80) / 3, 40]
    assert report.summaries["m"].languages["es"] == pytest.approx(sum(by_task) / 5)  # 61.0
    monolingual_only = (80 + 65 + 50 + 90 + 40) / 5  # the former rule: 65.0
    assert report.summaries["m"].languages["es"] != pytest.approx(monolingual_only)


def test_crosslingual_table_score_follows_the_reference_code(tmp_path):
    """Table 2: mean over the subsets' languages of get_score(languages=[that language])."""
    from lusifer.evaluation.suites import build_crosslingual_suite
    from lusifer.evaluation.summary import summarise

    sts17 = {
        "ko-ko": 70.0, "ar-ar": 60.0, "en-ar": 50.0, "en-de": 80.0, "en-en": 90.0, "en-tr": 40.0,
        "es-en": 70.0, "es-es": 85.0, "fr-en": 75.0, "it-en": 65.0, "nl-en": 55.0,
    }  # fmt: skip
    partners = ["as", "bn", "gu", "hi", "kn", "ml", "mr", "or", "pa", "ta", "te", "ur"]
    indic = {f"en-{x}": 30.0 + i for i, x in enumerate(partners)}
    entries = [e for e in build_crosslingual_suite() if e.key in ("STS17", "IndicCrosslingualSTS")]
    scores = {"STS17": sts17, "IndicCrosslingualSTS": indic}
    report = summarise(
        entries, ["m"], _runs(entries, scores), suite="crosslingual", bootstrap=0, seed=0,
        output_dir=tmp_path,
    )  # fmt: skip
    per_language = {
        "kor": 70, "ara": (60 + 50) / 2, "eng": (50 + 80 + 90 + 40 + 70 + 75 + 65 + 55) / 8,
        "deu": 80, "tur": 40, "spa": (70 + 85) / 2, "fra": 75, "ita": 65, "nld": 55,
    }  # fmt: skip
    summary = report.summaries["m"]
    assert summary.crosslingual["STS17"] == pytest.approx(sum(per_language.values()) / 9)
    # IndicCrosslingualSTS: English's mean joins the 12 partners' scores, so the plain mean
    assert summary.crosslingual["IndicCrosslingualSTS"] == pytest.approx(35.5)
    assert summary.tasks["STS17"].language_scores["es"] == pytest.approx((70 + 85) / 2)
    assert summary.tasks["IndicCrosslingualSTS"].language_scores == pytest.approx(
        {"en": 35.5, "bn": 31.0, "hi": 33.0, "te": 40.0}
    )


def test_mteb_wrapper_dedupes_and_maps_prompt_type():
    import mteb
    from mteb.types import PromptType

    from lusifer.evaluation.mteb_model import MtebEncoder

    class Counting:
        name = "counting"
        seen: list = []

        def encode(
            self,
            texts,
            *,
            instruction=None,
            kind="query",
            batch_size=32,
            normalize=True,
            show_progress=False,
        ):
            self.seen.append((list(texts), instruction, kind))
            return np.stack([np.full(4, len(t), dtype=np.float32) for t in texts])

    enc = Counting()
    model = MtebEncoder(enc)
    assert model.mteb_model_meta.name == "lusifer/counting"
    metadata = mteb.get_task("SciFact").metadata
    batches = [{"text": ["a", "bb", "a"]}, {"text": ["ccc", "bb"]}]
    out = model.encode(
        batches,
        task_metadata=metadata,
        hf_split="test",
        hf_subset="default",
        prompt_type=PromptType.document,
    )
    assert out.shape == (5, 4) and out[:, 0].tolist() == [1, 2, 1, 3, 2]
    texts, instruction, kind = enc.seen[-1]
    assert texts == ["a", "bb", "ccc"] and kind == "document"
    assert instruction == "Given a claim, retrieve documents that support or refute the claim."
    model.encode(
        batches, task_metadata=metadata, hf_split="test", hf_subset="default", prompt_type=None
    )
    assert enc.seen[-1][2] == "query"
    # a later task with the same texts: only what this (instruction, kind) has not seen
    calls = len(enc.seen)
    other = mteb.get_task("NFCorpus").metadata
    again = [{"text": ["bb", "dddd"]}]
    kwargs = {"hf_split": "test", "hf_subset": "default", "prompt_type": PromptType.document}
    out = model.encode(again, task_metadata=metadata, **kwargs)
    assert enc.seen[-1][0] == ["dddd"] and out[:, 0].tolist() == [2, 4]
    model.encode(again, task_metadata=other, **kwargs)  # another instruction: encoded anew
    assert enc.seen[-1][0] == ["bb", "dddd"] and len(enc.seen) == calls + 2
    # an encoder that ignores instructions shares rows across tasks
    enc.uses_instructions = False
    blind = MtebEncoder(enc)
    blind.encode(again, task_metadata=metadata, **kwargs)
    blind.encode(again, task_metadata=other, **kwargs)
    assert len(enc.seen) == calls + 3


# The reference code's strings for a few tasks, as REFERENCE.md quotes them.
REFERENCE_STRINGS = {
    "NQ": "Given a question, retrieve passages that answer the question.",
    "MLQARetrieval": "Given a question, retrieve passages that answer the question.",
    "STS12": "Retrieve semantically similar text.",
    "STS22.v2": "Retrieve semantically similar text.",
    "SprintDuplicateQuestions": "Retrieve semantically similar text.",
    "ArxivClusteringP2P": "Identify the category of the following passages.",
    "Banking77Classification": "Given a online banking query, find the corresponding intents.",
}


def test_the_suites_evaluate_with_the_reference_codes_instructions(lusifer_suite):
    from lusifer.evaluation.instructions import instruction_for, reference_instructions
    from lusifer.evaluation.suites import build_crosslingual_suite

    table = reference_instructions()
    for name, text in REFERENCE_STRINGS.items():
        assert table[name] == text and instruction_for(name) == text
    # every task of both suites has the reference's own string, not a fallback
    for entry in [*lusifer_suite, *build_crosslingual_suite()]:
        assert entry.instruction in table.values(), entry.name
        assert entry.instruction == instruction_for(entry.name), entry.name
    # our own table stays available by name, and differs
    ours = build_crosslingual_suite(instructions="lusifer")
    assert {e.name: e.instruction for e in ours}["MLQARetrieval"] == (
        "Given a question, retrieve Wikipedia passages that answer it"
    )
    with pytest.raises(ValueError, match="instructions must be one of"):
        instruction_for("NQ", table="e5")


def _reference_tables(path):
    """The instruction dicts of the reference's ``lusifer/eval/constants.py``, read as
    literals (nothing of it runs)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    tables = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.endswith("_TO_PROMPT") or name == "CROSS_LINGUAL_INSTRUCTION":
                tables[name] = ast.literal_eval(node.value)
    return tables


def test_the_shipped_table_equals_the_reference_codes_task_by_task():
    """Against a checkout of github.com/hieum98/lusifer (2937c83) named by
    LUSIFER_REFERENCE_CODE; without one, against the strings REFERENCE.md quotes."""
    import os
    from pathlib import Path

    from lusifer.evaluation.instructions import reference_instructions

    shipped = reference_instructions()
    checkout = os.environ.get("LUSIFER_REFERENCE_CODE")
    if not checkout:
        assert all(shipped[k] == v for k, v in REFERENCE_STRINGS.items())
        pytest.skip("set LUSIFER_REFERENCE_CODE to a reference checkout for the full comparison")
    tables = _reference_tables(Path(checkout) / "lusifer" / "eval" / "constants.py")
    expected = {}
    for group in tables["MTEB_DS_TO_PROMPT"].values():
        expected.update(group)
    for group in tables["MULTILINGUAL_DS_TO_PROMPT"].values():
        expected.update(group)
    expected.update(tables["CROSS_LINGUAL_INSTRUCTION"])
    assert dict(shipped) == expected
