"""Headlines and links from feeds are shown as typed: no HTML, no Markdown, no script URLs."""

from __future__ import annotations

from dashboard.markdown import escape_markdown, safe_link, story_line


def test_html_tags_become_entities_that_render_as_text() -> None:
    escaped = escape_markdown("<script>alert(1)</script> & <b>bold</b>")
    assert "<" not in escaped and ">" not in escaped
    assert escaped.startswith("&lt;script&gt;alert\\(1\\)&lt;/script&gt; &amp; &lt;b&gt;")


def test_markdown_punctuation_cannot_make_links_or_emphasis() -> None:
    assert escape_markdown("[win](javascript:alert(1)) *big* # Title") == (
        "\\[win\\]\\(javascript:alert\\(1\\)\\) \\*big\\* \\# Title"
    )


def test_line_breaks_collapse_so_a_headline_stays_one_list_item() -> None:
    assert escape_markdown("Rates\n\n- held\tsteady") == "Rates \\- held steady"


def test_only_http_links_are_kept_and_their_delimiters_are_encoded() -> None:
    assert safe_link("javascript:alert(1)") is None
    assert safe_link("data:text/html,<script>") is None
    assert safe_link(None) is None
    assert safe_link("https://x.test/a (b)<c>") == "https://x.test/a%20%28b%29%3Cc%3E"


def test_story_line_links_the_escaped_title_only_for_safe_urls() -> None:
    assert story_line("Oil <falls>", "https://x.test/1", "wsj, -0.9") == (
        "- [Oil &lt;falls&gt;](https://x.test/1) — wsj, \\-0\\.9"
    )
    assert story_line("Oil", "javascript:alert(1)", "wsj") == "- Oil — wsj"
