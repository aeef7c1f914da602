"""Alert emails: rendering (plain text + HTML) and delivery of the outbox over SMTP.

Delivery is exactly-once per outbox row, as far as SMTP allows:

1. claim: a transaction flips one due row from ``pending`` to ``sending`` and commits;
2. send: MAIL FROM, RCPT TO, then DATA with the row's stable Message-ID;
3. record: a second transaction marks the row ``sent``.

A failure before DATA is handed over (server down, connection refused, sender or all recipients
refused, DATA rejected with an error reply) certainly delivered nothing: the row goes back to
``pending`` with a backoff, its attempts and last error recorded, and is retried later. The crash window
is between the server accepting DATA and step 3 committing: the server has the mail, the row still says
``sending``. Such rows are never resent automatically — after ``CLAIM_LEASE`` they become
``unconfirmed`` (listed with their error), because a second copy of an alert is the failure this outbox
exists to prevent. The same goes for a connection lost during DATA. Every attempt of a row carries the
same Message-ID, so a manual resend can be deduplicated by the receiving side: ``finsent outbox list``
shows such rows and ``finsent outbox requeue ID`` (``requeue``) sends one again, an operator's decision
after checking the mailbox.

With no SMTP host configured, emails stay ``pending`` in the outbox and nothing is attempted.
"""

from __future__ import annotations

import email.policy
import html
import logging
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.config import Settings, get_settings

log = logging.getLogger(__name__)

# A claimed row older than this whose sender never came back is marked unconfirmed.
CLAIM_LEASE = timedelta(minutes=10)
RETRY_BASE = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)
MAX_ATTEMPTS = 12  # with the backoff above: about eight hours of retries before giving up
SMTP_TIMEOUT_S = 30.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


# --- rendering (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """A negative story behind an alert (its most negative copy); title and URL are untrusted input."""

    title: str
    url: str | None
    source: str
    published_at: datetime
    score: float
    copies: int = 1


@dataclass(frozen=True)
class AlertFigures:
    """The numbers one rule saw when it transitioned."""

    rule: str
    severity: str
    window: timedelta
    neg_share: float
    baseline: float
    stories: int
    neg_stories: int
    base_stories: int
    p_value: float
    expected_negatives: float | None = None  # count rules: the negative stories the window expected

    @classmethod
    def from_state(cls, state: Any, window: timedelta) -> AlertFigures:
        return cls(
            rule=state.rule,
            severity=state.severity,
            window=window,
            neg_share=state.neg_share or 0.0,
            baseline=state.baseline or 0.0,
            stories=state.stories or 0,
            neg_stories=state.neg_stories or 0,
            base_stories=state.base_stories or 0,
            p_value=1.0 if state.p_value is None else state.p_value,
            expected_negatives=getattr(state, "expected_negatives", None),
        )


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def one_line(text: str, limit: int = 200) -> str:
    """Return ``text`` with control characters (newlines included) collapsed to spaces, cut to ``limit``."""
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def safe_link(url: str | None) -> str | None:
    """Return ``url`` if it is an http(s) URL worth linking, else None (no javascript:, data:, ...)."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def _span(window: timedelta) -> str:
    hours = int(window.total_seconds() // 3600)
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def render_alert_email(
    transition: str,
    dimension: str,
    value: str,
    figures: Sequence[AlertFigures],
    headlines: Sequence[Headline],
    at: datetime,
    note: str | None = None,
) -> RenderedEmail:
    """Return subject, plain text and HTML of the email for one group of transitions; ``note``, when
    given, is a paragraph of its own after the first line (why an email comes late, say)."""
    if not figures:
        raise ValueError(f"an alert email needs at least one rule's figures ({dimension}={value})")
    top = max(figures, key=lambda f: (_SEVERITY_RANK.get(f.severity, 1), f.neg_share))
    label = "all stories" if dimension == "all" else f"{dimension} {one_line(value, 80)}"
    state = "FIRING" if transition == "firing" else "RESOLVED"
    # Resolved means the test no longer breaches, not that the share is back at its baseline.
    what = "negative news spike" if transition == "firing" else "no longer a significant negative spike"
    subject = (
        f"[finsent] {state} {top.severity}: {label}: {what}, {_pct(top.neg_share)} negative "
        f"vs {_pct(top.baseline)} baseline ({_span(top.window)})"
    )
    when = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    text = [f"{state}: {what} for {label}", f"Evaluated at {when}.", ""]
    if note:
        text += [note, ""]
    for f in figures:
        text += [
            f"Rule {f.rule} ({f.severity}, window {_span(f.window)}):",
            f"  Negative share: {_pct(f.neg_share)} of {f.stories} stories ({f.neg_stories} negative) "
            f"in the last {_span(f.window)}",
            f"  Baseline:       {_pct(f.baseline)} over the trailing baseline ({f.base_stories} stories)",
            *(
                [f"  Expected:       {f.expected_negatives:.2f} negative stories at its usual rate"]
                if f.expected_negatives is not None
                else []
            ),
            f"  p-value:        {f.p_value:.2g}",
            "",
        ]
    if headlines:
        text.append("Top negative headlines:")
        for h in headlines:
            copies = f", {h.copies} copies" if h.copies > 1 else ""
            text.append(f"  - {one_line(h.title)} ({one_line(h.source, 80)}{copies})")
            link = safe_link(h.url)
            if link:
                text.append(f"    {link}")
    else:
        text.append("No negative headlines in the window.")
    text += ["", "Counts are distinct stories: syndicated copies of one story count once."]

    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(f.rule)}</td><td>{esc(f.severity)}</td><td>{_span(f.window)}</td>"
        f"<td><b>{_pct(f.neg_share)}</b> ({f.neg_stories}/{f.stories})"
        + (
            f"<br>{f.neg_stories} negative vs {f.expected_negatives:.2f} expected"
            if f.expected_negatives is not None
            else ""
        )
        + "</td>"
        f"<td>{_pct(f.baseline)} ({f.base_stories} stories)</td><td>{f.p_value:.2g}</td></tr>"
        for f in figures
    )
    items = []
    for h in headlines:
        title = esc(one_line(h.title))
        link = safe_link(h.url)
        anchor = f'<a href="{esc(link, quote=True)}">{title}</a>' if link else title
        copies = f", {h.copies} copies" if h.copies > 1 else ""
        items.append(f"<li>{anchor} <small>({esc(one_line(h.source, 80))}{copies})</small></li>")
    body_html = (
        '<!DOCTYPE html><html><body style="font-family:sans-serif">'
        f"<h2>{state}: {esc(what)} for {esc(label)}</h2><p>Evaluated at {when}.</p>"
        + (f"<p>{esc(note)}</p>" if note else "")
        + '<table border="1" cellpadding="4" cellspacing="0">'
        "<tr><th>rule</th><th>severity</th><th>window</th><th>negative share</th><th>baseline</th>"
        f"<th>p-value</th></tr>{rows}</table>"
        + (
            f"<h3>Top negative headlines</h3><ol>{''.join(items)}</ol>"
            if items
            else "<p>No negative headlines in the window.</p>"
        )
        + "<p><small>Counts are distinct stories: syndicated copies of one story count once.</small></p>"
        "</body></html>"
    )
    return RenderedEmail(one_line(subject, 300), "\n".join(text) + "\n", body_html)


def recipients_for(row_recipients: Sequence[str], settings: Settings) -> list[str]:
    """Return the addresses of one email: the rule's recipients, else ``FINSENT_ALERT_TO`` (comma list)."""
    if row_recipients:
        return list(row_recipients)
    return [a.strip() for a in (settings.alert_to or "").split(",") if a.strip()]


