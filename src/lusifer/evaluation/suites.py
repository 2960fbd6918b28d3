"""The LUSIFER benchmark suites: per-language mteb task lists, pinned versions, cross-lingual suite.

Task names are those of mteb 1.14, which the paper used. mteb 2.x keeps every one of them
under the same name and marks newer versions with ``superseded_by``; ``lusifer`` pins the
original, ``lusifer-v2`` follows mteb's successor chain. Building a suite only reads mteb's
metadata; the data download happens when a task runs.

Subsets and splits are chosen as the reference code did with mteb 1.14 (its
``lusifer/eval/eval.py``): ``mteb.get_task(name, languages=[iso3])`` keeps every subset with
the language among its languages (:func:`lusifer.evaluation.languages.involves`), and the
split is the first of test, test.full, test_expert, validation, dev, train.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from .entry import MTEB_TYPE_TO_TYPE, TaskEntry
from .instructions import instruction_for
from .languages import LUSIFER_LANGUAGES, aggregation_languages, involves

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask

    from .local_tasks import LocalTaskSpec

_ENGLISH_MTEB: tuple[str, ...] = (
    "AmazonCounterfactualClassification", "AmazonPolarityClassification",
    "AmazonReviewsClassification", "ArguAna", "ArxivClusteringP2P", "ArxivClusteringS2S",
    "AskUbuntuDupQuestions", "BIOSSES", "Banking77Classification", "BiorxivClusteringP2P",
    "BiorxivClusteringS2S", "CQADupstackTexRetrieval", "ClimateFEVER", "DBPedia",
    "EmotionClassification", "FEVER", "FiQA2018", "HotpotQA", "ImdbClassification", "MSMARCO",
    "MTOPDomainClassification", "MTOPIntentClassification", "MassiveIntentClassification",
    "MassiveScenarioClassification", "MedrxivClusteringP2P", "MedrxivClusteringS2S",
    "MindSmallReranking", "NFCorpus", "NQ", "QuoraRetrieval", "RedditClustering",
    "RedditClusteringP2P", "SCIDOCS", "SICK-R", "STS12", "STS13", "STS14", "STS15", "STS16",
    "STS17", "STS22", "STSBenchmark", "SciDocsRR", "SciFact", "SprintDuplicateQuestions",
    "StackExchangeClustering", "StackExchangeClusteringP2P", "StackOverflowDupQuestions",
    "SummEval", "TRECCOVID", "Touche2020", "ToxicConversationsClassification",
    "TweetSentimentExtractionClassification", "TwentyNewsgroupsClustering",
    "TwitterSemEval2015", "TwitterURLCorpus",
)  # fmt: skip

#: Per-language task lists of the reference code (a superset of the paper's figure).
LUSIFER_TASKS: Mapping[str, tuple[str, ...]] = {
    "en": _ENGLISH_MTEB,
    "es": (
        "AmazonReviewsClassification", "BelebeleRetrieval", "MLSUMClusteringP2P.v2",
        "MLSUMClusteringS2S.v2", "MTOPIntentClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "MintakaRetrieval", "MultiEURLEXMultilabelClassification",
        "MultilingualSentimentClassification", "PawsXPairClassification", "SIB200ClusteringS2S",
        "STS17", "STS22", "STSBenchmarkMultilingualSTS", "SpanishNewsClassification",
        "SpanishNewsClusteringP2P", "TweetSentimentClassification", "XNLI", "XQuADRetrieval",
    ),
    "ru": (
        "GeoreviewClassification", "GeoreviewClusteringP2P", "HeadlineClassification",
        "InappropriatenessClassification", "KinopoiskClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "RiaNewsRetrieval", "RuBQRetrieval",
        "RuReviewsClassification", "RuSTSBenchmarkSTS", "RuSciBenchGRNTIClassification",
        "RuSciBenchGRNTIClusteringP2P", "RuSciBenchOECDClassification",
        "RuSciBenchOECDClusteringP2P", "STS22", "TERRa",
    ),
    "fr": (
        "AlloProfClusteringP2P.v2", "AlloProfClusteringS2S.v2", "AlloprofReranking",
        "AlloprofRetrieval", "AmazonReviewsClassification", "BelebeleRetrieval", "FQuADRetrieval",
        "FrenchBookReviews", "HALClusteringS2S.v2", "MLSUMClusteringP2P.v2", "MLSUMClusteringS2S.v2",
        "MTOPIntentClassification", "MasakhaNEWSClusteringP2P", "MasakhaNEWSClusteringS2S",
        "MassiveIntentClassification", "MassiveScenarioClassification", "MintakaRetrieval",
        "MultiEURLEXMultilabelClassification", "OpusparcusPC", "PawsXPairClassification",
        "PublicHealthQA", "RTE3", "SIB200Classification", "SIB200ClusteringS2S", "SICKFr", "STS17",
        "STS22.v2", "STSBenchmarkMultilingualSTS", "SummEvalFr", "SyntecReranking",
        "TweetSentimentClassification", "XNLI",
    ),
    "vi": (
        "BelebeleRetrieval", "MLQARetrieval", "MassiveIntentClassification",
        "MassiveScenarioClassification", "MultilingualSentimentClassification", "PublicHealthQA",
        "SIB200Classification", "SIB200ClusteringS2S", "VieQuADRetrieval",
        "VieStudentFeedbackClassification", "XNLI", "XQuADRetrieval",
    ),
    "fa": (
        "FarsTail", "MassiveIntentClassification", "MassiveScenarioClassification",
        "MultilingualSentimentClassification", "WikipediaRerankingMultilingual",
        "WikipediaRetrievalMultilingual",
    ),
    "id": (
        "BelebeleRetrieval", "IndonesianMongabayConservationClassification",
        "MassiveIntentClassification", "MassiveScenarioClassification", "SIB200Classification",
        "SIB200ClusteringS2S", "SemRel24STS", "indonli",
    ),
    "ar": (
        "ArEntail", "MLQARetrieval", "MintakaRetrieval", "STS17", "STS22.v2",
        "TweetEmotionClassification", "XNLI",
    ),
    "fi": (
        "BelebeleRetrieval", "FinParaSTS", "FinToxicityClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "MultilingualSentimentClassification", "OpusparcusPC",
        "SIB200Classification", "WikipediaRerankingMultilingual", "WikipediaRetrievalMultilingual",
    ),
    "ko": (
        "BelebeleRetrieval", "KLUE-STS", "KLUE-TC", "Ko-StrategyQA", "KorHateSpeechMLClassification",
        "KorSTS", "KorSarcasmClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "PawsXPairClassification", "PublicHealthQA",
        "SIB200Classification", "SIB200ClusteringS2S", "STS17",
    ),
    "hi": (
        "BelebeleRetrieval", "IndicCrosslingualSTS", "IndicReviewsClusteringP2P", "MLQARetrieval",
        "MTOPIntentClassification", "MassiveIntentClassification", "MassiveScenarioClassification",
        "MintakaRetrieval", "SIB200Classification", "SIB200ClusteringS2S", "SemRel24STS",
        "SentimentAnalysisHindi", "TweetSentimentClassification", "WikipediaRerankingMultilingual",
        "WikipediaRetrievalMultilingual", "XNLI", "XQuADRetrieval",
    ),
    "bn": (
        "BelebeleRetrieval", "BengaliDocumentClassification", "BengaliHateSpeechClassification",
        "IndicCrosslingualSTS", "IndicQARetrieval", "IndicReviewsClusteringP2P",
        "MassiveIntentClassification", "MassiveScenarioClassification", "SIB200ClusteringS2S",
        "WikipediaRerankingMultilingual", "WikipediaRetrievalMultilingual", "XNLIV2",
    ),
    "te": (
        "BelebeleRetrieval", "IndicCrosslingualSTS", "IndicNLPNewsClassification",
        "IndicQARetrieval", "IndicReviewsClusteringP2P", "IndicSentimentClassification",
        "MassiveIntentClassification", "MassiveScenarioClassification", "SIB200Classification",
        "SIB200ClusteringS2S", "SemRel24STS", "TeluguAndhraJyotiNewsClassification",
    ),
    "sw": (
        "AfriSentiClassification", "MasakhaNEWSClassification", "MasakhaNEWSClusteringP2P",
        "MasakhaNEWSClusteringS2S", "MassiveIntentClassification", "MassiveScenarioClassification",
        "SwahiliNewsClassification", "XNLI",
    ),
}  # fmt: skip

#: The cross-lingual benchmark (paper Table 2), pinned versions.
CROSSLINGUAL_TASKS: tuple[str, ...] = (
    "MLQARetrieval", "BelebeleRetrieval", "STS17", "STS22.v2", "IndicCrosslingualSTS",
)  # fmt: skip

Suite = Literal["lusifer", "lusifer-v2", "crosslingual", "offline"]
SUITES: tuple[str, ...] = get_args(Suite)

#: The ``domain`` (task.json) of the bundled English tasks whose domain the bundled English
#: training data does not cover (``scripts/build_english_ood.py``): scripture, commentary
#: and quotations, where the training data is software and dictionary text. The demo and
#: the ablation script report them apart from the in-domain English tasks.
ENGLISH_OOD_DOMAIN = "english-out-of-domain"


def task_domain(task_dir: str | Path) -> str | None:
    """The ``domain`` field of a local task directory's task.json (None when absent)."""
    from .local_tasks import read_task_spec

    return read_task_spec(task_dir).domain


