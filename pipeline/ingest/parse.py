"""Parse fetched feed bytes (RSS 0.9x/1.0/2.0, Atom, RDF) into normalised entries with feedparser
(plain RSS 2.0 with a faster reader that gives the same result)."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import feedparser

from pipeline.ingest.fastrss import read_plain_rss
from pipeline.ingest.normalise import canonical_url, clean_text, detect_language, fix_mojibake, to_utc


class FeedError(ValueError):
    """A document that is not a feed or is broken beyond recovery; the message names source and URL."""


@dataclass
class ParsedEntry:
    """One feed item, normalised: plain-text title/summary, canonical URL, UTC date, language."""

    guid: str | None
    url: str | None
    canonical_url: str | None
    title: str
    summary: str
    published_at: datetime
    date_missing: bool
    language: str | None
    body: str | None = None


@dataclass
class ParsedFeed:
    """The usable entries of one feed, the rejected ones as ``(index, reason)``, and any warning."""

    entries: list[ParsedEntry]
    invalid: list[tuple[int, str]] = field(default_factory=list)
    feed_title: str | None = None
    warning: str | None = None


_XML_DECL = re.compile(rb"^(\s*<\?xml[^>]*?encoding\s*=\s*)([\"'])([A-Za-z0-9._:-]+)\2", re.IGNORECASE)
_HTTP_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)
_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def _codec(name: str | None) -> str | None:
    """Return Python's name for an encoding label, or None when unknown."""
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_feed(body: bytes, content_type: str | None) -> tuple[str, str | None]:
    """Return the document as text and a warning when the declared encoding was wrong.

    Bytes that are valid UTF-8 are read as UTF-8 whatever the headers say: multi-byte UTF-8
    sequences almost never occur by chance in Latin-1 text, while servers often label UTF-8 feeds
    ``ISO-8859-1``. Otherwise the XML declaration, then the HTTP charset, then cp1252 are tried.
    """
    http_codec = _codec(m.group(1)) if content_type and (m := _HTTP_CHARSET.search(content_type)) else None
    decl = _XML_DECL.match(body)
    xml_codec = _codec(decl.group(3).decode("ascii")) if decl else None
    if body.startswith(_BOMS):
        for bom, codec in (
            (codecs.BOM_UTF32_LE, "utf-32"),
            (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF8, "utf-8-sig"),
            (codecs.BOM_UTF16_LE, "utf-16"),
            (codecs.BOM_UTF16_BE, "utf-16"),
        ):
            if body.startswith(bom):
                return body.decode(codec, errors="replace"), None
    # UTF-16 without a BOM (XML spec, appendix F): "<?" as two-byte units.
    if body.startswith((b"<\x00?\x00", b"\x00<\x00?")):
        return body.decode("utf-16-le" if body[0] == ord("<") else "utf-16-be", errors="replace"), None
    text: str | None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        named = {c for c in (http_codec, xml_codec) if c}
        wrong = named - {"utf-8", "ascii"} if not body.isascii() else set()
        warning = f"declared encoding {', '.join(sorted(wrong))} but the body is UTF-8" if wrong else None
        return text, warning
    for declared_codec in (xml_codec, http_codec):
        if declared_codec and declared_codec not in ("utf-8", "ascii"):
            try:
                return body.decode(declared_codec), None
            except UnicodeDecodeError:
                continue
    declared = xml_codec or http_codec or "none"
    return body.decode("cp1252", errors="replace"), f"declared encoding {declared} does not fit; read cp1252"


def _unwrap_repr(text: str) -> str | None:
    """Return the document inside a Python string repr (``'<?xml ...\\n...'``), or None if it is not one.

    A known way feeds get corrupted on save: ``str(bytes)`` written to a file leaves a quote, literal
    ``\\n`` and ``\\x80``-style escapes of UTF-8 bytes around an otherwise intact document.
    """
    stripped = text.strip()
    if stripped[:2] in ("b'", 'b"'):
        stripped = stripped[1:]
    if len(stripped) < 2 or stripped[0] not in "'\"" or stripped[-1] != stripped[0]:
        return None
    inner = stripped[1:-1].lstrip()
    if not inner.startswith("<") or ("\\n" not in inner and "\\x" not in inner):
        return None
    try:
        unescaped = inner.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeError:
        return None
    return fix_mojibake(unescaped)


def _to_feedparser_bytes(text: str) -> bytes:
    """Return ``text`` as UTF-8 with the XML declaration saying so, so feedparser needs no guessing."""
    data = text.encode("utf-8")
    return _XML_DECL.sub(lambda m: m.group(1) + m.group(2) + b"utf-8" + m.group(2), data, count=1)


def _html_title(body: bytes) -> str:
    m = _HTML_TITLE.search(body)
    return clean_text(m.group(1).decode("utf-8", errors="replace")) if m else ""


