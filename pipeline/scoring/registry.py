"""The model-version registry: which versions exist, which one is active, and how much each has left
to score. It needs only the database, so listing or activating a version never imports the model."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.store.db import get_engine

log = logging.getLogger(__name__)


class ScoringError(RuntimeError):
    """The model to score with cannot be determined, loaded, or does not match the registered version."""


def activate_version(version: str, engine: Engine | None = None) -> None:
    """Make ``version`` the active model version; raise ScoringError if it was never registered."""
    engine = engine or get_engine()
    with engine.begin() as conn:
        if not store.activate_model_version(conn, version):
            known = [r.version for r in store.model_versions(conn)]
            raise ScoringError(f"unknown model version {version!r}; registered versions: {known}")
        pending = store.count_pending_articles(conn, version)
    log.info("model version %s is now active", version)
    if pending:
        log.warning("model version %s is active with %d articles it has not scored yet", version, pending)


def pending_count(version: str, engine: Engine | None = None) -> int:
    """Return how many stored articles model version ``version`` has not scored yet."""
    engine = engine or get_engine()
    with engine.connect() as conn:
        return store.count_pending_articles(conn, version)


def list_versions(engine: Engine | None = None) -> list[dict[str, Any]]:
    """Return every registered model version (version, name, path, metrics, created_at, active, scored)."""
    engine = engine or get_engine()
    with engine.connect() as conn:
        return [dict(r._mapping) for r in store.model_versions(conn)]
