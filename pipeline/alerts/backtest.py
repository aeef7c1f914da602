"""Backtests: replay hourly alert evaluation over stored rollups and list what would have fired.

The replay uses the same test (``lifecycle.observe`` semantics) and lifecycle (``lifecycle.step_rule``) as
live evaluation, but keeps its state in memory: it never reads or writes the live alert state, the
events or the outbox, and sends no mail. Story counts are loaded once per dimension and windows are
summed with cumulative sums, so a month of hourly evaluations takes seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.alerts.lifecycle import (
    DEFAULT_PRIOR_SHARE,
    HOUR,
    AlertState,
    Observation,
    step_rule,
    value_watched,
    window_end,
)
from pipeline.alerts.rules import Rule, load_rules
from pipeline.alerts.stats import COUNT_TESTS, count_value, dispersion, market_activity, spike_test

# Float slack for the vectorised pre-filter, which must never drop a value spike_test would flag.
_EPS = 1e-9


@dataclass
class StorySeries:
    """Hourly story counts of one dimension: ``stories[v, h]`` for value ``values[v]`` at ``start + h``,
    with the negative stories and the expected negatives (sums of p(negative)) beside them."""

    dimension: str
    values: list[str]
    start: datetime
    stories: np.ndarray
    neg_stories: np.ndarray
    neg_expected: np.ndarray
    neg_expected_sq: np.ndarray  # sums of squared story probabilities (see stats.dispersion)

    @classmethod
    def from_rows(cls, dimension: str, rows: Sequence[Any], start: datetime, end: datetime) -> StorySeries:
        """Return the series of ``rows`` (value, bucket, stories, neg_stories, neg_expected,
        neg_expected_sq) for buckets in [start, end)."""
        hours = int((end - start) / HOUR)
        values = sorted({r.value for r in rows})
        index = {v: i for i, v in enumerate(values)}
        stories = np.zeros((len(values), hours), dtype=np.int64)
        neg = np.zeros((len(values), hours), dtype=np.int64)
        expected = np.zeros((len(values), hours), dtype=np.float64)
        expected_sq = np.zeros((len(values), hours), dtype=np.float64)
        for r in rows:
            h = int((r.bucket - start) / HOUR)
            if 0 <= h < hours:
                stories[index[r.value], h] += r.stories
                neg[index[r.value], h] += r.neg_stories
                expected[index[r.value], h] += r.neg_expected
                expected_sq[index[r.value], h] += r.neg_expected_sq
        return cls(dimension, values, start, stories, neg, expected, expected_sq)


@dataclass
class Episode:
    """One alert that would have fired: when, until when, and the figures at its peak."""

    rule: str
    dimension: str
    value: str
    severity: str
    fired_at: str
    resolved_at: str | None
    peak_neg_share: float
    baseline: float
    stories: int
    p_value: float
    expected_negatives: float | None = None  # count rules: what the window expected, at the peak
    neg_stories: float | None = None  # negative stories at the peak (expected negatives if so counted)


@dataclass
class BacktestReport:
    """Every episode of a replay plus totals; ``as_dict`` is the CLI's JSON line."""

    start: str
    end: str
    evaluations: int
    model_version: str | None
    episodes: list[Episode] = field(default_factory=list)

    @property
    def fired(self) -> int:
        return len(self.episodes)

    def as_dict(self) -> dict[str, Any]:
        by_rule: dict[str, int] = {}
        for e in self.episodes:
            by_rule[e.rule] = by_rule.get(e.rule, 0) + 1
        return {
            "start": self.start,
            "end": self.end,
            "evaluations": self.evaluations,
            "model_version": self.model_version,
            "fired": self.fired,
            "by_rule": by_rule,
            "episodes": [asdict(e) for e in self.episodes],
        }


def evaluation_times(start: datetime, end: datetime) -> list[datetime]:
    """Return the hourly evaluation times from ``start`` (rounded up to the hour) to ``end`` inclusive."""
    t = window_end(start)
    times = []
    while t <= end:
        times.append(t)
        t += HOUR
    return times


def _observations(
    rule: Rule,
    series: StorySeries,
    cum_s: np.ndarray,
    cum_n: np.ndarray,
    t: datetime,
    watched: np.ndarray,
    every: np.ndarray | None = None,
    cum_sq: np.ndarray | None = None,
) -> list[Observation]:
    """Return the observations of values that could breach at ``t`` (others cannot, see ``_EPS``).

    ``cum_n`` holds the cumulative negatives as ``rule`` counts them: stories, or expected negatives (then
    ``cum_sq`` their squares, for the dispersion)."""
    end = int((t - series.start) / HOUR)
    win = int(rule.window / HOUR)
    base = int(rule.baseline / HOUR)
    gap = int(rule.baseline_gap / HOUR)

    def span(cum: np.ndarray, a: int, b: int) -> np.ndarray:
        a, b = max(a, 0), max(min(b, cum.shape[1] - 1), 0)
        return cum[:, b] - cum[:, min(a, b)]

    n = span(cum_s, end - win, end)
    k = span(cum_n, end - win, end)
    n0 = span(cum_s, end - win - gap - base, end - win - gap)
    k0 = span(cum_n, end - win - gap - base, end - win - gap)
    pooled_n, pooled_k = n0.sum(), k0.sum()
    prior = pooled_k / pooled_n if pooled_n else DEFAULT_PRIOR_SHARE
    base_share = (k0 + prior * rule.prior_stories) / (n0 + rule.prior_stories)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n > 0, k / np.maximum(n, 1), 0.0)
    activity = 1.0
    if rule.test in COUNT_TESTS and every is not None:
        activity = market_activity(
            int(span(every, end - win, end)[0]),
            win,
            int(span(every, end - win - gap - base, end - win - gap)[0]),
            base,
        )
    spread = 1.0
    if rule.negatives == "probabilities" and cum_sq is not None:
        base_sq = span(cum_sq, end - win - gap - base, end - win - gap)
        spread = dispersion(float(k0.sum()), float(base_sq.sum()))
    possible = (
        watched
        & (n >= rule.min_stories)
        & (k >= rule.min_negative)
        & (share - base_share >= rule.min_rise - _EPS)
    )
    candidates = np.nonzero(possible)[0]
    return [
        Observation(
            rule,
            series.values[v],
            spike_test(
                k[v].item(),  # an int for negative stories, a float for expected negatives
                int(n[v]),
                k0[v].item(),
                int(n0[v]),
                test=rule.test,
                alpha=rule.alpha,
                min_stories=rule.min_stories,
                min_rise=rule.min_rise,
                prior_share=float(prior),
                prior_stories=rule.prior_stories,
                min_negative=rule.min_negative,
                window_hours=win,
                baseline_hours=base,
                activity=activity,
                dispersion=spread,
            ),
        )
        for v in candidates
    ]