def split_english_ood(task_dirs: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """``task_dirs`` split into (in-domain tasks, English out-of-domain tasks), in order."""
    inside: list[Path] = []
    outside: list[Path] = []
    for d in map(Path, task_dirs):
        (outside if task_domain(d) == ENGLISH_OOD_DOMAIN else inside).append(d)
    return inside, outside


def english_by_domain(summary: Any, ood_names: Iterable[str]) -> dict[str, float | None]:
    """One model's mean score on its English-only tasks inside the training domain and on
    the English out-of-domain tasks named in ``ood_names`` (None where there are none).
    ``summary`` is a :class:`~lusifer.evaluation.runner.ModelSummary`."""
    ood = set(ood_names)
    groups: dict[str, list[float]] = {"in_domain": [], "out_of_domain": []}
    for task in summary.tasks.values():
        if task.languages == ["en"] and not task.crosslingual:
            groups["out_of_domain" if task.name in ood else "in_domain"].append(task.score)
    return {k: sum(v) / len(v) if v else None for k, v in groups.items()}


def latest_version(name: str) -> str:
    """Follow mteb's ``superseded_by`` chain from ``name`` to the newest task name."""
    import mteb

    seen = {name}
    while (successor := mteb.get_task(name).metadata.superseded_by) is not None:
        if successor in seen:  # pragma: no cover - a cycle would be an mteb bug
            break
        seen.add(successor)
        name = successor
    return name


#: The reference code's split preference (``eval_mteb_dataset``).
_SPLIT_PREFERENCE: tuple[str, ...] = (
    "test",
    "test.full",
    "test_expert",
    "validation",
    "dev",
    "train",
)


def _eval_split(task: AbsTask) -> str:
    """One split per task: the first of :data:`_SPLIT_PREFERENCE` the task has, else its first."""
    splits = list(task.metadata.eval_splits)
    return next((split for split in _SPLIT_PREFERENCE if split in splits), splits[0])


def _langscripts(task: AbsTask) -> dict[str, list[str]]:
    """hf subset -> its mteb ``iso3-Script`` tags."""
    return {s: list(tags) for s, tags in task.metadata.hf_subsets_to_langscripts.items()}


def subsets_for_language(task: AbsTask, language: str) -> list[str]:
    """The subsets of ``task`` that count for ``language``: every subset involving it.

    mteb 1.14's ``get_task(name, languages=[iso3])`` as the reference code called it, so STS17's
    es-en counts for Spanish (and for English) next to es-es; a language's score on the task is
    the plain mean over these subsets (``TaskResult.get_score(languages=[iso3])``).
    """
    return [s for s, tags in _langscripts(task).items() if involves(tags, language)]


def _mteb_factory(name: str, subsets: tuple[str, ...], split: str) -> AbsTask:
    import mteb

    task = mteb.get_task(name)
    if task.metadata.is_multilingual:
        task.hf_subsets = list(subsets)
    task.filter_eval_splits([split])
    return task


def _local_factory(spec: LocalTaskSpec) -> AbsTask:
    from .local_mteb import make_mteb_task

    return make_mteb_task(spec)


def local_task_entry(spec: LocalTaskSpec) -> TaskEntry:
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
        digest=spec.digest(),
        factory=partial(_local_factory, spec),
        spec=spec,
    )


