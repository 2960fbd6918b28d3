"""Training data: load the configured sources (English-only guard included) and draw
batches as a pure function of (seed, step), so a resumed run sees the same batches."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..data.language_guard import GuardReport, ensure_english
from ..data.readers import PairRow, TextRow
from .config import DatasetSampling, DataSource, RunConfig

RECONSTRUCT_PROMPT = "Please reconstruct the following text.\n"
QUESTION_PROMPT = "Please write a question based on this passage.\n"


@dataclass
class LoadedSource:
    """A data source's rows, ready to sample."""

    config: DataSource
    name: str
    pairs: list[PairRow] = field(default_factory=list)
    texts: list[TextRow] = field(default_factory=list)
    guard: GuardReport | None = None

    def __len__(self) -> int:
        return len(self.pairs) or len(self.texts)


def _read_rows(source: DataSource) -> tuple[list[PairRow], list[TextRow]]:
    from ..data import readers

    if source.bundled:
        from ..data.english import load_bundled_english

        names = None if source.bundled == "all" else [source.bundled]
        return load_bundled_english(names, limit_per_dataset=source.limit), []
    if source.path:
        if source.format == "texts":
            return [], readers.read_text_rows(source.path)
        return readers.read_pair_rows(source.path), []
    subset = {"name": source.hf_subset} if source.hf_subset else {}
    if source.format == "texts":
        return [], readers.load_hf_texts(
            source.hf_dataset, source.hf_split, source.hf_text_field, limit=source.limit, **subset
        )
    return readers.load_hf_pairs(
        source.hf_dataset,
        source.hf_split,
        source.hf_query_field,
        source.hf_positive_field,
        source.hf_negatives_field,
        instruction=source.instruction,
        limit=source.limit,
        **subset,
    ), []


def load_sources(sources: list[DataSource], run: RunConfig) -> list[LoadedSource]:
    """Read every source, apply limits and instructions, and run the English-only guard.

    A bundled source with ``bundled: all`` is split into one source per data set, since
    contrastive batches come from one data set at a time.
    """
    loaded: list[LoadedSource] = []
    for source in sources:
        pairs, texts = _read_rows(source)
        if source.limit is not None and not source.bundled:  # bundled: per data set, by the loader
            pairs, texts = pairs[: source.limit], texts[: source.limit]
        if source.instruction:
            for row in pairs:
                row.instruction = source.instruction
        label = source.name or source.path or source.bundled or source.hf_dataset or "data"
        sample_texts = (
            [t.text for t in texts] + [r.query for r in pairs] + [r.positive for r in pairs]
        )
        if not sample_texts:
            raise ValueError(f"training data source {label!r} has no rows")
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
            loaded.append(LoadedSource(source, str(label), pairs=pairs, texts=texts, guard=guard))
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
    """Stage 1: what the encoder reads and what the target must produce."""

    source_text: str  # encoder side (multilingual encoder input)
    target_text: str  # LM objective: the text the target LM must generate
    distill_text: str  # distillation objective: English text whose target embedding is the teacher


def alignment_batch(
    sources: list[LoadedSource],
    batch_size: int,
    seed: int,
    step: int,
    sampling: DatasetSampling = "proportional",
) -> list[AlignmentExample]:
    """Mix reconstruction and completion tasks per example, with the paper's probabilities."""
    source = pick_source(sources, seed, step, sampling)
    rng = _rng(seed, step, 3)
    examples = []
    for i in sample_indices(len(source), batch_size, seed, step):
        if source.texts:
            text = source.texts[i].text
            examples.append(AlignmentExample(text, RECONSTRUCT_PROMPT + text, text))
            continue
        row = source.pairs[i]
        cfg = source.config
        if rng.random() < cfg.reconstruct_prob:
            text = row.query if rng.random() < 0.5 else row.positive
            examples.append(AlignmentExample(text, RECONSTRUCT_PROMPT + text, text))
        elif rng.random() < cfg.query_to_passage_prob:
            examples.append(AlignmentExample(row.query, row.positive, row.query))
        else:
            examples.append(
                AlignmentExample(row.positive, QUESTION_PROMPT + row.query, row.positive)
            )
    return examples


@dataclass
class ContrastiveBatch:
    """Stage 2: queries, their positives, hard negatives, and who may be compared."""

    queries: list[str]
    positives: list[str]
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
) -> ContrastiveBatch:
    """A batch from one data set; each row keeps up to ``num_negatives`` hard negatives."""
    source = pick_source(sources, seed, step, sampling)
    if not source.pairs:
        raise ValueError(f"contrastive training needs pair data; {source.name!r} has only texts")
    rows = [source.pairs[i] for i in sample_indices(len(source), batch_size, seed, step)]
    negatives, owner = [], []
    for i, row in enumerate(rows):
        for neg in row.negatives[:num_negatives]:
            negatives.append(neg)
            owner.append(i)
    return ContrastiveBatch(
        queries=[r.query for r in rows],
        positives=[r.positive for r in rows],
        negatives=negatives,
        negative_owner=owner,
        instructions=[r.instruction for r in rows],
        in_batch_negatives=source.config.in_batch_negatives,
        dataset=source.name,
    )
