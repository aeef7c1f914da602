"""What an alert evaluation reports: one AlertView per open or just-resolved alert, and the totals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pipeline.alerts.lifecycle import AlertState
from pipeline.alerts.stats import count_value


@dataclass
class AlertView:
    """One alert as ``finsent alerts --json`` lists it."""

    rule: str
    dimension: str
    value: str
    status: str
    neg_share: float | None
    baseline: float | None
    stories: int | None
    neg_stories: float | None = None  # expected negatives when the rule counts those
    p_value: float | None = None
    severity: str = "warning"
    since: str | None = None
    # "firing" or "resolved" when this evaluation made that transition; "released" when it emailed a
    # held-back firing whose inhibition or silence has ended; else None.
    transition: str | None = None
    # For a transition of this evaluation: the tickers whose firing alerts inhibited its email.
    inhibited_by: list[str] = field(default_factory=list)
    expected_negatives: float | None = None  # count rules: what the window expected at the usual rate


@dataclass
class AlertReport:
    """What one evaluation found and did; ``as_dict`` is the CLI's JSON line."""

    now: datetime
    model_version: str | None
    firing: int = 0
    new_firing: int = 0
    resolved: int = 0
    released: int = 0
    emails_queued: int = 0
    emails_sent: int = 0
    emails_pending: int = 0
    emails_failed: int = 0
    emails_unconfirmed: int = 0
    alerts: list[AlertView] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["now"] = self.now.isoformat()
        return data


def alert_view(
    state: AlertState,
    status: str | None = None,
    transition: str | None = None,
    inhibited_by: Sequence[str] = (),
) -> AlertView:
    since = state.firing_since if state.status == "firing" else state.pending_since
    return AlertView(
        rule=state.rule,
        dimension=state.dimension,
        value=state.value,
        status=status or state.status,
        neg_share=None if state.neg_share is None else round(state.neg_share, 4),
        baseline=None if state.baseline is None else round(state.baseline, 4),
        stories=state.stories,
        neg_stories=None if state.neg_stories is None else count_value(state.neg_stories),
        p_value=state.p_value,
        severity=state.severity,
        since=since.isoformat() if since else None,
        transition=transition,
        inhibited_by=list(inhibited_by),
        expected_negatives=None if state.expected_negatives is None else round(state.expected_negatives, 3),
    )
