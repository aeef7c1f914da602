"""Scoring: the active model scores stored articles; hourly rollups follow; candidates are promoted
only when nothing regresses."""

from pipeline.scoring.promotion import PromotionError, evaluate_against_active, promote_if_no_regression
from pipeline.scoring.rollups import rebuild_rollups
from pipeline.scoring.score import (
    ScoreReport,
    ScoringError,
    activate_version,
    list_versions,
    rescore,
    score_pending,
)

__all__ = [
    "PromotionError",
    "ScoreReport",
    "ScoringError",
    "activate_version",
    "evaluate_against_active",
    "list_versions",
    "promote_if_no_regression",
    "rebuild_rollups",
    "rescore",
    "score_pending",
]
