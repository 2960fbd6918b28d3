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
    assert entries["STS17"].subsets_by_language["en"] == ("en-en",)
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
    from lusifer.evaluation.suites import build_crosslingual_suite

    entries = {e.key: e for e in build_crosslingual_suite()}
    assert tuple(entries) == CROSSLINGUAL_TASKS
    assert set(entries["STS17"].subsets) == {"en-ar", "es-en", "fr-en"}
    assert set(entries["IndicCrosslingualSTS"].subsets) == {"en-hi", "en-bn", "en-te"}
    assert "eng_Latn-fra_Latn" in entries["BelebeleRetrieval"].subsets
    assert len(entries["BelebeleRetrieval"].subsets_by_language) == 13  # every language but English
    assert all(e.crosslingual and e.instruction for e in entries.values())


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
    assert instruction.startswith("Given a scientific claim")
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
