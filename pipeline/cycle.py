"""One full cycle: ingest the sources, score what is new, evaluate the alert rules and send due emails.

``finsent run`` calls ``run_cycle``; the Airflow DAGs call the same stage functions as separate tasks.
A failing stage does not stop the later ones (scoring still catches up on what earlier runs stored,
alerts still see the rollups), but it is recorded and makes the cycle's ``ok`` false.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from pipeline.alerts import run_alerts
from pipeline.config import Settings, get_settings
from pipeline.ingest import Source, load_sources, run_ingest
from pipeline.scoring import score_pending
from pipeline.store.db import get_engine, migrate

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("ingest", "score", "alerts")


@dataclass
class CycleReport:
    """Each stage's report (as a dict) and the error of any stage that failed."""

    started_at: datetime
    ingest: dict[str, Any] | None = None
    score: dict[str, Any] | None = None
    alerts: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        """Return the report as one JSON-ready dict (``finsent run --json`` prints it)."""
        return {
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "ingest": self.ingest,
            "score": self.score,
            "alerts": self.alerts,
            "errors": self.errors,
        }


def run_cycle(
    engine: Engine | None = None,
    *,
    sources: Sequence[Source] | None = None,
    sources_path: Path | None = None,
    model_dir: Path | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> CycleReport:
    """Return the report of one ingest → score → alerts cycle.

    ``sources`` (or the file ``sources_path``; default: the ``sources`` setting) are polled; scoring uses
    the active model version (``model_dir`` becomes it when none is active); alerts are evaluated at
    ``now`` (default: the current time) and due emails are sent.
    """
    settings = settings or get_settings()
    engine = engine or get_engine()
    migrate(engine)  # idempotent; the first cycle on a fresh database needs no separate step
    report = CycleReport(started_at=datetime.now(UTC))
    started = time.perf_counter()

    def stage(name: str, action: Any) -> dict[str, Any] | None:
        try:
            return action().as_dict()
        except Exception as exc:  # one broken stage must not keep the others from running unattended
            log.exception("cycle stage %s failed", name)
            report.errors[name] = f"{type(exc).__name__}: {exc}"
            return None

    def ingest() -> Any:
        chosen = list(sources) if sources is not None else load_sources(sources_path or settings.sources)
        return run_ingest(chosen, engine=engine, settings=settings)

    report.ingest = stage("ingest", ingest)
    report.score = stage(
        "score", lambda: score_pending(engine, model_dir=model_dir, batch_size=settings.batch_size)
    )
    report.alerts = stage("alerts", lambda: run_alerts(now, engine=engine, settings=settings))
    report.seconds = time.perf_counter() - started
    failed = f", failed: {', '.join(sorted(report.errors))}" if report.errors else ""
    log.info("cycle done in %.1fs%s", report.seconds, failed)
    return report