def _digest(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def _entry(
    name: str,
    by_language: dict[str, list[str]],
    split: str,
    *,
    crosslingual: bool,
    task: AbsTask,
    instructions: str = "reference",
) -> TaskEntry:
    by_lang = {lang: tuple(subs) for lang, subs in by_language.items()}
    subsets = tuple(dict.fromkeys(s for subs in by_lang.values() for s in subs))
    md = task.metadata
    task_type = MTEB_TYPE_TO_TYPE.get(md.type, md.type.lower())
    tags = _langscripts(task)
    return TaskEntry(
        key=name,
        name=name,
        type=task_type,
        main_metric=md.main_score,
        split=split,
        instruction=instruction_for(name, task_type, instructions),
        subsets_by_language=by_lang,
        crosslingual=crosslingual,
        source="mteb",
        digest=_digest(name, md.dataset.get("revision"), subsets, split),
        factory=partial(_mteb_factory, name, subsets, split),
        subset_languages={
            s: tuple(dict.fromkeys(t.partition("-")[0] for t in tags.get(s, ()))) for s in subsets
        },
    )


def build_lusifer_suite(
    languages: Sequence[str] | None = None,
    *,
    newest_versions: bool = False,
    instructions: str = "reference",
) -> list[TaskEntry]:
    """The per-language LUSIFER benchmark (paper Table 1) as task entries, each with its
    instruction from the ``instructions`` table (:mod:`lusifer.evaluation.instructions`).

    A task listed under several languages is one entry whose subsets are split by language
    (a subset involving two listed languages counts for both). With ``newest_versions`` every
    task is replaced by mteb's newest successor (``lusifer-v2``).
    """
    import mteb

    wanted = list(languages) if languages is not None else list(LUSIFER_LANGUAGES)
    plan: dict[str, dict[str, list[str]]] = {}
    tasks: dict[str, AbsTask] = {}
    for language in wanted:
        for listed in LUSIFER_TASKS.get(language, ()):
            name = latest_version(listed) if newest_versions else listed
            task = tasks.setdefault(name, mteb.get_task(name))
            if task.metadata.is_multilingual:
                subsets = subsets_for_language(task, language)
            else:
                subsets = ["default"]
            if not subsets:
                raise ValueError(f"mteb task {name} has no subset for language {language!r}")
            plan.setdefault(name, {})[language] = subsets
    return [
        _entry(
            name,
            by_lang,
            _eval_split(tasks[name]),
            crosslingual=False,
            task=tasks[name],
            instructions=instructions,
        )
        for name, by_lang in plan.items()
    ]


def build_crosslingual_suite(
    languages: Sequence[str] | None = None, *, instructions: str = "reference"
) -> list[TaskEntry]:
    """The cross-lingual benchmark (paper Table 2), as the reference code ran it, with its
    instructions (the ``instructions`` table).

    Its ``--eval_crosslingual`` called ``mteb.get_task(name, languages=<the 14 languages>)``:
    every subset involving one of ``languages`` (default: the 14), monolingual ones and
    partners outside the 14 included (STS17's it-en counts through English). The task's
    Table-2 score is :func:`lusifer.evaluation.aggregation.crosslingual_task_score`; in the
    per-language table each subset counts for each of ``languages`` it involves.
    """
    import mteb

    wanted = list(languages) if languages is not None else list(LUSIFER_LANGUAGES)
    entries = []
    for name in CROSSLINGUAL_TASKS:
        task = mteb.get_task(name)
        by_language = {lang: subsets_for_language(task, lang) for lang in wanted}
        by_language = {lang: subs for lang, subs in by_language.items() if subs}
        if by_language:
            entries.append(
                _entry(
                    name,
                    by_language,
                    _eval_split(task),
                    crosslingual=True,
                    task=task,
                    instructions=instructions,
                )
            )
    return entries
