"""Training data: load the configured sources (English-only guard included) and draw
batches as a pure function of (seed, step), so a resumed run sees the same batches."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..data.language_guard import GuardReport, ensure_english
from ..data.readers import PairRow, ReadStats, TextRow
from .config import DatasetSampling, DataSource, RunConfig

# The reference's stage-1 instructions (its pretraining_dataset.py). The prompt template
# adds the full stop: the encoder reads "{instruction}.\n{text}".
RECONSTRUCT_INSTRUCTION = "Please reconstruct the following text"
QUESTION_INSTRUCTION = "Please write a question based on this passage"
TASKS = ("reconstruct", "query_to_passage", "passage_to_query")


@dataclass
class LoadedSource:
    """A data source's rows, ready to sample."""

    config: DataSource
    name: str
    pairs: list[PairRow] = field(default_factory=list)
    texts: list[TextRow] = field(default_factory=list)
    guard: GuardReport | None = None
    rows_skipped: int = 0  # empty rows the reader skipped

    def __len__(self) -> int:
        return len(self.pairs) or len(self.texts)


def _read_rows(
    source: DataSource, seed: int, stats: ReadStats
) -> tuple[list[PairRow], list[TextRow]]:
    from ..data import hub, readers

    if source.bundled:
        from ..data.english import load_bundled_english

        names = None if source.bundled == "all" else [source.bundled]
        return load_bundled_english(names, limit_per_dataset=source.limit), []
    limit = source.limit
    if source.path:
        if source.format == "texts":
            return [], readers.read_text_rows(source.path, limit=limit, seed=seed, stats=stats)
        return readers.read_pair_rows(source.path, limit=limit, seed=seed, stats=stats), []
    if source.hf_dataset is None:
        raise ValueError("a data source needs path, bundled or hf_dataset")
    subset = source.hf_subset
    if source.format == "texts":
        return [], hub.load_hf_texts(
            source.hf_dataset,
            source.hf_split,
            source.hf_text_field,
            limit=limit,
            seed=seed,
            stats=stats,
            name=subset,
        )
    return hub.load_hf_pairs(
        source.hf_dataset,
        source.hf_split,
        source.hf_query_field,
        source.hf_positive_field,
        source.hf_negatives_field,
        instruction=source.instruction,
        limit=limit,
        seed=seed,
        stats=stats,
        name=subset,
    ), []


def load_sources(sources: list[DataSource], run: RunConfig) -> list[LoadedSource]:
    """Read every source, apply limits and instructions, and run the English-only guard.

    ``limit`` keeps a random subset drawn with the run's seed; empty rows are skipped and
    counted (``LoadedSource.rows_skipped``, reported in the log). A bundled source with
    ``bundled: all`` is split into one source per data set, since contrastive batches
    come from one data set at a time.
    """
    loaded: list[LoadedSource] = []
    for source in sources:
        stats = ReadStats()
        pairs, texts = _read_rows(source, run.seed, stats)
        if source.instruction:
            for row in pairs:
                row.instruction = source.instruction
        label = source.name or source.path or source.bundled or source.hf_dataset or "data"
        if stats.skipped_rows or stats.dropped_negatives:
            tqdm.write(
                f"{label}: skipped {stats.skipped_rows} empty row(s)"
                + (
                    f", dropped {stats.dropped_negatives} empty negative(s)"
                    if stats.dropped_negatives
                    else ""
                )
            )
        sample_texts = (
            [t.text for t in texts] + [r.query for r in pairs] + [r.positive for r in pairs]
        )
        if not sample_texts:
            raise ValueError(
                f"training data source {label!r} has no rows"
                + (f" ({stats.skipped_rows} empty rows skipped)" if stats.skipped_rows else "")
            )
        guard = ensure_english(
            sample_texts,
            source=str(label),
            min_english_fraction=run.min_english_fraction,
            allow_non_english=run.allow_non_english,
        )
        if pairs and source.bundled == "all":
            by_set: dict[str, list[PairRow]] = {}
            for row in pairs:
                by_set.setdefault(row.dataset, []).append(row)
            for name, rows in sorted(by_set.items()):
                loaded.append(LoadedSource(source, name, pairs=rows, guard=guard))
        else:
            loaded.append(
                LoadedSource(
                    source,
                    str(label),
                    pairs=pairs,
                    texts=texts,
                    guard=guard,
                    rows_skipped=stats.skipped_rows,
                )
            )
    return loaded


def _rng(seed: int, step: int, salt: int = 0) -> random.Random:
    return random.Random(f"{seed}-{step}-{salt}")


def pick_source(
    sources: list[LoadedSource], seed: int, step: int, sampling: DatasetSampling = "proportional"
) -> LoadedSource:
    """One data set per step: drawn in proportion to its size, or each in turn (round robin)."""
    if sampling == "round_robin":
        return sources[step % len(sources)]
    rng = _rng(seed, step, 1)
    return rng.choices(sources, weights=[len(s) for s in sources], k=1)[0]


