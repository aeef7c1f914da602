"""The alert email: plain text and HTML from an alert's figures and headlines, recipients, the MIME message.

Pure: nothing here touches the database or the network. Every text a feed supplied is one line, escaped
in HTML, and links are only http(s)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from pipeline.alerts.stats import count_text
from pipeline.config import Settings

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


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
    neg_stories: float  # expected negatives (a sum of p(negative)) when the rule counts those
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
            f"  Negative share: {_pct(f.neg_share)} of {f.stories} stories"
            f" ({count_text(f.neg_stories)} negative) in the last {_span(f.window)}",
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
        f"<td><b>{_pct(f.neg_share)}</b> ({count_text(f.neg_stories)}/{f.stories})"
        + (
            f"<br>{count_text(f.neg_stories)} negative vs {f.expected_negatives:.2f} expected"
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
