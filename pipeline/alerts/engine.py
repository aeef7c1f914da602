"""Alert evaluation: negative-share spikes per dimension value, with an Alertmanager-style lifecycle.

Each rule looks at one dimension (all, topic, ticker, source) over a window ending at ``now`` and compares
every value's share of negative stories with its trailing baseline (``stats.spike_test``). A fingerprint
(rule + dimension + value) moves inactive → pending → firing → resolved:

- a breach makes it pending; it fires once it has breached for ``for`` (0: at once);
- a pending alert whose breach ends goes back to inactive silently (no email);
- a firing alert resolves only after ``keep_firing_for`` without a breach (no flapping);
- after resolving it cannot fire again until ``cooldown`` has passed;
- firing and resolved are transitions: each is recorded once and, unless silenced, queued as an email
  in the outbox in the same transaction as the state change (so a crash loses or doubles nothing).

Transitions of the same dimension value at the same evaluation (say the 6h and 24h rules of one ticker)
go out as one grouped email.

A new firing of a topic, source or all rule is inhibited (recorded and shown, no email for it or its
resolution) when tickers with firing alerts explain it: its test, run again on the window without the
articles that name them, no longer breaches. One company's storm then mails as that company's alerts.
When none of those tickers fires any more and the alert still breaches, unexplained by another firing
ticker, the inhibition is released: its firing email goes out then, and its resolution will too. A firing
held back by a silence is released the same way when the silence ends.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from pipeline import store
from pipeline.alerts import notify
from pipeline.alerts.rules import Rule, load_rules
from pipeline.alerts.stats import SpikeResult, market_activity, spike_test
from pipeline.config import Settings, get_settings

HOUR = timedelta(hours=1)
HEADLINES_PER_EMAIL = 5
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
    """Stories and negative stories of one dimension value: in the window and in its baseline."""

    stories: int
    neg_stories: int
    base_stories: int
    base_neg: int
    activity: float = 1.0  # all news in the window against its baseline rate (count tests only)


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
    neg_stories: int | None = None
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


# --- reports ---------------------------------------------------------------------------------


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
    neg_stories: int | None = None
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


def _view(
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
        neg_stories=state.neg_stories,
        p_value=state.p_value,
        severity=state.severity,
        since=since.isoformat() if since else None,
        transition=transition,
        inhibited_by=list(inhibited_by),
        expected_negatives=None if state.expected_negatives is None else round(state.expected_negatives, 3),
    )


# --- evaluation against the database ---------------------------------------------------------


def _state_from_row(row: Any) -> AlertState:
    data = dict(row._mapping)
    data.pop("fingerprint")
    return AlertState(**data | {"inhibited_by": tuple(data["inhibited_by"] or ())})


def _state_row(state: AlertState) -> dict[str, Any]:
    return {"fingerprint": state.fingerprint, **asdict(state), "inhibited_by": list(state.inhibited_by)}


def _counts_key(rule: Rule) -> tuple[str, timedelta, timedelta, timedelta, bool]:
    """Return what the counts of ``rule`` depend on: rules that share it share one query."""
    return (rule.dimension, rule.window, rule.baseline, rule.baseline_gap, rule.test == "poisson_count")


def _counts(conn: Connection, version: str, rule: Rule, now: datetime) -> dict[str, Counts]:
    end = window_end(now)
    win_start = end - rule.window
    base_end = win_start - rule.baseline_gap
    bounds = (base_end - rule.baseline, base_end, win_start, end)
    rows = store.window_counts(conn, version, rule.dimension, *bounds)
    activity = 1.0
    if rule.test == "poisson_count":
        every = store.window_counts(conn, version, "all", *bounds)
        if every:
            a = every[0]
            activity = market_activity(a.stories, rule.window / HOUR, a.base_stories, rule.baseline / HOUR)
    return {r.value: Counts(r.stories, r.neg_stories, r.base_stories, r.base_neg, activity) for r in rows}


def _event_row(t: Transition) -> dict[str, Any]:
    s = t.state
    return {
        "fingerprint": s.fingerprint,
        "transition": t.transition,
        "at": t.at,
        "rule": s.rule,
        "dimension": s.dimension,
        "value": s.value,
        "severity": s.severity,
        "neg_share": s.neg_share,
        "baseline": s.baseline,
        "stories": s.stories,
        "neg_stories": s.neg_stories,
        "base_stories": s.base_stories,
        "p_value": s.p_value,
        "expected_negatives": s.expected_negatives,
        "silenced": t.silenced,
        "inhibited_by": list(t.inhibited_by),
    }


def _message_id(group_key: str, settings: Settings) -> str:
    # Derived from the group key, so every attempt (and any manual resend) carries the same Message-ID
    # and receiving systems can drop a duplicate.
    domain = settings.alert_from.rpartition("@")[2] or "finsent.localhost"
    return f"<finsent-{hashlib.sha256(group_key.encode()).hexdigest()[:32]}@{domain}>"


def _queue_emails(
    conn: Connection,
    version: str,
    rules: Mapping[str, Rule],
    transitions: Sequence[tuple[Transition, int]],
    now: datetime,
    settings: Settings,
) -> int:
    """Queue one email per group of unsilenced transitions; return how many emails are new or reused."""
    groups: dict[tuple[str, str, str, tuple[str, ...]], list[tuple[Transition, int]]] = defaultdict(list)
    for t, event_id in transitions:
        if t.silenced:
            continue
        recipients = tuple(sorted(rules[t.state.rule].recipients))
        groups[(t.transition, t.state.dimension, t.state.value, recipients)].append((t, event_id))
    for (transition, dimension, value, recipients), members in groups.items():
        group_key = f"{transition}|{dimension}={value}|{now.isoformat()}|{','.join(recipients)}"
        widest = max(members, key=lambda m: m[0].window)[0]
        end = window_end(now)
        headlines = [
            notify.Headline(r.title, r.url, r.source, r.published_at, r.score, r.copies)
            for r in store.negative_headlines(
                conn, version, dimension, value, end - widest.window, end, HEADLINES_PER_EMAIL
            )
        ]
        email = notify.render_alert_email(
            transition,
            dimension,
            value,
            [notify.AlertFigures.from_state(m[0].state, m[0].window) for m in members],
            headlines,
            now,
            _release_note([m[0] for m in members]),
        )
        outbox_id = store.enqueue_email(
            conn,
            {
                "group_key": group_key,
                "message_id": _message_id(group_key, settings),
                "transition": transition,
                "recipients": list(recipients),
                "subject": email.subject,
                "body_text": email.text,
                "body_html": email.html,
                "next_attempt_at": now,
            },
        )
        store.link_events_to_email(conn, [event_id for _, event_id in members], outbox_id)
    return len(groups)


def _release_note(transitions: Sequence[Transition]) -> str | None:
    """Return why a released (held-back) firing among ``transitions`` is emailed only now, or None."""
    released = [t for t in transitions if t.released]
    held_by = sorted({ticker for t in released for ticker in t.released_from})
    notes = []
    if held_by:
        notes.append(
            f"Held back while firing alerts for {', '.join(held_by)} explained it. They have ended and this"
            " alert still fires without their stories."
        )
    if any(not t.released_from for t in released):
        notes.append("Held back by a silence that has ended; this alert still fires.")
    return " ".join(notes) or None


def _inhibited(
    conn: Connection,
    version: str,
    rule: Rule,
    t: Transition,
    firing_tickers: Sequence[str],
    counts: Mapping[str, Counts],
) -> Transition:
    """Return ``t``, inhibited when it is a new firing of a non-ticker rule that ``firing_tickers`` explain.

    Explained: the rule's test on the window without the articles naming those tickers does not breach
    (the baseline stays as it is). The alert still fires and shows; only its emails are held back.
    """
    base = counts.get(t.state.value)
    if (
        t.transition != "firing"
        or t.silenced
        or rule.dimension == "ticker"
        or not rule.inhibit_by_tickers
        or not firing_tickers
        or base is None
    ):
        return t
    end = window_end(t.at)
    stories, neg, found = store.window_counts_without_tickers(
        conn, version, rule.dimension, t.state.value, end - rule.window, end, firing_tickers
    )
    if not found:
        return t
    without = Counts(stories, neg, base.base_stories, base.base_neg)
    if rule_test(rule, without, pooled_prior(counts)).breach:
        return t
    held = replace(t.state, notified=False, inhibited_by=tuple(found))
    return replace(t, state=held, silenced=True, inhibited_by=tuple(found))


def _released(
    conn: Connection,
    version: str,
    rule: Rule,
    state: AlertState,
    firing_tickers: Sequence[str],
    counts: Mapping[str, Counts],
    now: datetime,
    silences: Sequence[Mapping[str, Any]],
) -> tuple[AlertState, Transition | None]:
    """Return a held-back firing alert's state after checking what holds it at ``now``, and the firing
    transition to email when nothing does any more.

    An inhibition (``inhibited_by``) holds it until none of its tickers fires and no other firing ticker
    explains it; a silence (a firing never notified) until no silence matches. Either is released only
    while the alert still breaches: one only kept firing by ``keep_firing_for`` resolves quietly.
    """
    if state.last_breach_at != now:
        return state, None
    if state.inhibited_by:
        if any(ticker in firing_tickers for ticker in state.inhibited_by):
            return state, None
        again = _inhibited(
            conn, version, rule, Transition(state, "firing", now, False, rule.window), firing_tickers, counts
        )
        if again.inhibited_by:
            return again.state, None  # another firing ticker explains it now
    if silenced(silences, rule.name, rule.dimension, state.value):
        return replace(state, inhibited_by=()), None  # a silence holds it back (still or instead)
    freed = replace(state, inhibited_by=(), notified=True)
    return freed, Transition(
        freed, "firing", now, False, rule.window, released_from=state.inhibited_by, released=True
    )


def evaluate(
    now: datetime | None = None,
    *,
    engine: Engine | None = None,
    rules: Sequence[Rule] | None = None,
    settings: Settings | None = None,
) -> AlertReport:
    """Return what evaluating every rule at ``now`` (default: the current time) found and changed.

    State changes, transition events and queued emails commit together in one transaction; a rerun at
    the same ``now`` changes nothing. Emails are only queued here; ``notify.deliver_outbox`` sends them.
    """
    from pipeline.store.db import get_engine

    now = (now or datetime.now(UTC)).astimezone(UTC)
    settings = settings or get_settings()
    rules = list(rules) if rules is not None else load_rules(settings=settings)
    engine = engine or get_engine()
    by_name = {rule.name: rule for rule in rules}
    with engine.begin() as conn:
        store.lock_alert_evaluation(conn)
        version = store.alert_model_version(conn)
        report = AlertReport(now=now, model_version=version)
        states = {row.fingerprint: _state_from_row(row) for row in store.alert_states(conn, list(by_name))}
        silences = [dict(row._mapping) for row in store.active_silences(conn, now)]
        recorded: list[tuple[Transition, int]] = []
        changed_all: dict[str, AlertState] = {}
        counts_cache: dict[tuple[str, timedelta, timedelta, timedelta, bool], dict[str, Counts]] = {}
        stepped: list[tuple[Transition, dict[str, Counts]]] = []
        for rule in rules:
            key = _counts_key(rule)
            if key not in counts_cache:
                counts_cache[key] = _counts(conn, version, rule, now) if version else {}
            changed, transitions = step_rule(rule, observe(rule, counts_cache[key]), states, now, silences)
            changed_all.update(changed)
            stepped += [(t, counts_cache[key]) for t in transitions]
        # Inhibition needs every rule's outcome first: a ticker rule may come after the rules it explains.
        firing_tickers = sorted(
            {
                s.value
                for s in {**states, **changed_all}.values()
                if s.dimension == "ticker" and s.status == "firing"
            }
        )
        for t, value_counts in stepped:
            if version:
                t = _inhibited(conn, version, by_name[t.state.rule], t, firing_tickers, value_counts)
                changed_all[t.state.fingerprint] = t.state  # an inhibited firing is not notified
            # The event references the state row, so that row goes first.
            store.save_alert_state(conn, _state_row(t.state))
            event_id = store.insert_alert_event(conn, _event_row(t))
            if event_id is not None:
                recorded.append((t, event_id))
        released: list[tuple[Transition, int]] = []
        # Held back: a firing that was inhibited, or silenced (never notified).
        held = [
            s
            for s in {**states, **changed_all}.values()
            if s.status == "firing" and (s.inhibited_by or not s.notified) and s.rule in by_name
        ]
        for state in held:
            if version is None:
                break
            rule = by_name[state.rule]
            counts = counts_cache[_counts_key(rule)]
            new, release = _released(conn, version, rule, state, firing_tickers, counts, now, silences)
            changed_all[new.fingerprint] = new
            if release is None or new.firing_since is None:
                continue
            event_id = store.release_alert_event(conn, new.fingerprint, new.firing_since, now)
            if event_id is not None:
                released.append((release, event_id))
        for state in changed_all.values():
            store.save_alert_state(conn, _state_row(state))
        if version:
            report.emails_queued = _queue_emails(conn, version, by_name, recorded + released, now, settings)
        report.new_firing = sum(1 for t, _ in recorded if t.transition == "firing")
        report.released = len(released)
        report.resolved = sum(1 for t, _ in recorded if t.transition == "resolved")
        current = {**states, **changed_all}
        open_states = [s for s in current.values() if s.rule in by_name and s.status != "inactive"]
        report.firing = sum(1 for s in open_states if s.status == "firing")
        fired_now = {t.state.fingerprint: t.inhibited_by for t, _ in recorded if t.transition == "firing"}
        released_now = {t.state.fingerprint: t.released_from for t, _ in released}
        resolved_now = [t.state for t, _ in recorded if t.transition == "resolved"]
        report.alerts = [
            _view(s, transition="firing", inhibited_by=fired_now[s.fingerprint])
            if s.fingerprint in fired_now
            else _view(s, transition="released", inhibited_by=released_now[s.fingerprint])
            if s.fingerprint in released_now
            else _view(s)
            for s in open_states
        ]
        report.alerts += [_view(s, "resolved", "resolved") for s in resolved_now]
        report.alerts.sort(key=lambda a: (a.status != "firing", a.rule, a.dimension, a.value))
        outbox = store.outbox_counts(conn)
    report.emails_pending = outbox.get("pending", 0) + outbox.get("sending", 0)
    report.emails_failed = outbox.get("failed", 0)
    report.emails_unconfirmed = outbox.get("unconfirmed", 0)
    return report


def run_alerts(
    now: datetime | None = None,
    *,
    engine: Engine | None = None,
    rules: Sequence[Rule] | None = None,
    settings: Settings | None = None,
) -> AlertReport:
    """Return the report of evaluating at ``now``, then delivering the outbox (`finsent alerts`)."""
    settings = settings or get_settings()
    report = evaluate(now, engine=engine, rules=rules, settings=settings)
    delivery = notify.deliver_outbox(engine=engine, settings=settings)
    report.emails_sent = delivery.sent
    report.emails_pending = delivery.pending
    report.emails_failed = delivery.failed
    report.emails_unconfirmed = delivery.unconfirmed
    return report
