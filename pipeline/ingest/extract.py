"""Main text of an article page, via trafilatura, for sources with ``fulltext: true``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import trafilatura
from trafilatura.settings import Document

log = logging.getLogger(__name__)

# What a worker gets for one article page: the HTML body, the source name and the page URL.
PageJob = tuple[bytes, str, str]

# Lines shorter than this before the first real paragraph are kickers, bylines, datelines and photo
# credits ("Market Insider", "Illustration by ..."): noise for the classifier, so they are dropped.
MIN_LEAD_WORDS = 10
# The description counts as already present when this share of its words is in the text's opening.
STANDFIRST_OVERLAP = 0.8
STANDFIRST_WINDOW_WORDS = 200
_WORD = re.compile(r"\w+")


def drop_leading_fragments(text: str, min_words: int = MIN_LEAD_WORDS) -> str:
    """Return ``text`` from its first line of at least ``min_words`` words (unchanged if there is none)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if len(line.split()) >= min_words:
            return "\n".join(lines[i:])
    return text


def with_standfirst(text: str, description: str | None) -> str:
    """Return ``text`` led by the page's description (its standfirst) when the text does not already open
    with it; a standfirst sums the article up, which is what the classifier needs most.
    """
    words = (description or "").split()
    if len(words) < MIN_LEAD_WORDS:
        return text
    wanted = {w.lower() for w in _WORD.findall(description or "")}
    opening = {w.lower() for w in _WORD.findall(" ".join(text.split()[:STANDFIRST_WINDOW_WORDS]))}
    if len(wanted & opening) >= STANDFIRST_OVERLAP * len(wanted):
        return text
    return f"{' '.join(words)}\n{text}"


def extract_text(html: str | bytes, url: str | None = None) -> str | None:
    """Return the main text of an article page (paragraphs separated by newlines), or None if none found.

    Options were chosen on the shared article set (see tests/ingest/test_extract.py): comments, images, links
    and formatting are left out; tables stay in because financial articles put figures in them.
    """
    if not html:
        return None
    document = trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        include_images=False,
        include_links=False,
        include_formatting=False,
    )
    if not isinstance(document, Document) or not document.text:  # a dict only with as_dict=True
        return None
    text = with_standfirst(drop_leading_fragments(document.text), document.description)
    return text.strip() or None


@dataclass(frozen=True)
class Extracted:
    """One page's main text, or why there is none (the article is then stored with its summary)."""

    text: str | None = None
    error: str | None = None


def extract_job(job: PageJob) -> Extracted:
    """Return one page's text; extraction is best effort, so a bug on one page fails only that page."""
    body, name, url = job
    try:
        return Extracted(text=extract_text(body, url))
    except MemoryError:
        raise  # the worker's budget speaks for it
    except Exception as exc:
        log.exception("%s: %s: full-text extraction failed", name, url)
        return Extracted(error=f"{url}: extraction failed: {type(exc).__name__}: {exc}")
