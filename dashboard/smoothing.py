"""Shrinkage for the Overview's charts: a period with few articles is pulled toward its series' average,
so one lone article cannot paint a day as the worst of the month."""

from __future__ import annotations

import pandas as pd


def smoothed_index(lines: pd.DataFrame, prior_articles: float, freq: str) -> pd.DataFrame:
    """Return ``lines`` (value, period, sentiment_index, articles) with ``index``: each period's mean score
    shrunk toward its value's mean over the whole frame as if ``prior_articles`` more articles sat there at
    that mean, and every period of the range present (``freq``), empty ones NaN, so a chart shows a gap
    rather than a line drawn across periods without articles."""
    total = lines["sentiment_index"] * lines["articles"]
    articles = lines.groupby("value")["articles"].transform("sum")
    average = total.groupby(lines["value"]).transform("sum") / articles
    lines = lines.assign(index=(total + prior_articles * average) / (lines["articles"] + prior_articles))
    periods = pd.date_range(lines["period"].min(), lines["period"].max(), freq=freq)
    full = pd.MultiIndex.from_product([lines["value"].unique(), periods], names=["value", "period"])
    return lines.set_index(["value", "period"]).reindex(full).reset_index()


def smoothed_share(heat: pd.DataFrame, prior_stories: float) -> pd.DataFrame:
    """Return ``heat`` (value, stories, neg_stories per period) with ``shown_share``: each period's negative
    share shrunk toward its value's share over the frame as if ``prior_stories`` more stories sat there."""
    by_value = heat.groupby("value")
    average = by_value["neg_stories"].transform("sum") / by_value["stories"].transform("sum").clip(lower=1)
    shown = (heat["neg_stories"] + prior_stories * average) / (heat["stories"] + prior_stories)
    return heat.assign(shown_share=shown)