def replay(
    rules: Sequence[Rule], series: Mapping[str, StorySeries], times: Sequence[datetime]
) -> list[Episode]:
    """Return the episodes that evaluating ``rules`` at each of ``times`` would have fired, in order."""
    episodes: list[Episode] = []
    open_episodes: dict[str, Episode] = {}
    states: dict[str, AlertState] = {}
    cums: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for dim, s in series.items():
        zeros = np.zeros((len(s.values), 1), dtype=np.int64)
        cums[dim] = (
            np.hstack([zeros, np.cumsum(s.stories, axis=1)]),
            np.hstack([zeros, np.cumsum(s.neg_stories, axis=1)]),
            np.hstack([zeros, np.cumsum(s.neg_expected, axis=1)]),
            np.hstack([zeros, np.cumsum(s.neg_expected_sq, axis=1)]),
        )
    watched = {
        (rule.name, dim): np.array([value_watched(rule, v) for v in s.values], dtype=bool)
        for rule in rules
        for dim, s in series.items()
        if dim == rule.dimension
    }
    every = cums["all"][0] if "all" in cums else None  # all news, for the count tests' activity
    for t in times:
        for rule in rules:
            story = series.get(rule.dimension)
            if story is None or not story.values:
                continue
            cum_s, cum_labels, cum_expected, cum_sq = cums[rule.dimension]
            cum_n = cum_expected if rule.negatives == "probabilities" else cum_labels
            obs = _observations(
                rule, story, cum_s, cum_n, t, watched[(rule.name, rule.dimension)], every, cum_sq
            )
            changed, transitions = step_rule(rule, obs, states, t)
            states.update(changed)
            for o in obs:
                e = open_episodes.get(o.fingerprint)
                if e is not None and o.result.breach and o.result.neg_share > e.peak_neg_share:
                    e.peak_neg_share = round(o.result.neg_share, 4)
                    e.baseline = round(o.result.baseline, 4)
                    e.stories = o.result.stories
                    e.p_value = o.result.p_value
                    e.expected_negatives = o.result.expected
                    e.neg_stories = count_value(o.result.neg_stories)
            for tr in transitions:
                st = tr.state
                if tr.transition == "firing":
                    e = Episode(
                        st.rule,
                        st.dimension,
                        st.value,
                        st.severity,
                        t.isoformat(),
                        None,
                        round(st.neg_share or 0.0, 4),
                        round(st.baseline or 0.0, 4),
                        st.stories or 0,
                        st.p_value if st.p_value is not None else 1.0,
                        st.expected_negatives,
                        None if st.neg_stories is None else count_value(st.neg_stories),
                    )
                    episodes.append(e)
                    open_episodes[st.fingerprint] = e
                elif st.fingerprint in open_episodes:
                    open_episodes.pop(st.fingerprint).resolved_at = t.isoformat()
    return episodes


def load_series(
    engine: Engine, version: str, dimensions: Sequence[str], start: datetime, end: datetime
) -> dict[str, StorySeries]:
    """Return each dimension's hourly story series for buckets in [start, end) from the rollups."""
    out: dict[str, StorySeries] = {}
    with engine.connect() as conn:
        for dim in dimensions:
            rows = store.rollup_story_series(conn, version, dim, start, end)
            out[dim] = StorySeries.from_rows(dim, rows, start, end)
    return out


def backtest(
    start: datetime,
    end: datetime,
    *,
    engine: Engine | None = None,
    rules: Sequence[Rule] | None = None,
    model_version: str | None = None,
) -> BacktestReport:
    """Return what hourly evaluation from ``start`` to ``end`` over the stored rollups would have fired,
    on ``model_version``'s rollups (default: the version alerts read)."""
    from pipeline.store.db import get_engine

    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end < start:
        raise ValueError(f"backtest end {end.isoformat()} is before its start {start.isoformat()}")
    engine = engine or get_engine()
    rules = list(rules) if rules is not None else load_rules()
    times = evaluation_times(start, end)
    with engine.connect() as conn:
        version = model_version or store.alert_model_version(conn)
    report = BacktestReport(start.isoformat(), end.isoformat(), len(times), version)
    if version is None or not times or not rules:
        return report
    lookback = max(rule.window + rule.baseline_gap + rule.baseline for rule in rules)
    first = times[0] - lookback
    # Count tests read the activity of all news beside their own dimension.
    dims = {r.dimension for r in rules} | ({"all"} if any(r.test in COUNT_TESTS for r in rules) else set())
    series = load_series(engine, version, sorted(dims), first, times[-1])
    report.episodes = replay(rules, series, times)
    return report
