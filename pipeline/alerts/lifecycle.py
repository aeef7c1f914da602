"""The alert lifecycle, pure: counts per dimension value → observations → state transitions.

A fingerprint (rule + dimension + value) moves inactive → pending → firing → resolved (``advance``);
``step_rule`` applies one rule's observations at one evaluation time. Nothing here reads the database:
the engine (live) and the backtest (replay) both call it."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.alerts.rules import Rule
from pipeline.alerts.stats import SpikeResult, spike_test

HOUR = timedelta(hours=1)

# Share assumed for the prior when a dimension has no baseline at all yet (a fresh installation).
DEFAULT_PRIOR_SHARE = 0.3


def fingerprint(rule: str, dimension: str, value: str) -> str:
    """Return the identity of one alert: rule, dimension and value."""
    return f"{rule}/{dimension}={value}"


def window_end(now: datetime) -> datetime:
    """Return the end of the evaluation window at ``now``: ``now`` rounded up to the hour.

    Buckets are hours by published_at; evaluating at 12:30 looks at the partial 12:00 bucket, evaluating
    at 13:00 at complete hours only.
    """
    now = now.astimezone(UTC)
    floor = now.replace(minute=0, second=0, microsecond=0)
    return floor if floor == now else floor + HOUR


@dataclass(frozen=True)
class Counts:
    """Stories and negative stories of one dimension value: in the window and in its baseline.

    The negatives are whole stories or expected negatives (sums of p(negative)), as the rule counts them.
    """

    stories: int
    neg_stories: float
    base_stories: int
    base_neg: float
    activity: float = 1.0  # all news in the window against its baseline rate (count tests only)
    dispersion: float = 1.0  # expected negatives: their variance against a whole-story count's


@dataclass(frozen=True)
class Observation:
    """One rule's test of one dimension value at one time."""

    rule: Rule
    value: str
    result: SpikeResult

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule.name, self.rule.dimension, self.value)


def value_watched(rule: Rule, value: str) -> bool:
    """Return whether ``rule`` watches dimension value ``value`` (its ``values`` globs; none = all)."""
    return not rule.values or any(fnmatch.fnmatchcase(value, pattern) for pattern in rule.values)


def observe(rule: Rule, counts: Mapping[str, Counts]) -> list[Observation]:
    """Return the spike test of every watched value in ``counts`` for ``rule``.

    The prior for thin baselines is the pooled baseline share of all values of the dimension.
    """
    watched = {value: c for value, c in counts.items() if value_watched(rule, value)}
    prior = pooled_prior(counts)
    return [Observation(rule, value, rule_test(rule, c, prior)) for value, c in sorted(watched.items())]


def pooled_prior(counts: Mapping[str, Counts]) -> float:
    """Return the baseline share of negative stories pooled over every value of a dimension."""
    pooled_stories = sum(c.base_stories for c in counts.values())
    pooled_neg = sum(c.base_neg for c in counts.values())
    return pooled_neg / pooled_stories if pooled_stories else DEFAULT_PRIOR_SHARE


def rule_test(rule: Rule, c: Counts, prior: float) -> SpikeResult:
    """Return ``rule``'s spike test of one value's counts."""
    return spike_test(
        c.neg_stories,
        c.stories,
        c.base_neg,
        c.base_stories,
        test=rule.test,
        alpha=rule.alpha,
        min_stories=rule.min_stories,
        min_rise=rule.min_rise,
        prior_share=prior,
        prior_stories=rule.prior_stories,
        min_negative=rule.min_negative,
        window_hours=rule.window / HOUR,
        baseline_hours=rule.baseline / HOUR,
        activity=c.activity,
        dispersion=c.dispersion,
    )


@dataclass(frozen=True)
class AlertState:
    """Where one fingerprint is in its lifecycle, and what its last evaluation saw."""

    rule: str
    dimension: str
    value: str
    severity: str
    status: str = "inactive"  # inactive | pending | firing
    pending_since: datetime | None = None
    firing_since: datetime | None = None
    last_breach_at: datetime | None = None
    resolved_at: datetime | None = None
    notified: bool = False
    neg_share: float | None = None
    baseline: float | None = None
    stories: int | None = None
    neg_stories: float | None = None  # expected negatives under ``negatives: probabilities``
    base_stories: int | None = None
    p_value: float | None = None
    evaluated_at: datetime | None = None
    inhibited_by: tuple[str, ...] = ()  # while firing: the tickers whose alerts hold its email back
    expected_negatives: float | None = None  # count rules: what the window expected at the usual rate

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.dimension, self.value)


