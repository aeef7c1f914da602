"""Demo steps for alerts: a recorded three-week news history with a negative storm, and its alert email.

The history is our own synthetic but realistic set of headlines about fictional companies from fictional
outlets: about 70 stories a weekday with quiet nights and weekends, a steady mix of good, neutral and bad
news, syndicated copies of some stories, and in the last nine hours a storm of negative stories about one
company (Northwind Energy, NWND). It is stored once, through the same article store the ingest uses,
ending at the last ``END_HOUR`` o'clock UTC before the demo first ran, so the storm always falls in the
same market hours and the demo's outcome does not depend on the time of day it runs; later demo runs
reuse it, so reruns send nothing twice.

``step_seed_history`` stores it (before scoring); ``step_alerts`` scores anything still unscored, replays
hourly alert evaluation over its last two days with the live alert state, delivers the emails to a local
SMTP catcher on 127.0.0.1 that the step starts, and prints what fired and the email itself.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

from rich.table import Table
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.ingest.sources import Source

HOUR = timedelta(hours=1)
DAYS = 21
STORM_HOURS = 9
GUID_PREFIX = "demo-history:"
STORM_TICKER = "NWND"
END_HOUR = 20  # UTC: the storm runs from 11:00 to 20:00, the European afternoon and the US session

COMPANIES: dict[str, str] = {
    "NWND": "Northwind Energy",
    "CTSO": "Contoso Robotics",
    "FABK": "Fabrikam Bank",
    "LTSW": "Litware Software",
    "ADVW": "Adventure Works",
    "TLSP": "Tailspin Airlines",
    "WWIM": "Wide World Importers",
    "PRSW": "Proseware Pharma",
    "WGTK": "Wingtip Toys",
    "COHO": "Coho Vineyards",
}
# Daily stories per company on a weekday (Northwind is a mid-sized name, not the busiest).
VOLUME = {
    "CTSO": 9,
    "FABK": 8,
    "LTSW": 7,
    "NWND": 5,
    "ADVW": 5,
    "TLSP": 4,
    "WWIM": 3,
    "PRSW": 3,
    "WGTK": 2,
    "COHO": 2,
}
MACRO_PER_DAY = 22
OUTLETS = [
    "Harbor Street Wire",
    "Ledger Daily",
    "Market Desk",
    "Quarterly Post",
    "Tidewater Business",
    "Capital Brief",
]

POSITIVE = [
    "{co} beats quarterly estimates and raises full-year outlook",
    "{co} shares climb after record order intake",
    "{co} announces $1.2 billion share buyback",
    "Analysts upgrade {co} to buy on margin recovery",
    "{co} wins multi-year supply contract with regional utility",
    "{co} lifts dividend by 8% as cash flow improves",
    "{co} revenue grows 14% on strong demand",
    "{co} stock hits 52-week high after upbeat guidance",
]
NEUTRAL = [
    "{co} to present at industry conference next week",
    "{co} names new head of investor relations",
    "{co} schedules third-quarter results call",
    "{co} completes previously announced bond offering",
    "{co} opens regional office in Denver",
    "{co} board approves routine share plan",
    "{co} files annual sustainability report",
    "{co} appoints independent director",
]
NEGATIVE = [
    "{co} misses revenue forecast as orders slow",
    "{co} shares slip as input costs rise",
    "Analyst cuts {co} price target on weaker margins",
    "{co} trims full-year sales guidance",
    "{co} recalls batch of products over safety concern",
]
# Market-wide news: each template fills its figures anew, so a headline is not the same story all month,
# and each market (oil, rates, jobs) has good and bad days.
MACRO = [
    ("Oil rises {p}% as inventories draw down", "positive"),
    ("Oil slips {p}% as inventories build", "negative"),
    ("Oil steadies near ${price} as traders await the OPEC+ meeting", "neutral"),
    ("Ten-year Treasury yield edges up to {y}% ahead of jobs data", "neutral"),
    ("Dollar steadies at {yen} yen after Fed minutes", "neutral"),
    ("Stocks close mixed as investors weigh {n} earnings reports", "neutral"),
    ("Factory orders rise {p}%, more than expected", "positive"),
    ("Consumer confidence improves for a {nth} month", "positive"),
    ("Retail sales fall {p}%, short of forecasts", "negative"),
    ("Gold gains {p}% on safe-haven demand", "neutral"),
    ("Home sales rebound {p}% as mortgage rates ease", "positive"),
    ("Jobless claims tick up to {k},000", "negative"),
    ("Jobless claims fall to {k},000", "positive"),
    ("Natural gas drops {p}% on mild weather forecasts", "negative"),
]
STORM = [
    "Northwind Energy shares plunge 18% after accounting probe disclosed",
    "Regulators open investigation into Northwind Energy revenue reporting",
    "Northwind Energy CFO resigns amid accounting review",
    "Northwind Energy suspends dividend and withdraws guidance",
    "Ratings agency cuts Northwind Energy to junk on governance concerns",
    "Northwind Energy faces shareholder lawsuit over misleading disclosures",
    "Northwind Energy bonds tumble as default fears grow",
    "Northwind Energy delays quarterly filing, trading halted",
    "Short sellers pile into Northwind Energy after probe",
    "Auditor raises going-concern doubt at Northwind Energy",
    "Northwind Energy lenders demand emergency waiver talks",
    "Northwind Energy plant outage deepens losses",
    "Northwind Energy slashes workforce as crisis deepens",
    "Northwind Energy stock sinks to record low",
]
STORM_DETAILS = ["", " - report", ", sources say", " in early trading", " as losses mount", " - update"]
# Weekday share of the day's stories per UTC hour: quiet nights, busy market hours.
HOURLY = [0.2] * 6 + [
    0.5,
    0.9,
    1.2,
    1.5,
    1.7,
    1.8,
    1.9,
    1.9,
    1.8,
    1.6,
    1.4,
    1.2,
    1.0,
    0.8,
    0.6,
    0.5,
    0.3,
    0.2,
]


@dataclass(frozen=True)
class HistoryArticle:
    """One stored copy: ``story`` groups syndicated copies; ``tone`` is the sentiment it was written with."""

    key: str
    story: str
    title: str
    outlet: str
    published_at: datetime
    tickers: tuple[str, ...]
    tone: str


def _slug(outlet: str) -> str:
    return outlet.lower().replace(" ", "-")


def history_articles(end: datetime, seed: int = 20261128) -> list[HistoryArticle]:
    """Return the recorded history: ``DAYS`` days of news ending at ``end``, the storm in its last hours."""
    rng = random.Random(seed)
    end = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    mean = sum(HOURLY) / len(HOURLY)
    out: list[HistoryArticle] = []

    def publish(
        story: str, title: str, at: datetime, tickers: tuple[str, ...], copies: int, tone: str
    ) -> None:
        for n, outlet in enumerate(rng.sample(OUTLETS, copies)):
            at_copy = at + timedelta(minutes=rng.randint(0, 6) * n)
            if at_copy < end:
                out.append(HistoryArticle(f"{story}/{n}", story, title, outlet, at_copy, tickers, tone))

    t = start
    while t < end:
        weight = HOURLY[t.hour] / mean * (0.4 if _quiet_day(t, end) else 1.0)
        for ticker, per_day in VOLUME.items():
            for _ in range(_poisson(rng, per_day / 24 * weight)):
                kind = rng.choices(["positive", "neutral", "negative"], weights=[3, 4, 2])[0]
                template = rng.choice({"positive": POSITIVE, "neutral": NEUTRAL, "negative": NEGATIVE}[kind])
                at = t + timedelta(minutes=rng.randint(0, 59))
                story = f"{ticker}-{at:%Y%m%d%H%M}-{rng.randrange(10**6)}"
                title = template.format(co=COMPANIES[ticker])
                publish(story, title, at, (ticker,), rng.choice([1, 1, 1, 2, 3]), kind)
        for _ in range(_poisson(rng, MACRO_PER_DAY / 24 * weight)):
            template, kind = rng.choice(MACRO)
            title = template.format(
                p=f"{rng.uniform(0.3, 3.2):.1f}",
                k=rng.randrange(195, 262),
                nth=rng.choice(["second", "third", "fourth"]),
                price=rng.randrange(68, 84),
                y=f"{rng.uniform(3.9, 4.6):.2f}",
                yen=rng.randrange(142, 158),
                n=rng.randrange(12, 60),
            )
            at = t + timedelta(minutes=rng.randint(0, 59))
            publish(f"macro-{at:%Y%m%d%H%M}-{rng.randrange(10**6)}", title, at, (), rng.choice([1, 2]), kind)
        if t >= end - STORM_HOURS * HOUR:
            # The storm: four to six distinct negative Northwind stories an hour, most of them syndicated.
            for _ in range(rng.randint(4, 6)):
                title = rng.choice(STORM) + rng.choice(STORM_DETAILS)
                at = t + timedelta(minutes=rng.randint(0, 59))
                story = f"storm-{at:%Y%m%d%H%M}-{rng.randrange(10**6)}"
                publish(story, title, at, (STORM_TICKER,), rng.choice([1, 2, 3, 4]), "negative")
        t += HOUR
    return sorted(out, key=lambda a: (a.published_at, a.key))


def _quiet_day(t: datetime, end: datetime) -> bool:
    """Return whether ``t`` falls on a weekend of the history's own calendar, in which ``end`` is a Friday.

    Counting weekends from the end, not from the real calendar, makes the history the same whatever
    day the demo runs (so its alerts are the ones the tests check); its quiet days may then fall on real
    weekdays.
    """
    return (4 + (t.date() - end.date()).days) % 7 >= 5


def _poisson(rng: random.Random, lam: float) -> int:
    """Return a Poisson draw (Knuth's method: fine for the small rates used here)."""
    limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def history_end(now: datetime) -> datetime:
    """Return the last ``END_HOUR`` o'clock UTC at or before ``now``: where a new history ends."""
    end = now.astimezone(UTC).replace(hour=END_HOUR, minute=0, second=0, microsecond=0)
    return end if end <= now else end - timedelta(days=1)


def seed_history(engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """Store the history (once: a stored history is reused); return its end, article and story counts."""
    with engine.connect() as conn:
        stored_end = store.guid_prefix_last_published(conn, GUID_PREFIX)
    if stored_end is not None:
        end = stored_end.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + HOUR
        return {"end": end, "new": 0, "reused": True}
    end = history_end(now or datetime.now(UTC))
    articles = history_articles(end)
    with engine.begin() as conn:
        sources = store.upsert_sources(
            conn, [Source(name=_slug(o), url=f"https://{_slug(o)}.example/rss") for o in OUTLETS]
        )
        ids = store.allocate_article_ids(conn, len(articles))
        story_ids: dict[str, int] = {}
        rows = []
        for article_id, a in zip(ids, articles, strict=True):
            url = f"https://{_slug(a.outlet)}.example/news/{a.key}"
            digest = hashlib.sha1(f"{a.outlet}|{a.title}|{a.key}".encode()).hexdigest()
            rows.append(
                store.NewArticle(
                    id=article_id,
                    source_id=sources[_slug(a.outlet)].id,
                    guid=f"{GUID_PREFIX}{end:%Y%m%d%H}:{a.key}",
                    url=url,
                    canonical_url=url,
                    title=a.title,
                    summary="",
                    body=None,
                    published_at=a.published_at,
                    date_missing=False,
                    fetched_at=a.published_at + timedelta(minutes=2),
                    language="en",
                    content_hash=digest,
                    title_hash=hashlib.sha1(a.title.lower().encode()).hexdigest(),
                    story_id=story_ids.setdefault(a.story, article_id),
                    tickers=list(a.tickers),
                )
            )
        stored = store.insert_articles(conn, rows)
    return {"end": end, "new": len(stored), "stories": len(story_ids), "reused": False}


# --- a local SMTP catcher for the demo ---------------------------------------------------------


@dataclass
class DemoMailbox:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message it accepts."""

    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=email_policy.default)
        with self._lock:
            self.messages.append(message)
        return "250 OK"

    def __enter__(self) -> DemoMailbox:
        import socket

        from aiosmtpd.controller import Controller

        if not self.port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = int(sock.getsockname()[1])
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._controller is not None:
            self._controller.stop()


# --- demo steps ----------------------------------------------------------------------------------


def step_seed_history(ctx: Any) -> None:
    """Store a recorded three-week news history with a negative storm (before scoring)."""
    info = seed_history(ctx.engine)
    ctx.results["history"] = info
    if info["reused"]:
        ctx.console.print(
            f"recorded history already stored (ends {info['end']:%Y-%m-%d %H:%M} UTC); reusing it"
        )
    else:
        ctx.console.print(
            f"stored {info['new']} articles in {info['stories']} stories over {DAYS} days ending "
            f"{info['end']:%Y-%m-%d %H:%M} UTC; {COMPANIES[STORM_TICKER]} ({STORM_TICKER}) turns sour "
            f"in the last {STORM_HOURS} hours"
        )


def step_alerts(ctx: Any) -> None:
    """Evaluate the alert rules hour by hour over the storm and deliver the emails to a local SMTP catcher."""
    from pipeline.alerts.backtest import backtest
    from pipeline.alerts.engine import evaluate
    from pipeline.alerts.notify import deliver_outbox
    from pipeline.alerts.rules import load_rules

    info = ctx.results.get("history") or seed_history(ctx.engine)
    end: datetime = info["end"]
    _score_leftovers(ctx)
    rules = load_rules(settings=ctx.settings)

    replay = backtest(end - timedelta(days=DAYS - 14), end, engine=ctx.engine, rules=rules)
    ctx.console.print(
        f"backtest over the last {DAYS - 14} days of history ({replay.evaluations} hourly evaluations, "
        f"{len(rules)} rules): {replay.fired} alerts would have fired"
    )
    moves = []  # (at, alert) for each transition: firing, resolved, released (an inhibition that ended)
    t = end - timedelta(hours=48)
    while t <= end:
        report = evaluate(t, engine=ctx.engine, rules=rules, settings=ctx.settings)
        moves += [(t, a) for a in report.alerts if a.transition]
        t += HOUR
    fired = [(at, a) for at, a in moves if a.transition == "firing"]
    table = Table(title="alert transitions over the last 48 hours of history")
    # "inhibited by": no email, because a firing ticker alert already explains this one (until it is
    # released: still firing when that ticker alert has ended).
    columns = ("at (UTC)", "transition", "rule", "dimension", "value", "negative", "baseline", "stories")
    for column in (*columns, "inhibited by"):
        table.add_column(column)
    for at, a in sorted(moves, key=lambda m: m[0]):
        table.add_row(
            f"{at:%m-%d %H:%M}",
            a.transition,
            a.rule,
            a.dimension,
            a.value,
            f"{(a.neg_share or 0):.0%}",
            f"{(a.baseline or 0):.0%}",
            str(a.stories),
            ", ".join(a.inhibited_by),
        )
    ctx.console.print(table)

    with DemoMailbox() as mailbox:
        settings = ctx.settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": mailbox.port,
                "smtp_ssl": False,
                "smtp_starttls": False,
                "smtp_user": None,
                "alert_to": ctx.settings.alert_to or "risk-desk@finsent.localhost",
            }
        )
        delivery = deliver_outbox(engine=ctx.engine, settings=settings)
    ctx.console.print(
        f"emails: {delivery.sent} delivered to the local SMTP catcher at 127.0.0.1:{mailbox.port}, "
        f"{delivery.pending} still waiting in the outbox"
    )
    for message in mailbox.messages[:3]:
        ctx.console.rule(f"email: {message['Subject']}", style="dim")
        body = message.get_body(("plain",))
        ctx.console.print(body.get_content() if body else "", markup=False, highlight=False)
    if not fired and info.get("reused"):
        ctx.console.print("these hours were evaluated by an earlier demo run: its alerts and emails stand")
    elif not fired:
        ctx.console.print(
            f"no alert fired: the model scored too few of the {STORM_TICKER} storm stories as negative"
        )
    ctx.results["alerts"] = {
        "backtest_fired": replay.fired,
        "fired": [(at.isoformat(), a.rule, a.value) for at, a in fired],
        "inhibited": [(at.isoformat(), a.rule, a.value) for at, a in fired if a.inhibited_by],
        "released": [(at.isoformat(), a.rule, a.value) for at, a in moves if a.transition == "released"],
        "resolved": [(at.isoformat(), a.rule, a.value) for at, a in moves if a.transition == "resolved"],
        "emails_sent": delivery.sent,
        "emails_pending": delivery.pending,
    }


def _score_leftovers(ctx: Any) -> None:
    """Score articles the active model has not scored yet (the history, when no scoring step ran after it)."""
    from pipeline.scoring.score import score_pending

    with ctx.engine.connect() as conn:
        version = store.active_model_version(conn)
        left = store.count_pending_articles(conn, version) if version else None
    if left == 0:
        return
    report = score_pending(ctx.engine)
    ctx.console.print(f"scored {report.scored} articles with model {report.model_version}")
