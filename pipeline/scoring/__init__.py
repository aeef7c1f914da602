"""Scoring: the active model scores stored articles; hourly rollups follow; candidates are promoted
only when nothing regresses.

The registry and the rollups need only the database; the names that need the model (torch: seconds to
import) load on first use, so ``finsent models list`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.scoring.registry import ScoringError, activate_version, list_versions, pending_count
from pipeline.scoring.rollups import rebuild_rollups

if TYPE_CHECKING:
    from pipeline.scoring.promotion import PromotionError, evaluate_against_active, promote_if_no_regression
    from pipeline.scoring.score import ScoreReport, rescore, score_pending

_NEEDS_MODEL = {
    "PromotionError": "pipeline.scoring.promotion",
    "evaluate_against_active": "pipeline.scoring.promotion",
    "promote_if_no_regression": "pipeline.scoring.promotion",
    "ScoreReport": "pipeline.scoring.score",
    "rescore": "pipeline.scoring.score",
    "score_pending": "pipeline.scoring.score",
}


def __getattr__(name: str) -> Any:
    if name in _NEEDS_MODEL:
        return getattr(importlib.import_module(_NEEDS_MODEL[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PromotionError",
    "ScoreReport",
    "ScoringError",
    "activate_version",
    "evaluate_against_active",
    "list_versions",
    "pending_count",
    "promote_if_no_regression",
    "rebuild_rollups",
    "rescore",
    "score_pending",
]
