"""Alert email delivery: the outbox over SMTP (``emails`` renders what is sent).

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
import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.alerts.emails import build_message, recipients_for
from pipeline.config import Settings, get_settings

log = logging.getLogger(__name__)

# A claimed row older than this whose sender never came back is marked unconfirmed.
CLAIM_LEASE = timedelta(minutes=10)

RETRY_BASE = timedelta(minutes=1)

RETRY_MAX = timedelta(hours=1)

# With the backoff above the twelfth attempt comes about 6 h after the first (1+2+4+...+32 min, then
# hourly); later if the alerts step runs less often than a retry falls due.
MAX_ATTEMPTS = 12

SMTP_TIMEOUT_S = 30.0


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
    except smtplib.SMTPAuthenticationError as exc:
        # The server answered: its address is right, the credentials are not.
        raise SmtpNotDelivered(
            f"{where}: login refused for user {settings.smtp_user!r} "
            f"({exc.smtp_code}); check FINSENT_SMTP_USER and FINSENT_SMTP_PASSWORD"
        ) from exc
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
