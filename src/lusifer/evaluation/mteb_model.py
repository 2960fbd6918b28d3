"""mteb's embedder protocol around any :class:`lusifer.types.TextEmbedder`.

mteb calls ``encode(DataLoader, task_metadata=..., hf_split=..., hf_subset=..., prompt_type=...)``;
this wrapper picks the task's English instruction, maps mteb's prompt type to the encoder's
``kind`` (documents only for the corpus side of retrieval/reranking), encodes each distinct
text once per wrapper (a text several tasks share, e.g. a common corpus, is encoded once
per instruction and kind; once only for embedders that ignore instructions), and returns
float32 rows in input order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction
from mteb.types import PromptType

from ..types import TextEmbedder, reads_instructions
from .entry import MTEB_TYPE_TO_TYPE
from .instructions import instruction_for

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from torch.utils.data import DataLoader


def model_slug(name: str) -> str:
    """A file-system and mteb friendly form of a model name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return slug or "model"


class MtebEncoder(AbsEncoder):
    """Run a lusifer ``TextEmbedder`` through mteb 2.x.

    Args:
        embedder: the model (anything with ``encode(texts, *, instruction, kind, ...)`` and ``name``).
        instructions: task name -> instruction, overriding the table and the task's own prompt.
        instruction_table: "reference" (the reference code's instructions, default) or
            "lusifer" (ours): see :mod:`lusifer.evaluation.instructions`.
        show_progress: forwarded to ``embedder.encode``.
        route: a routed LUSIFER model's route ("auto", "native" or "connector"; None: its
            default, "auto").
    """

    def __init__(
        self,
        embedder: TextEmbedder,
        instructions: Mapping[str, str | None] | None = None,
        *,
        show_progress: bool = False,
        route: str | None = None,
        instruction_table: str = "reference",
    ) -> None:
        from ..model.routing import with_route

        instruction_for("", table=instruction_table)  # an unknown table fails here
        embedder = with_route(embedder, route)
        self.model = embedder
        self.instructions = dict(instructions or {})
        self.instruction_table = instruction_table
        self.show_progress = show_progress
        # (instruction, kind, text) -> unit-length row; embedders that ignore instructions
        # (``uses_instructions = False``) share rows across tasks with different ones
        self._cache: dict[tuple[str | None, str, str], np.ndarray] = {}
        self.reads_instructions = reads_instructions(embedder)
        name = getattr(embedder, "name", None) or type(embedder).__name__
        self.mteb_model_meta: ModelMeta = ModelMeta.create_empty(
            overwrites={
                "name": f"lusifer/{model_slug(name)}",
                "revision": "local",
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
                "use_instructions": True,
                "modalities": ["text"],
            }
        )

    def task_instruction(self, task_metadata: TaskMetadata) -> str | None:
        """Explicit override, else the instruction table's, else the task's prompt, else a
        per-type default."""
        name = task_metadata.name
        if name in self.instructions:
            return self.instructions[name]
        found = instruction_for(name, table=self.instruction_table)
        if found:
            return found
        prompt = task_metadata.prompt
        if isinstance(prompt, str) and prompt:
            return prompt
        if isinstance(prompt, dict) and prompt.get("query"):
            return prompt["query"]
        return instruction_for(name, MTEB_TYPE_TO_TYPE.get(task_metadata.type, "retrieval"))

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts: list[str] = []
        for batch in inputs:
            texts.extend(batch["text"])
        kind = "document" if prompt_type == PromptType.document else "query"
        instruction = self.task_instruction(task_metadata)
        scope = instruction if self.reads_instructions else None
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        self.prefetch(
            texts, instruction=instruction, kind=kind, batch_size=kwargs.get("batch_size")
        )
        return np.stack([self._cache[(scope, kind, t)] for t in texts])

    def prefetch(
        self,
        texts: list[str],
        *,
        instruction: str | None,
        kind: str,
        batch_size: int | None = None,
    ) -> int:
        """Encode the texts not yet cached in one call (length-sorted batches inside
        ``encode``), so tasks that share texts, or all of a suite's tasks read ahead of
        time, encode each distinct (text, instruction, kind) once. Returns how many were
        encoded."""
        scope = instruction if self.reads_instructions else None
        missing = [t for t in dict.fromkeys(texts) if (scope, kind, t) not in self._cache]
        if not missing:
            return 0
        vectors = self.model.encode(
            missing,
            instruction=instruction,
            kind=kind,
            batch_size=int(batch_size or 32),
            normalize=True,
            show_progress=self.show_progress,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(missing):
            raise ValueError(
                f"{self.mteb_model_meta.name}: encode returned {vectors.shape[0]} rows "
                f"for {len(missing)} texts"
            )
        self._cache.update({(scope, kind, t): v for t, v in zip(missing, vectors, strict=True)})
        return len(missing)
