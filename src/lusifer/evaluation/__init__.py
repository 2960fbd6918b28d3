"""Evaluation of LUSIFER and baseline embedders through mteb 2.x.

The heavy imports (mteb, datasets) happen when a function runs, not on ``import lusifer.evaluation``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import EvaluationReport, evaluate

__all__ = ["EvaluationReport", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)
