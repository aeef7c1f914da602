"""Overview: is sentiment turning negative, where (topic, ticker, source) and since when."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import queries
from dashboard.smoothing import smoothed_index, smoothed_share

BASELINE_DAYS = 14
TOP_TOPICS = 6
# Each period is pulled toward its value's average over the range as if it had this many more articles
# (stories, for the heatmap) at that average: one lone article can no longer swing a line to -0.9.
PRIOR_ARTICLES = 10
PRIOR_STORIES = 5
SENTIMENT_COLORS = {"negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c"}

url = queries.database_url()
now = queries.now_minute()
latest = queries.model_version(url)
st.title("Overview")
if latest is None:
    st.info("No scored articles yet. Run `finsent run` (ingest, score, alerts) and reload.")
    st.stop()
# A str-typed global: the functions below read it, and a check's narrowing does not reach into them.
version: str = latest

today = now.date()
options = queries.filter_values(url, version, now - timedelta(days=30))
with st.sidebar:
    st.header("Filters")
    picked = st.date_input(
        "Date range (UTC)",
        value=(today - timedelta(days=BASELINE_DAYS - 1), today),
        max_value=today,
        key="overview_dates",
    )
    topics = st.multiselect("Topics", options["topic"], key="overview_topics")
    tickers = st.multiselect("Tickers", options["ticker"], key="overview_tickers")
    sources = st.multiselect("Sources", options["source"], key="overview_sources")
    refresh = st.selectbox("Auto-refresh", ["off", "every minute", "every 5 minutes"], key="overview_refresh")
    st.caption(
        "Charts read hourly rollups, one dimension each: the index follows the tickers when some are "
        "picked (else the topics), the heatmap the topics, the volume bars the sources."
    )


def day_bounds(picked: date | tuple[date, ...]) -> tuple[datetime, datetime]:
    """Return the UTC start and exclusive end of the picked day range (a single day while picking)."""
    days = list(picked) if isinstance(picked, tuple | list) else [picked]
    first = days[0] if days else today
    last = days[-1] if len(days) > 1 else first
    return (datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(days=1), time(), UTC))


start, range_end = day_bounds(picked)
grain = "hour" if range_end - start <= timedelta(days=2) else "day"
TIME_FORMAT = "%b %d %H:%M" if grain == "hour" else "%b %d"
every = {"off": None, "every minute": 60, "every 5 minutes": 300}[refresh]


def metric_row(now: datetime) -> None:
    """Draw articles today, the 24-hour negative share against its baseline, and the firing alerts."""
    day_start = datetime.combine(now.date(), time(), UTC)
    window_start = now - timedelta(hours=24)
    figures = queries.headline_figures(
        url, version, day_start, window_start, window_start - timedelta(days=BASELINE_DAYS), now
    )
    share = figures["neg_stories"] / figures["stories"] if figures["stories"] else None
    base = figures["base_neg"] / figures["base_stories"] if figures["base_stories"] else None
    alerts = queries.alert_status_counts(url)
    first, second, third = st.columns(3)
    first.metric(
        "Articles today (UTC)",
        f"{figures['articles_today']:,}",
        help=f"{figures['stories_today']:,} distinct stories since 00:00 UTC, model version {version}",
    )
    second.metric(
        "Negative share, last 24 h",
        "n/a" if share is None else f"{share:.1%}",
        delta=None if share is None or base is None else f"{(share - base) * 100:+.1f} pp vs baseline",
        delta_color="inverse",
        help=f"Negative stories / stories over the last 24 h; baseline: the {BASELINE_DAYS} days before "
        f"({'n/a' if base is None else f'{base:.1%}'}).",
    )
    third.metric(
        "Firing alerts",
        f"{alerts.get('firing', 0)}",
        help=f"{alerts.get('pending', 0)} more pending (breaching, waiting for their 'for' duration).",
    )


def charts() -> None:
    """Draw the sentiment index, the negative-share heatmap and the volume bars for the filters."""
    # An auto-refresh reruns only this function: "now" must be read here, not once per page load.
    now = queries.now_minute()
    end = min(range_end, now + timedelta(minutes=1))
    metric_row(now)
    if tickers:
        lines = queries.series(url, version, "ticker", tuple(tickers), start, end, grain)
        what = "ticker"
    else:
        chosen = tuple(topics) if topics else tuple(options["topic"][:TOP_TOPICS])
        lines = queries.series(url, version, "topic", chosen, start, end, grain)
        what = "topic"
    st.subheader(f"Sentiment index per {what}")
    st.caption(
        f"Mean score (p(positive) − p(negative)) of the articles in each {grain}, −1 … 1, pulled toward "
        f"the {what}'s average over the range as if it had {PRIOR_ARTICLES} more articles there, so a "
        f"{grain} with few articles moves the line little. Gaps: no articles. The tooltip has the raw mean."
    )
    if lines.empty:
        st.info("No scored articles in this range.")
    else:
        st.altair_chart(
            alt.Chart(smoothed_index(lines, PRIOR_ARTICLES, "h" if grain == "hour" else "D"))
            .mark_line(point=grain == "day")
            .encode(
                x=alt.X("period:T", title=None, axis=alt.Axis(format=TIME_FORMAT, labelAngle=0)),
                y=alt.Y("index:Q", title="sentiment index", scale=alt.Scale(domain=[-1, 1])),
                color=alt.Color("value:N", title=what),
                tooltip=[
                    "value",
                    alt.Tooltip("period:T", format=TIME_FORMAT),
                    alt.Tooltip("index:Q", title="index (smoothed)", format=".3f"),
                    alt.Tooltip("sentiment_index:Q", title="raw mean", format=".3f"),
                    "articles",
                ],
            ),
            width="stretch",
        )

    heat = queries.series(url, version, "topic", tuple(topics) or None, start, end, "day")
    st.subheader("Negative share of stories, topic × day")
    if not heat.empty:
        st.caption(
            f"Each day's share is pulled toward the topic's share over the range as if it had "
            f"{PRIOR_STORIES} more stories there: a day with one negative story is not the darkest cell."
        )
        st.altair_chart(
            alt.Chart(smoothed_share(heat, PRIOR_STORIES))
            .mark_rect()
            .encode(
                x=alt.X("yearmonthdate(period):O", title=None, axis=alt.Axis(format="%b %d", labelAngle=0)),
                y=alt.Y("value:N", title=None),
                color=alt.Color(
                    "shown_share:Q", title="negative share", scale=alt.Scale(scheme="reds", domain=[0, 1])
                ),
                tooltip=[
                    "value",
                    alt.Tooltip("period:T", format="%b %d"),
                    alt.Tooltip("shown_share:Q", title="share (smoothed)", format=".1%"),
                    alt.Tooltip("negative_share:Q", title="raw share", format=".1%"),
                    "stories",
                    "neg_stories",
                ],
            ),
            width="stretch",
        )

    if sources:
        volume = queries.series(url, version, "source", tuple(sources), start, end, grain)
    else:
        volume = queries.series(url, version, "all", None, start, end, grain)
    st.subheader("Volume" + (f" from {len(sources)} source(s)" if sources else ""))
    per_period = volume.groupby("period")[["negative", "neutral", "positive"]].sum()
    if not per_period.empty:
        long = per_period.reset_index().melt("period", var_name="sentiment", value_name="articles")
        st.altair_chart(
            alt.Chart(long)
            .mark_bar()
            .encode(
                x=alt.X("period:T", title=None, axis=alt.Axis(format=TIME_FORMAT, labelAngle=0)),
                y=alt.Y("articles:Q", stack=True),
                color=alt.Color(
                    "sentiment:N",
                    scale=alt.Scale(domain=list(SENTIMENT_COLORS), range=list(SENTIMENT_COLORS.values())),
                ),
                tooltip=["period:T", "sentiment", "articles"],
            ),
            width="stretch",
        )
    with st.expander("Data behind the charts"):
        st.dataframe(
            lines[["value", "period", "articles", "stories", "neg_stories", "sentiment_index"]],
            hide_index=True,
            key="overview_index_data",
        )
        st.dataframe(
            heat[["value", "period", "stories", "neg_stories", "negative_share"]],
            hide_index=True,
            key="overview_heat_data",
        )
        st.dataframe(pd.DataFrame(per_period).reset_index(), hide_index=True, key="overview_volume_data")
    st.caption(f"As of {now:%Y-%m-%d %H:%M} UTC" + (f", refreshing every {every // 60} min" if every else ""))


st.fragment(charts, run_every=every)()
st.caption(f"Model version {version} · queries cached for {queries.TTL_S} s · times in UTC")
