"""What a stage records besides its weights: ``log.jsonl`` (one line per logged step,
rewritten from the resumed step on), the ``summary.json`` of what it drew, a warning when
stage 2 collapses; and a Ctrl-C, as a request to stop after the step."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..files import atomic_write
from .data import TASKS, AlignmentExample, ContrastiveBatch, LoadedSource

SUMMARY_NAME = "summary.json"
LOG_NAME = "log.jsonl"
# Stage 2 counts as collapsed when a batch's embeddings are this alike for this many steps.
COLLAPSE_COSINE = 0.999
COLLAPSE_STEPS = 10


def _logged_step(line: str) -> float:
    """The step of a log line; a line a kill cut short counts as after every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


class StageRecord:
    """The log, draw counts and collapse watch of one stage (files on the main process
    only)."""

    def __init__(self, stage: str, output_dir: Path, *, main: bool, tracker: Any = None) -> None:
        self.stage = stage
        self.output_dir = Path(output_dir)
        self.main = main
        self.tracker = tracker  # accelerate's ``log`` when the run reports to trackers
        # per source, stage-1 task counts; per step, the positives and hard negatives
        # per query that reached the loss
        self.task_counts: dict[str, dict[str, int]] = {}
        self.positives_per_query: list[int] = []
        self.negatives_per_query: list[int] = []
        self._collapsed_steps = 0

    # ------------------------------------------------------------------ draws
    def count_alignment(self, drawn: list[AlignmentExample]) -> None:
        for example in drawn:
            counts = self.task_counts.setdefault(example.source, dict.fromkeys(TASKS, 0))
            counts[example.task] += 1

    def count_contrastive(self, full: ContrastiveBatch) -> None:
        for counts, owners in (
            (self.positives_per_query, full.positive_owner),
            (self.negatives_per_query, full.negative_owner),
        ):
            counts.extend(owners.count(i) for i in range(len(full.queries)))

    # -------------------------------------------------------------------- log
    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            with (self.output_dir / LOG_NAME).open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker({f"{self.stage}/{k}": v for k, v in record.items()}, step=record["step"])

    def trim_log(self, step: int) -> None:
        """Drop log lines after ``step`` (a resumed run rewrites them)."""
        log = self.output_dir / LOG_NAME
        if self.main and log.exists():
            lines = [ln for ln in log.read_text().splitlines() if _logged_step(ln) <= step]
            atomic_write(log, "".join(ln + "\n" for ln in lines))

    def watch_collapse(self, step: int, mean_cosine: float, learning_rate: float) -> None:
        """Warn once when stage 2 has collapsed: every text of ``COLLAPSE_STEPS`` batches
        in a row got nearly the same embedding (InfoNCE then sits at ln(batch size))."""
        self._collapsed_steps = self._collapsed_steps + 1 if mean_cosine > COLLAPSE_COSINE else 0
        if self._collapsed_steps == COLLAPSE_STEPS:
            warnings.warn(
                f"{self.stage} step {step}: the embeddings have collapsed (mean cosine "
                f"between a batch's texts above {COLLAPSE_COSINE} for {COLLAPSE_STEPS} steps); "
                f"lower {self.stage}.learning_rate (now {learning_rate}) or add "
                f"{self.stage}.target_distill",
                stacklevel=3,
            )

    # ---------------------------------------------------------------- summary
    def summary(
        self, objective: str, total_steps: int, sources: list[LoadedSource], start: int = 0
    ) -> dict[str, Any]:
        """What this stage read and drew: rows kept and skipped per source, and (for the
        steps run in this process, from ``start``) the stage-1 task mix per source and the
        positives and hard negatives per query that reached the loss."""
        mix = {
            source: {task: n / max(sum(counts.values()), 1) for task, n in counts.items()}
            for source, counts in sorted(self.task_counts.items())
        }
        return {
            "stage": self.stage,
            "objective": objective,
            "steps": total_steps,
            "steps_run_from": start,
            "rows": {s.name: len(s) for s in sources},
            "rows_skipped": {s.name: s.rows_skipped for s in sources},
            "task_mix": mix if objective == "alignment" else {},
            "examples_drawn": {s: sum(c.values()) for s, c in sorted(self.task_counts.items())},
            # the most any query had, and the mean (rows with fewer keep what they have)
            "positives_per_query": max(self.positives_per_query, default=None),
            "negatives_per_query": max(self.negatives_per_query, default=None),
            "positives_per_query_mean": _mean(self.positives_per_query),
            "negatives_per_query_mean": _mean(self.negatives_per_query),
        }

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.main:
            atomic_write(self.output_dir / SUMMARY_NAME, json.dumps(summary, indent=2))


class StopRequest:
    """Ctrl-C during a stage: the first finishes the step, saves a checkpoint and stops
    (``requested``); a second aborts."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def on_ctrl_c(self) -> Iterator[None]:
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            tqdm.write("Interrupted: saving a checkpoint after this step (Ctrl-C again to abort).")

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            previous = None
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
