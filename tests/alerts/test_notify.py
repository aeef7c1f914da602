"""pipeline.alerts.notify: email rendering, and outbox delivery to a real SMTP server on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from pipeline import store
from pipeline.alerts import notify
from pipeline.alerts.emails import AlertFigures, Headline, render_alert_email
from pipeline.alerts.notify import deliver_outbox
from pipeline.config import Settings
from tests.fixtures.smtp_server import SmtpCatcher, SmtpServer, free_port

AT = datetime(2026, 10, 4, 12, tzinfo=UTC)
FIGURES = AlertFigures(
    rule="ticker-6h",
    severity="critical",
    window=timedelta(hours=6),
    neg_share=0.8,
    baseline=0.22,
    stories=20,
    neg_stories=16,
    base_stories=400,
    p_value=3e-9,
)
HEADLINES = [
    Headline(
        "ACME <script>alert(1)</script> shares plunge",
        "https://news.test/acme?a=1&b=2",
        "Wire & Co",
        AT,
        -0.9,
        3,
    ),
    Headline("ACME sued by regulators", "javascript:alert(1)", "Daily", AT, -0.8),
]


def _settings(catcher: SmtpCatcher | None = None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "alert_from": "finsent@alerts.test",
        "alert_to": "desk@example.com, risk@example.com",
    }
    if catcher is not None:
        values.update(smtp_host=catcher.host, smtp_port=catcher.port)
    values.update(extra)
    return Settings(**values)


def _queue(engine: Engine, key: str = "firing|ticker=ACME|t", recipients: list[str] | None = None) -> int:
    email = render_alert_email("firing", "ticker", "ACME", [FIGURES], HEADLINES, AT)
    with engine.begin() as conn:
        return store.enqueue_email(
            conn,
            {
                "group_key": key,
                "message_id": f"<{abs(hash(key))}@alerts.test>",
                "transition": "firing",
                "recipients": recipients or [],
                "subject": email.subject,
                "body_text": email.text,
                "body_html": email.html,
                "next_attempt_at": AT,
            },
        )


def _row(engine: Engine, outbox_id: int) -> Any:
    with engine.connect() as conn:
        return next(r for r in store.outbox_emails(conn) if r.id == outbox_id)


def test_subject_names_state_severity_dimension_and_shares() -> None:
    email = render_alert_email("firing", "ticker", "ACME", [FIGURES], HEADLINES, AT)
    assert email.subject.startswith("[finsent] FIRING critical: ticker ACME")
    assert "80% negative vs 22% baseline (6h)" in email.subject
    resolved = render_alert_email("resolved", "all", "*", [FIGURES], [], AT)
    assert resolved.subject.startswith("[finsent] RESOLVED critical: all stories")
    assert "no longer a significant negative spike" in resolved.subject


def test_text_body_gives_shares_counts_and_headlines_with_links() -> None:
    text = render_alert_email("firing", "ticker", "ACME", [FIGURES], HEADLINES, AT).text
    assert "80% of 20 stories (16 negative) in the last 6h" in text
    assert "22% over the trailing baseline (400 stories)" in text
    assert "(Wire & Co, 3 copies)" in text
    assert "https://news.test/acme?a=1&b=2" in text
    assert "javascript:" not in text


def test_html_body_escapes_untrusted_headlines_and_links_only_http() -> None:
    body = render_alert_email("firing", "ticker", "ACME", [FIGURES], HEADLINES, AT).html
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert 'href="https://news.test/acme?a=1&amp;b=2"' in body
    assert "javascript:" not in body
    assert "Wire &amp; Co" in body


def test_newlines_in_a_value_cannot_inject_headers() -> None:
    email = render_alert_email("firing", "source", "evil\r\nBcc: x@y", [FIGURES], [], AT)
    assert "\n" not in email.subject and "\r" not in email.subject


def test_without_smtp_host_the_email_waits_in_the_outbox(engine: Engine) -> None:
    outbox_id = _queue(engine)
    report = deliver_outbox(engine=engine, settings=_settings(), now=AT)
    assert report.sent == 0 and report.pending == 1
    assert "FINSENT_SMTP_HOST" in (report.skipped_reason or "")
    row = _row(engine, outbox_id)
    assert (row.status, row.attempts) == ("pending", 0)


def test_delivers_multipart_email_with_stable_message_id_once(
    engine: Engine, smtp_catcher: SmtpCatcher
) -> None:
    outbox_id = _queue(engine)
    settings = _settings(smtp_catcher)
    assert deliver_outbox(engine=engine, settings=settings, now=AT).sent == 1
    assert deliver_outbox(engine=engine, settings=settings, now=AT + timedelta(hours=1)).sent == 0
    (received,) = smtp_catcher.received
    msg = received.message
    row = _row(engine, outbox_id)
    assert row.status == "sent" and row.attempts == 1
    assert msg["Message-ID"] == row.message_id
    assert msg["From"] == "finsent@alerts.test"
    assert received.rcpt_tos == ["desk@example.com", "risk@example.com"]
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "80% of 20 stories" in plain
    assert "&lt;script&gt;" in html


def test_rule_recipients_override_the_default_list(engine: Engine, smtp_catcher: SmtpCatcher) -> None:
    _queue(engine, recipients=["ir@example.com"])
    deliver_outbox(engine=engine, settings=_settings(smtp_catcher), now=AT)
    assert smtp_catcher.received[0].rcpt_tos == ["ir@example.com"]


def test_crash_after_the_server_took_the_mail_does_not_send_it_again(
    engine: Engine, smtp_catcher: SmtpCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox_id = _queue(engine)
    settings = _settings(smtp_catcher)

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit("process killed after DATA, before recording the send")

    monkeypatch.setattr(store, "mark_email_sent", crash)
    with pytest.raises(SystemExit):
        deliver_outbox(engine=engine, settings=settings, now=AT)
    assert len(smtp_catcher.received) == 1
    assert _row(engine, outbox_id).status == "sending"
    monkeypatch.undo()

    # A rerun right away, and one after the claim lease: no second copy; the row says what happened.
    deliver_outbox(engine=engine, settings=settings, now=AT + timedelta(minutes=1))
    report = deliver_outbox(
        engine=engine, settings=settings, now=AT + notify.CLAIM_LEASE + timedelta(minutes=1)
    )
    assert len(smtp_catcher.received) == 1
    assert report.unconfirmed == 1
    row = _row(engine, outbox_id)
    assert row.status == "unconfirmed" and "not resent" in row.last_error


def test_connection_lost_after_data_is_not_resent(engine: Engine, smtp_catcher: SmtpCatcher) -> None:
    smtp_catcher.drop_after_data = True
    outbox_id = _queue(engine)
    settings = _settings(smtp_catcher)
    report = deliver_outbox(engine=engine, settings=settings, now=AT)
    assert report.sent == 0 and report.unconfirmed == 1
    smtp_catcher.drop_after_data = False
    deliver_outbox(engine=engine, settings=settings, now=AT + timedelta(hours=2))
    assert len(smtp_catcher.received) == 1
    row = _row(engine, outbox_id)
    assert row.status == "unconfirmed" and "during DATA" in row.last_error


def test_an_unconfirmed_email_goes_out_again_only_when_an_operator_requeues_it(
    engine: Engine, smtp_catcher: SmtpCatcher
) -> None:
    smtp_catcher.drop_after_data = True
    outbox_id = _queue(engine)
    settings = _settings(smtp_catcher)
    deliver_outbox(engine=engine, settings=settings, now=AT)
    smtp_catcher.drop_after_data = False
    assert [r["status"] for r in notify.list_outbox(engine=engine, status="unconfirmed")] == ["unconfirmed"]

    assert notify.requeue(outbox_id, engine=engine, now=AT + timedelta(hours=1)) == "unconfirmed"
    requeued = _row(engine, outbox_id)
    assert requeued.status == "pending" and requeued.attempts == 0
    assert "during DATA" in requeued.last_error and "requeued by an operator" in requeued.last_error
    report = deliver_outbox(engine=engine, settings=settings, now=AT + timedelta(hours=1))
    assert report.sent == 1 and report.unconfirmed == 0
    first, second = smtp_catcher.messages()
    assert first["Message-ID"] == second["Message-ID"]  # the receiving side can drop the copy
    row = _row(engine, outbox_id)
    assert row.status == "sent" and row.attempts == 1

    with pytest.raises(notify.OutboxError, match="is sent"):
        notify.requeue(outbox_id, engine=engine)
    with pytest.raises(notify.OutboxError, match="no outbox email"):
        notify.requeue(outbox_id + 1000, engine=engine)


def test_smtp_down_is_retried_later_and_not_lost(engine: Engine) -> None:
    catcher = SmtpCatcher("127.0.0.1", free_port())  # nothing listens there yet
    settings = _settings(catcher)
    outbox_id = _queue(engine)

    report = deliver_outbox(engine=engine, settings=settings, now=AT)
    assert report.sent == 0 and report.retried == 1 and report.pending == 1
    row = _row(engine, outbox_id)
    assert row.status == "pending" and row.attempts == 1
    assert "cannot connect" in row.last_error
    assert row.next_attempt_at == AT + notify.retry_delay(1)

    server = SmtpServer(catcher)
    server.start()
    try:
        # Not due yet: the backoff holds it back.
        assert deliver_outbox(engine=engine, settings=settings, now=AT + timedelta(seconds=10)).sent == 0
        assert deliver_outbox(engine=engine, settings=settings, now=AT + timedelta(minutes=2)).sent == 1
    finally:
        server.stop()
    assert len(catcher.received) == 1
    row = _row(engine, outbox_id)
    assert row.status == "sent" and row.attempts == 2 and row.last_error is None


def test_rejected_data_is_retried_with_growing_backoff_then_marked_failed(
    engine: Engine, smtp_catcher: SmtpCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "MAX_ATTEMPTS", 3)
    smtp_catcher.reject_data = True
    outbox_id = _queue(engine)
    settings = _settings(smtp_catcher)
    now = AT
    for attempt in (1, 2):
        deliver_outbox(engine=engine, settings=settings, now=now)
        row = _row(engine, outbox_id)
        assert row.status == "pending" and row.attempts == attempt
        assert "554" in row.last_error
        assert row.next_attempt_at == now + notify.retry_delay(attempt)
        now = row.next_attempt_at
    report = deliver_outbox(engine=engine, settings=settings, now=now)
    assert report.failed == 1
    assert _row(engine, outbox_id).status == "failed"
    assert smtp_catcher.received == []


def test_retry_delay_doubles_up_to_an_hour() -> None:
    assert [notify.retry_delay(n) for n in (1, 2, 3)] == [timedelta(minutes=m) for m in (1, 2, 4)]
    assert notify.retry_delay(20) == timedelta(hours=1)


def test_missing_recipients_keep_the_email_queued_with_the_reason(
    engine: Engine, smtp_catcher: SmtpCatcher
) -> None:
    outbox_id = _queue(engine)
    deliver_outbox(engine=engine, settings=_settings(smtp_catcher, alert_to=None), now=AT)
    row = _row(engine, outbox_id)
    assert row.status == "pending" and "no recipients" in row.last_error
    assert smtp_catcher.received == []


def test_a_count_rule_email_says_how_many_negative_stories_were_expected() -> None:
    from dataclasses import replace

    counted = replace(FIGURES, expected_negatives=0.214)
    email = render_alert_email("firing", "ticker", "ACME", [counted], HEADLINES, AT)
    assert "Expected:       0.21 negative stories at its usual rate" in email.text
    assert "16 negative vs 0.21 expected" in email.html
    plain = render_alert_email("firing", "ticker", "ACME", [FIGURES], HEADLINES, AT)
    assert "Expected:" not in plain.text and "expected" not in plain.html