def _entry_date(entry: Any) -> datetime | None:
    """Return the first usable date of an entry (published, updated, created), in UTC."""
    for key in ("published", "updated", "created"):
        # dict.get: FeedParserDict.get maps missing "updated" to "published" with a DeprecationWarning.
        parsed = to_utc(dict.get(entry, f"{key}_parsed"))
        if parsed is None:
            parsed = to_utc(dict.get(entry, key))
        if parsed is not None:
            return parsed
    return None


def _entry_summary(entry: Any) -> str:
    summary = entry.get("summary") or ""
    if not summary and entry.get("content"):
        summary = entry["content"][0].get("value", "")
    return clean_text(summary)


def _entry_link(entry: Any, base_url: str) -> str | None:
    link = (entry.get("link") or "").strip()
    if not link:
        for candidate in entry.get("links") or []:
            if candidate.get("href") and candidate.get("rel", "alternate") == "alternate":
                link = candidate["href"].strip()
                break
    return urljoin(base_url, link) if link else None


def _feed_language(parsed: Any) -> str | None:
    lang = (parsed.feed.get("language") or "").strip().lower()
    return lang.split("-")[0][:8] or None if lang else None


def parse_feed(
    body: bytes,
    *,
    source_name: str,
    url: str,
    fetched_at: datetime,
    content_type: str | None = None,
    fast: bool = True,
) -> ParsedFeed:
    """Return the normalised entries of a feed document; raise FeedError when it is not a usable feed.

    Entries with neither title nor link are listed in ``invalid``; an entry without a usable date
    gets ``fetched_at`` and ``date_missing=True``. A well-formed feed with no items, or a broken one
    from which items could be recovered, comes back with a ``warning``. Plain RSS 2.0 is read by
    ``pipeline.fastrss`` (the same result, ~20x less CPU); ``fast=False`` sends everything to feedparser.
    """
    where = f"{source_name}: {url}"
    fetched_at = to_utc(fetched_at) or fetched_at
    if not body or not body.strip():
        raise FeedError(f"{where}: empty response body, not a feed")
    head = body[:4096].lower()
    has_feed_root = any(tag in head for tag in (b"<rss", b"<feed", b"<rdf:rdf", b"<channel"))
    served_as_html = (content_type or "").lower().startswith("text/html")
    if not has_feed_root and (_HTML_START.match(body) or served_as_html):
        title = _html_title(body)
        raise FeedError(f"{where}: got an HTML page, not a feed" + (f" (title: {title!r})" if title else ""))

    text, warning = decode_feed(body, content_type)
    unwrapped = _unwrap_repr(text)
    if unwrapped is not None:
        text = unwrapped
        warning = "document was saved as a Python string repr; unwrapped and repaired"
    data = _to_feedparser_bytes(text)
    parsed = (read_plain_rss(data) if fast else None) or feedparser.parse(
        data, sanitize_html=False, resolve_relative_uris=False
    )

    if not parsed.version and not parsed.entries:
        reason = parsed.get("bozo_exception") or "no RSS, Atom or RDF root element"
        raise FeedError(f"{where}: not a recognisable RSS/Atom/RDF feed: {reason}")
    if parsed.bozo and not parsed.entries:
        raise FeedError(
            f"{where}: feed is not well-formed and no items could be recovered: "
            f"{parsed.get('bozo_exception')}"
        )
    if parsed.bozo and not isinstance(parsed.get("bozo_exception"), feedparser.CharacterEncodingOverride):
        note = f"not well-formed ({parsed.get('bozo_exception')}); {len(parsed.entries)} items recovered"
        warning = f"{warning}; {note}" if warning else note
    if not parsed.entries:
        warning = f"{warning}; feed has no items" if warning else "feed has no items"

    feed_language = _feed_language(parsed)
    feed_link = parsed.feed.get("link") or url
    base_url = urljoin(url, feed_link)
    entries: list[ParsedEntry] = []
    invalid: list[tuple[int, str]] = []
    for i, raw in enumerate(parsed.entries):
        title = clean_text(raw.get("title") or "")
        link = _entry_link(raw, base_url)
        if not title and not link:
            invalid.append((i, "entry has neither a title nor a link"))
            continue
        if link and not link.lower().startswith(("http://", "https://")):
            invalid.append((i, f"entry link is not http(s): {link[:200]!r}"))
            continue
        summary = _entry_summary(raw)
        published = _entry_date(raw)
        guid = (raw.get("id") or "").strip() or None
        entries.append(
            ParsedEntry(
                guid=guid,
                url=link,
                canonical_url=canonical_url(link) if link else None,
                title=title,
                summary=summary,
                published_at=published or fetched_at,
                date_missing=published is None,
                language=detect_language(f"{title}. {summary}") or feed_language,
                body=None,
            )
        )
    feed_title = clean_text(parsed.feed.get("title") or "") or None
    return ParsedFeed(entries=entries, invalid=invalid, feed_title=feed_title, warning=warning)