def advance(state: AlertState, rule: Rule, breach: bool, now: datetime) -> tuple[AlertState, str | None]:
    """Return the state after one evaluation at ``now`` and the transition it made (firing/resolved/None)."""
    if breach:
        if state.status == "firing":
            return replace(state, last_breach_at=now), None
        pending_since = state.pending_since if state.status == "pending" and state.pending_since else now
        state = replace(state, status="pending", pending_since=pending_since, last_breach_at=now)
        cooling = state.resolved_at is not None and now < state.resolved_at + rule.cooldown
        if not cooling and now - pending_since >= rule.for_:
            return replace(state, status="firing", firing_since=now), "firing"
        return state, None
    if state.status == "pending":
        return replace(state, status="inactive", pending_since=None), None
    if state.status == "firing":
        last = state.last_breach_at or state.firing_since or now
        if now - last >= rule.keep_firing_for:
            return replace(state, status="inactive", pending_since=None, resolved_at=now), "resolved"
    return state, None


def with_observation(state: AlertState, result: SpikeResult | None, now: datetime) -> AlertState:
    """Return ``state`` carrying the figures of its latest test (kept as they were when not tested)."""
    if result is None:
        return replace(state, evaluated_at=now)
    return replace(
        state,
        neg_share=result.neg_share,
        baseline=result.baseline,
        stories=result.stories,
        neg_stories=result.neg_stories,
        base_stories=result.base_stories,
        p_value=result.p_value,
        expected_negatives=result.expected,
        evaluated_at=now,
    )


def silenced(silences: Iterable[Mapping[str, Any]], rule: str, dimension: str, value: str) -> bool:
    """Return whether any silence matches (glob patterns on rule, dimension and value; None = any)."""
    labels = {"rule": rule, "dimension": dimension, "value": value}
    return any(
        all(s[key] is None or fnmatch.fnmatchcase(labels[key], s[key]) for key in labels) for s in silences
    )


@dataclass(frozen=True)
class Transition:
    """A firing or resolved transition of one fingerprint, with the figures behind it."""

    state: AlertState
    transition: str
    at: datetime
    silenced: bool
    window: timedelta
    # Tickers whose firing alerts explain this one (then ``silenced`` too: no email).
    inhibited_by: tuple[str, ...] = ()
    # A held-back firing emailed now (``transition`` "firing"), and the tickers whose alerts had explained
    # it (none when a silence held it back).
    released: bool = False
    released_from: tuple[str, ...] = ()


def step_rule(
    rule: Rule,
    observations: Sequence[Observation],
    states: Mapping[str, AlertState],
    now: datetime,
    silences: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, AlertState], list[Transition]]:
    """Return the changed states and the transitions of one rule's evaluation at ``now``.

    Values without an observation (no stories in window or baseline) count as not breaching. A state
    already evaluated at or after ``now`` is left alone: time does not run backwards for live state
    (replaying the past is what backtests, with their own scratch state, are for).
    """
    by_fp = {o.fingerprint: o for o in observations}
    fingerprints = set(by_fp) | {fp for fp, s in states.items() if s.rule == rule.name}
    changed: dict[str, AlertState] = {}
    transitions: list[Transition] = []
    for fp in sorted(fingerprints):
        obs = by_fp.get(fp)
        state = states.get(fp)
        if state is None:
            if obs is None or not obs.result.breach:
                continue  # an inactive value with no history needs no row
            state = AlertState(rule.name, rule.dimension, obs.value, rule.severity)
        elif state.evaluated_at is not None and now <= state.evaluated_at:
            continue
        state = replace(state, severity=rule.severity)
        new, transition = advance(state, rule, obs is not None and obs.result.breach, now)
        new = with_observation(new, obs.result if obs else None, now)
        if transition is not None:
            mute = silenced(silences, rule.name, rule.dimension, new.value)
            if transition == "firing":
                new = replace(new, notified=not mute)
            else:
                mute = mute or not state.notified
                new = replace(new, notified=False, inhibited_by=())
            transitions.append(Transition(new, transition, now, mute, rule.window))
        changed[fp] = new
    return changed, transitions