def build_message(row: Any, recipients: Sequence[str], settings: Settings) -> EmailMessage:
    """Return the MIME message of outbox ``row``: plain text plus an HTML alternative, stable Message-ID."""
    msg = EmailMessage()
    msg["Subject"] = one_line(row.subject, 300)
    msg["From"] = settings.alert_from
    msg["To"] = ", ".join(recipients)
    msg["Message-ID"] = row.message_id
    msg["Date"] = format_datetime(row.created_at.astimezone(UTC))
    msg["X-Finsent-Transition"] = row.transition
    msg.set_content(row.body_text)
    msg.add_alternative(row.body_html, subtype="html")
    return msg


# --- delivery --------------------------------------------------------------------------------


class SmtpNotDelivered(Exception):
    """The server certainly did not take the message (safe to retry)."""


class SmtpUncertain(Exception):
    """The attempt failed after DATA was handed over: the server may have the message."""


def _connect(settings: Settings) -> smtplib.SMTP:
    host, port = settings.smtp_host or "", settings.smtp_port
    if settings.smtp_ssl:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            host, port, timeout=SMTP_TIMEOUT_S, context=ssl.create_default_context()
        )
    else:
        smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S)
    try:
        smtp.ehlo()
        if settings.smtp_starttls and not settings.smtp_ssl:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def send_email(msg: EmailMessage, recipients: Sequence[str], settings: Settings) -> None:
    """Hand ``msg`` to the SMTP server; raise SmtpNotDelivered or SmtpUncertain on failure."""
    where = f"SMTP {settings.smtp_host}:{settings.smtp_port}"
    try:
        smtp = _connect(settings)
    except (OSError, smtplib.SMTPException) as exc:
        raise SmtpNotDelivered(f"{where}: cannot connect: {exc}") from exc
    try:
        # MAIL/RCPT/DATA one by one (not sendmail) so that we know whether DATA was reached.
        try:
            code, reply = smtp.mail(settings.alert_from)
            if code != 250:
                raise SmtpNotDelivered(f"{where}: sender {settings.alert_from} refused: {code} {reply!r}")
            accepted = [r for r in recipients if smtp.rcpt(r)[0] in (250, 251)]
            if not accepted:
                smtp.rset()
                raise SmtpNotDelivered(f"{where}: all recipients refused: {', '.join(recipients)}")
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpNotDelivered(f"{where}: before DATA: {exc}") from exc
        # SMTP wants CRLF line ends; smtplib.data() sends bytes as they are.
        payload = msg.as_bytes(policy=email.policy.SMTP)
        try:
            code, reply = smtp.data(payload)
        except smtplib.SMTPDataError as exc:
            raise SmtpNotDelivered(f"{where}: DATA refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpUncertain(f"{where}: connection failed during DATA: {exc}") from exc
        if code != 250:
            # An error reply to the message itself: the server did not take it.
            raise SmtpNotDelivered(f"{where}: message rejected: {code} {reply!r}")
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


@dataclass
class DeliveryReport:
    """What one pass over the outbox did, and what the outbox holds afterwards."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    pending: int = 0
    unconfirmed: int = 0
    skipped_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def retry_delay(attempts: int) -> timedelta:
    """Return the wait after the ``attempts``-th failed attempt: 1, 2, 4, ... minutes, at most an hour."""
    return min(RETRY_BASE * (2 ** max(0, attempts - 1)), RETRY_MAX)


def deliver_outbox(
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
    limit: int = 100,
) -> DeliveryReport:
    """Return what sending the due outbox emails (at most ``limit``) did; guarantees: module doc."""
    from pipeline.store.db import get_engine

    settings = settings or get_settings()
    engine = engine or get_engine()
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    report = DeliveryReport()
    with engine.begin() as conn:
        released = store.release_stale_claims(conn, clock() - CLAIM_LEASE)
        if released:
            log.warning("%d alert emails were claimed by a sender that stopped; marked unconfirmed", released)
    if not settings.smtp_host:
        report.skipped_reason = "FINSENT_SMTP_HOST is not set; emails wait in the outbox"
    else:
        for _ in range(limit):
            with engine.begin() as conn:
                row = store.claim_due_email(conn, clock())
            if row is None:
                break
            _deliver_one(engine, row, settings, clock(), report)
    with engine.connect() as conn:
        counts = store.outbox_counts(conn)
    report.pending = counts.get("pending", 0) + counts.get("sending", 0)
    report.failed = counts.get("failed", 0)
    report.unconfirmed = counts.get("unconfirmed", 0)
    return report


class OutboxError(ValueError):
    """An outbox request that cannot be done (unknown email, wrong status)."""


# What `finsent outbox list` shows of an email: its delivery state, not its bodies.
_LISTED = (
    "id",
    "message_id",
    "transition",
    "subject",
    "status",
    "attempts",
    "next_attempt_at",
    "sent_at",
    "last_error",
    "created_at",
)
_REQUEUEABLE = ("failed", "unconfirmed")


def list_outbox(*, engine: Engine | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Return the outbox emails (optionally of one ``status``), oldest first, without their bodies."""
    from pipeline.store.db import get_engine

    with (engine or get_engine()).connect() as conn:
        rows = store.outbox_emails(conn, status)
    return [{k: getattr(r, k) for k in _LISTED} for r in rows]


def requeue(outbox_id: int, *, engine: Engine | None = None, now: datetime | None = None) -> str:
    """Send a ``failed`` or ``unconfirmed`` email again at the next delivery; return its former status.

    The same Message-ID goes out, so a receiving side that already has it can drop the copy.
    """
    from pipeline.store.db import get_engine

    with (engine or get_engine()).begin() as conn:
        old = store.requeue_email(conn, outbox_id, now or datetime.now(UTC))
    if old is None:
        raise OutboxError(f"no outbox email {outbox_id}")
    if old not in _REQUEUEABLE:
        raise OutboxError(
            f"outbox email {outbox_id} is {old}: only failed or unconfirmed emails can be requeued"
        )
    return old


def _deliver_one(engine: Engine, row: Any, settings: Settings, now: datetime, report: DeliveryReport) -> None:
    recipients = recipients_for(row.recipients, settings)
    try:
        if not recipients:
            raise SmtpNotDelivered("no recipients: set FINSENT_ALERT_TO or the rule's recipients")
        send_email(build_message(row, recipients, settings), recipients, settings)
    except SmtpNotDelivered as exc:
        give_up = row.attempts >= MAX_ATTEMPTS
        next_at = None if give_up else now + retry_delay(row.attempts)
        with engine.begin() as conn:
            store.mark_email_unsent(conn, row.id, f"attempt {row.attempts}: {exc}", next_at)
        log.warning("alert email %s not delivered (attempt %d): %s", row.message_id, row.attempts, exc)
        report.retried += 0 if give_up else 1
        return
    except SmtpUncertain as exc:
        with engine.begin() as conn:
            store.mark_email_unconfirmed(conn, row.id, f"attempt {row.attempts}: {exc}")
        log.error("alert email %s may or may not have been delivered: %s", row.message_id, exc)
        return
    with engine.begin() as conn:
        store.mark_email_sent(conn, row.id, now)
    report.sent += 1
