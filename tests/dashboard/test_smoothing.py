"""dashboard.smoothing: few articles move a period little, many move it much, empty periods are gaps."""

from __future__ import annotations

import math

import pandas as pd

from dashboard.smoothing import smoothed_index, smoothed_share

DAYS = pd.date_range("2026-12-01", periods=5, freq="D", tz="UTC")


def test_a_lone_negative_article_counts_less_than_a_storm() -> None:
    lines = pd.DataFrame(
        {
            "value": ["Energy"] * 4,
            "period": [DAYS[0], DAYS[1], DAYS[2], DAYS[4]],  # DAYS[3]: no articles
            "sentiment_index": [0.1, -0.86, 0.1, -0.5],
            "articles": [30, 1, 30, 40],
        }
    )
    out = smoothed_index(lines, prior_articles=10, freq="D").set_index("period")["index"]
    lone, storm = out[DAYS[1]], out[DAYS[4]]
    assert storm < lone < 0  # raw: the lone article (-0.86) looked worse than the storm (-0.50)
    assert math.isnan(out[DAYS[3]])  # a gap, not a line across the empty day
    assert abs(out[DAYS[0]] - 0.1) < 0.1  # a well-populated day stays near its own mean


def test_the_smoothed_index_keeps_each_series_apart() -> None:
    lines = pd.DataFrame(
        {
            "value": ["A", "A", "B", "B"],
            "period": [DAYS[0], DAYS[1], DAYS[0], DAYS[1]],
            "sentiment_index": [0.5, 0.5, -0.5, -0.5],
            "articles": [3, 3, 3, 3],
        }
    )
    out = smoothed_index(lines, prior_articles=10, freq="D")
    assert (out[out["value"] == "A"]["index"] == 0.5).all() and (
        out[out["value"] == "B"]["index"] == -0.5
    ).all()


def test_one_negative_story_is_not_the_darkest_cell() -> None:
    heat = pd.DataFrame(
        {"value": ["Oil"] * 3, "period": DAYS[:3], "stories": [1, 20, 20], "neg_stories": [1, 12, 2]}
    )
    shown = smoothed_share(heat, prior_stories=5)["shown_share"].tolist()
    assert shown[1] > shown[0]  # 12 of 20 outranks 1 of 1
    assert all(0 <= x <= 1 for x in shown)
