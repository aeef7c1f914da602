"""Promotion of a newly trained model: evaluate it next to the active one, switch only if nothing regresses.

A candidate is promoted when no metric on the labeled valid splits is worse than the active model's by
more than a tolerance. Promotion scores all stored history with the candidate first, then activates it,
so readers never see a mix of two model versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from pipeline.config import get_settings
from pipeline.scoring import score as scoring
from pipeline.scoring.registry import activate_version, pending_count
from pipeline.store.db import get_engine

TASKS = ("topic", "sentiment")
HIGHER_IS_BETTER = ("accuracy", "macro_f1", "weighted_f1")


class PromotionError(RuntimeError):
    """A candidate model that cannot be evaluated or promoted (missing data, unknown directory)."""


def metric_regressions(current: dict, candidate: dict, tolerance: float) -> list[str]:
    """Return one line per metric where ``candidate`` is worse than ``current`` by more than ``tolerance``.

    Both are ``models.evaluate`` summaries (``{task: {metric: value}}``); ECE is lower-is-better.
    """
    worse: list[str] = []
    for task in TASKS:
        old, new = current.get(task, {}), candidate.get(task, {})
        for metric in (*HIGHER_IS_BETTER, "ece"):
            if metric not in old or metric not in new:
                continue
            drop = (old[metric] - new[metric]) if metric in HIGHER_IS_BETTER else (new[metric] - old[metric])
            if drop > tolerance:
                worse.append(f"{task}.{metric}: {old[metric]:.4f} -> {new[metric]:.4f}")
    return worse


def evaluate_against_active(
    candidate_dir: Path, data_dir: Path | None = None, engine: Engine | None = None
) -> dict:
    """Return ``{"candidate": summary, "active": summary}`` on the valid splits (no baseline refit)."""
    from models.evaluate import evaluate

    data_dir = data_dir or get_settings().data_dir
    if data_dir is None:
        raise PromotionError("evaluating a candidate needs the labeled data: set FINSENT_DATA_DIR")
    engine = engine or get_engine()
    candidate = scoring.load_classifier(Path(candidate_dir))
    active = scoring.active_classifier(engine)
    return {
        "candidate": evaluate(candidate, Path(data_dir), baseline=False).summary,
        "active": evaluate(active, Path(data_dir), baseline=False).summary,
    }


def promote_if_no_regression(
    candidate_dir: Path, evaluation: dict, *, tolerance: float | None = None, engine: Engine | None = None
) -> dict[str, Any]:
    """Return what happened to the candidate: promoted (rescored and active) or kept back, and why."""
    tolerance = get_settings().promote_tolerance if tolerance is None else tolerance
    candidate, active = evaluation["candidate"], evaluation["active"]
    result: dict[str, Any] = {
        "candidate": candidate.get("model_version"),
        "active": active.get("model_version"),
        "tolerance": tolerance,
        "regressions": metric_regressions(active, candidate, tolerance),
        "promoted": False,
    }
    if result["regressions"] or result["candidate"] == result["active"]:
        return result
    engine = engine or get_engine()
    report = scoring.rescore(engine, model_dir=Path(candidate_dir))
    pending = pending_count(report.model_version, engine)
    if pending:
        # New articles landed while rescoring; the next run of this task (or `finsent rescore`) finishes.
        raise PromotionError(f"{report.model_version} still has {pending} unscored articles; not activated")
    activate_version(report.model_version, engine)
    return {**result, "promoted": True, "rescored": report.scored}
