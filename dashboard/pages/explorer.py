"""Explorer: find stories by text, ticker, topic, sentiment, source and date; download them as CSV."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import streamlit as st

from dashboard import queries

LIMIT = 500

url = queries.database_url()
now = queries.now_minute()
version = queries.model_version(url)
st.title("Explorer")
if version is None:
    st.info("No scored articles yet.")
    st.stop()

today = now.date()
options = queries.filter_values(url, version, now - timedelta(days=30))
with st.form("explorer_filters"):
    text = st.text_input(
        "Search headlines and summaries",
        placeholder='e.g. profit warning, "share buyback", oil -gold',
        key="explorer_text",
    )
    c1, c2, c3 = st.columns(3)
    tickers = c1.multiselect("Tickers", options["ticker"], key="explorer_tickers")
    topics = c2.multiselect("Topics", options["topic"], key="explorer_topics")
    sources = c3.multiselect("Sources", options["source"], key="explorer_sources")
    c4, c5 = st.columns(2)
    sentiments = c4.multiselect("Sentiment", ["negative", "neutral", "positive"], key="explorer_sentiments")
    picked = c5.date_input(
        "Published (UTC)", value=(today - timedelta(days=6), today), max_value=today, key="explorer_dates"
    )
    st.form_submit_button("Search")

days = list(picked) if isinstance(picked, tuple | list) else [picked]
first_day = days[0] if days else today
last_day = days[-1] if len(days) > 1 else first_day
start = datetime.combine(first_day, time(), UTC)
end = datetime.combine(last_day + timedelta(days=1), time(), UTC)

found = queries.search_stories(
    url, version, start, end, text, tuple(tickers), tuple(topics), tuple(sentiments), tuple(sources), LIMIT
)
st.caption(
    f"{len(found)} article(s), newest first"
    + (f" — showing the first {LIMIT}; narrow the filters to see older ones" if len(found) == LIMIT else "")
)
st.dataframe(
    found[["published_at", "title", "tickers", "sentiment", "score", "topic", "source", "url"]],
    hide_index=True,
    # Tall enough for ~25 rows, and ~880 px wide so that it fits a 1,366 px laptop screen beside the
    # sidebar (the browser test checks): the headline gets the room. Story ids are in the CSV.
    height=min(35 * (len(found) + 1) + 3, 900),
    column_config={
        "published_at": st.column_config.DatetimeColumn(
            "published", help="UTC", format="MMM D HH:mm", width=95
        ),
        "title": st.column_config.TextColumn("headline", width=280),
        "tickers": st.column_config.TextColumn("tickers", width=70),
        "sentiment": st.column_config.TextColumn("sentiment", width=72),
        "score": st.column_config.NumberColumn("score", format="%+.2f", width=52),
        "topic": st.column_config.TextColumn("topic", width=150),
        "source": st.column_config.TextColumn("source", width=115),
        "url": st.column_config.LinkColumn("link", display_text="open", width=45),
    },
    key="explorer_table",
)
st.download_button(
    "Download CSV",
    found.to_csv(index=False).encode("utf-8"),
    file_name=f"finsent-stories-{first_day:%Y%m%d}-{last_day:%Y%m%d}.csv",
    mime="text/csv",
    key="explorer_csv",
)
