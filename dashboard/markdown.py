"""Untrusted text (headlines, sources, URLs) made safe for ``st.markdown``: shown as typed, not as markup."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

# Characters Markdown gives a meaning to; a backslash makes each one literal.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
_SAFE_SCHEMES = ("http", "https")


def escape_markdown(text: str) -> str:
    """Return ``text`` escaped so that Markdown renders it literally (HTML tags appear as text).

    HTML special characters become entities (``<script>`` is drawn, not run) and Markdown punctuation is
    backslash-escaped (a headline cannot make a link, emphasis or a heading). Line breaks become spaces.
    """
    flat = " ".join(text.split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def safe_link(url: str | None) -> str | None:
    """Return ``url`` percent-escaped for a Markdown link target, or None unless it is http(s)."""
    if not url or urlsplit(url).scheme.lower() not in _SAFE_SCHEMES:
        return None
    # Characters that would end the link target or start markup are percent-encoded.
    return (
        url.replace("(", "%28")
        .replace(")", "%29")
        .replace(" ", "%20")
        .replace("<", "%3C")
        .replace(">", "%3E")
    )


def story_line(title: str, url: str | None, details: str) -> str:
    """Return one Markdown list item: the escaped title (linked when the URL is http(s)), then details."""
    label = escape_markdown(title) or "(no title)"
    target = safe_link(url)
    head = f"[{label}]({target})" if target else label
    return f"- {head} — {escape_markdown(details)}"