def sample_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    rng = _rng(seed, step, 2)
    if batch_size <= n:
        return rng.sample(range(n), batch_size)
    return [rng.randrange(n) for _ in range(batch_size)]


@dataclass
class AlignmentExample:
    """Stage 1: what the encoder reads and what the target must produce.

    The encoder reads ``text`` behind ``instruction`` ("{instruction}.\n{text}", as the
    reference's collator); for reconstruction the LM writes that same prompted string,
    for completion it writes ``answer``."""

    text: str  # the English text the encoder reads (without its instruction)
    instruction: str | None
    answer: str | None  # None: reconstruction (the LM writes the prompted text)
    task: str  # reconstruct | query_to_passage | passage_to_query
    source: str  # the data set it came from

    @property
    def distill_text(self) -> str:
        """Distillation's teacher text: the English text the encoder read."""
        return self.text


def draw_alignment_example(
    source: LoadedSource, index: int, rng: random.Random
) -> AlignmentExample:
    """One stage-1 example from row ``index``, with the task drawn by the source's mix."""
    if source.texts:
        text = source.texts[index].text
        return AlignmentExample(text, RECONSTRUCT_INSTRUCTION, None, "reconstruct", source.name)
    row = source.pairs[index]
    positive = rng.choice(row.positives)
    group = source.config.task_group(has_pairs=True)
    if group == "reconstruction":  # the reference's pair-set reconstruction
        text = f"{row.query}. {positive}"
        return AlignmentExample(text, RECONSTRUCT_INSTRUCTION, None, "reconstruct", source.name)
    reconstruct, to_passage = source.config.task_mix()
    draw = rng.random()
    if draw < reconstruct:
        # retrieval sets reconstruct the passage, classification-style sets the query
        text = positive if group == "retrieval" else row.query
        return AlignmentExample(text, RECONSTRUCT_INSTRUCTION, None, "reconstruct", source.name)
    if draw < reconstruct + to_passage:
        return AlignmentExample(
            row.query, row.instruction, positive, "query_to_passage", source.name
        )
    return AlignmentExample(
        positive, QUESTION_INSTRUCTION, row.query, "passage_to_query", source.name
    )


def alignment_batch(
    sources: list[LoadedSource],
    batch_size: int,
    seed: int,
    step: int,
    sampling: DatasetSampling = "proportional",
) -> list[AlignmentExample]:
    """A stage-1 batch from one data set, each example's task drawn by its source's mix
    (the reference's shares; see :class:`~lusifer.training.config.DataSource`)."""
    source = pick_source(sources, seed, step, sampling)
    rng = _rng(seed, step, 3)
    return [
        draw_alignment_example(source, i, rng)
        for i in sample_indices(len(source), batch_size, seed, step)
    ]


@dataclass
class ContrastiveBatch:
    """Stage 2: queries, their positives and hard negatives, and who may be compared."""

    queries: list[str]
    positives: list[str]  # flattened; positive_owner[j] is the query it belongs to
    positive_owner: list[int]
    negatives: list[str]  # flattened; negative_owner[j] is the query it belongs to
    negative_owner: list[int]
    instructions: list[str | None]
    in_batch_negatives: bool
    dataset: str


def contrastive_batch(
    sources: list[LoadedSource],
    batch_size: int,
    num_negatives: int,
    seed: int,
    step: int,
    sampling: DatasetSampling = "proportional",
    num_positives: int = 1,
) -> ContrastiveBatch:
    """A batch from one data set; each row keeps up to ``num_positives`` positives and
    ``num_negatives`` hard negatives, drawn at random (as the reference does)."""
    source = pick_source(sources, seed, step, sampling)
    if not source.pairs:
        raise ValueError(f"contrastive training needs pair data; {source.name!r} has only texts")
    rows = [source.pairs[i] for i in sample_indices(len(source), batch_size, seed, step)]
    rng = _rng(seed, step, 4)
    positives, positive_owner, negatives, negative_owner = [], [], [], []
    for i, row in enumerate(rows):
        pool = row.positives
        for text in rng.sample(pool, min(num_positives, len(pool))):
            positives.append(text)
            positive_owner.append(i)
        for text in rng.sample(row.negatives, min(num_negatives, len(row.negatives))):
            negatives.append(text)
            negative_owner.append(i)
    return ContrastiveBatch(
        queries=[r.query for r in rows],
        positives=positives,
        positive_owner=positive_owner,
        negatives=negatives,
        negative_owner=negative_owner,
        instructions=[r.instruction for r in rows],
        in_batch_negatives=source.config.in_batch_negatives,
        dataset=source.name,
    )
