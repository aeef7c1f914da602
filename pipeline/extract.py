"""Main text of an article page, via trafilatura, for sources with ``fulltext: true``."""

from __future__ import annotations

import trafilatura

# Lines shorter than this before the first real paragraph are kickers, bylines, datelines and photo
# credits ("Market Insider", "Illustration by ..."): noise for the classifier, so they are dropped.
MIN_LEAD_WORDS = 10


def drop_leading_fragments(text: str, min_words: int = MIN_LEAD_WORDS) -> str:
    """Return ``text`` from its first line of at least ``min_words`` words (unchanged if there is none)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if len(line.split()) >= min_words:
            return "\n".join(lines[i:])
    return text


def extract_text(html: str | bytes, url: str | None = None) -> str | None:
    """Return the main text of an article page (paragraphs separated by newlines), or None if none found.

    Options were chosen on the shared article set (see tests/test_extract.py): comments and
    formatting are left out; tables stay in because financial articles put figures in them.
    """
    if not html:
        return None
    text = trafilatura.extract(
        html,
        url=url,
        include_comments=False,
        include_tables=True,
        include_images=False,
        include_links=False,
        include_formatting=False,
        deduplicate=False,
    )
    if not text:
        return None
    return drop_leading_fragments(text).strip() or None
