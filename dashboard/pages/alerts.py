"""Alerts: what fired and resolved when, the evidence behind each alert, and silences."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import queries
from dashboard.markdown import escape_markdown, story_line
from pipeline.alerts import RulesError, SilenceError, add_silence, load_rules
from pipeline.alerts.lifecycle import window_end
from pipeline.alerts.stats import count_text
from pipeline.store import db

TOP_STORIES = 10
# Hours of context drawn before an alert's window in the evidence chart.
CONTEXT_HOURS = 48

url = queries.database_url()
now = queries.now_minute()
version = queries.model_version(url)
st.title("Alerts")

with st.sidebar:
    st.header("Filters")
    days = st.slider("Days shown", 1, 60, 14, key="alerts_days")
    statuses = st.multiselect(
        "Status", ["firing", "resolved"], default=["firing", "resolved"], key="alerts_status"
    )
start = datetime.combine(now.date() - timedelta(days=days - 1), time(), UTC)

timeline = queries.alert_timeline(url, start, now + timedelta(minutes=1))
shown = timeline[timeline["status"].isin(statuses)]
firing, resolved = (timeline["status"] == "firing").sum(), (timeline["status"] == "resolved").sum()
first, second, third = st.columns(3)
first.metric("Firing now", int(firing))
second.metric(f"Resolved, last {days} days", int(resolved))
inhibited = timeline["inhibited_by"] != ""
released = timeline["released_at"].notna()
third.metric(
    "Silenced or inhibited firings",
    int((timeline["silenced"] & ~released).sum()),
    help=(
        f"Recorded and shown, not emailed: {int((timeline['silenced'] & ~inhibited).sum())} matched a"
        f" silence, {int((inhibited & ~released).sum())} were explained by a firing ticker alert"
        f" (inhibited). {int(released.sum())} more were held back, then emailed when they outlived their"
        " silence or the ticker alerts that explained them (released)."
    ),
)


def held_back(alert: Any) -> str:
    """Return why an alert sent no email, in a few words: when it was emailed after all (released), the
    ticker alerts that explain it, or a silence; empty when it was emailed."""
    if pd.notna(alert.released_at):
        return f"emailed {alert.released_at:%b %d %H:%M} (released)"
    if alert.inhibited_by:
        return f"inhibited by {alert.inhibited_by}"
    return "silenced" if alert.silenced else ""


if shown.empty:
    st.info("No alerts in this range.")
else:
    bars = shown.assign(
        until=shown["resolved_at"].fillna(pd.Timestamp(now)),
        alert=shown["rule"] + " · " + shown["dimension"] + "=" + shown["value"],
    )
    height = max(120, 28 * bars["alert"].nunique())  # a readable row per alert
    st.altair_chart(
        alt.Chart(bars, height=height)
        .mark_bar(height=14)
        .encode(
            x=alt.X(
                "fired_at:T",
                title=None,
                scale=alt.Scale(domain=[start.isoformat(), now.isoformat()]),
                axis=alt.Axis(format="%b %d", labelAngle=0, tickCount="day"),
            ),
            x2="until:T",
            y=alt.Y("alert:N", title=None, sort="-x", axis=alt.Axis(labelLimit=320)),
            color=alt.Color(
                "status:N", scale=alt.Scale(domain=["firing", "resolved"], range=["#d62728", "#9e9e9e"])
            ),
            tooltip=[
                "alert",
                "status",
                "severity",
                "fired_at:T",
                "resolved_at:T",
                alt.Tooltip("neg_share:Q", format=".1%"),
                alt.Tooltip("baseline:Q", format=".1%"),
            ],
        ),
        width="stretch",
        height=height,
    )
    st.dataframe(
        shown.assign(held_back=[held_back(r) for r in shown.itertuples()])[
            [
                "rule",
                "value",
                "status",
                "fired_at",
                "resolved_at",
                "neg_share",
                "baseline",
                "stories",
                "neg_stories",
                "expected_negatives",
                "held_back",
            ]
        ],
        hide_index=True,
        # Pixel widths that fit a 1,366 px laptop screen beside the sidebar (~890 px; tested in the browser).
        column_config={
            "rule": st.column_config.TextColumn("rule", width=85),
            "value": st.column_config.TextColumn("value", width=90),
            "status": st.column_config.TextColumn("status", width=65),
            "fired_at": st.column_config.DatetimeColumn("fired", format="MMM D HH:mm", width=90),
            "resolved_at": st.column_config.DatetimeColumn("resolved", format="MMM D HH:mm", width=90),
            "neg_share": st.column_config.NumberColumn("neg. share", format="percent", width=70),
            "baseline": st.column_config.NumberColumn("baseline", format="percent", width=70),
            "stories": st.column_config.NumberColumn("stories", width=55),
            "neg_stories": st.column_config.NumberColumn("negative", format="%.3g", width=65),
            "expected_negatives": st.column_config.NumberColumn("expected", format="%.2f", width=65),
            "held_back": st.column_config.TextColumn("not emailed because", width=130),
        },
        key="alerts_table",
    )


def rule_windows() -> dict[str, timedelta]:
    """Return each configured rule's window (empty when the rules file cannot be read)."""
    try:
        return {rule.name: rule.window for rule in load_rules()}
    except RulesError:
        return {}


def _expected_note(alert: pd.Series) -> str:
    """Return how a count rule explains the firing ("; 4 negative stories where 0.21 were expected ..")."""
    expected = alert.get("expected_negatives")
    if expected is None or pd.isna(expected):
        return ""
    figure = escape_markdown(f"{float(expected):.2f}")
    negative = count_text(float(alert["neg_stories"]))
    return f"; {negative} negative stories where {figure} were expected at its usual rate"


def evidence(alert: pd.Series, version: str) -> None:
    """Draw one alert's window against its baseline and the top negative stories behind it (rollups and
    stories of model ``version``)."""
    window = rule_windows().get(alert["rule"], timedelta(hours=1))
    fired = alert["fired_at"].to_pydatetime()
    until = now if pd.isna(alert["resolved_at"]) else alert["resolved_at"].to_pydatetime()
    window_start = window_end(fired) - window
    chart_end = min(until + timedelta(hours=6), now + timedelta(hours=1))
    hourly = queries.series(
        url,
        version,
        alert["dimension"],
        (alert["value"],),
        window_start - timedelta(hours=CONTEXT_HOURS),
        chart_end,
        "hour",
    )
    share = "n/a" if pd.isna(alert["neg_share"]) else f"{alert['neg_share']:.1%}"
    baseline = "n/a" if pd.isna(alert["baseline"]) else f"{alert['baseline']:.1%}"
    st.markdown(
        f"**{escape_markdown(alert['rule'])} · {escape_markdown(alert['dimension'])}="
        f"{escape_markdown(alert['value'])}** — {alert['status']}, fired {fired:%Y-%m-%d %H:%M} UTC: "
        f"negative share {escape_markdown(share)} of {alert['stories']} stories vs baseline "
        f"{escape_markdown(baseline)}" + _expected_note(alert)
    )
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Negative share per hour vs baseline**")
        if hourly.empty:
            st.info("No rollups for this value in the period.")
        else:
            shade = pd.DataFrame({"from": [window_start], "to": [window_end(fired)]})
            # Every hour of the period, empty ones as gaps: a line drawn across hours without stories
            # would show a trend that is not there.
            hours_index = pd.date_range(hourly["period"].min(), hourly["period"].max(), freq="h")
            hourly = hourly.set_index("period").reindex(hours_index).rename_axis("period").reset_index()
            line = (
                alt.Chart(hourly)
                .mark_line(point=True)
                .encode(
                    x=alt.X("period:T", title=None, axis=alt.Axis(format="%b %d %H:%M", labelAngle=0)),
                    y=alt.Y("negative_share:Q", title="negative share", scale=alt.Scale(domain=[0, 1])),
                    tooltip=[
                        "period:T",
                        "stories",
                        "neg_stories",
                        alt.Tooltip("negative_share:Q", format=".1%"),
                    ],
                )
            )
            band = alt.Chart(shade).mark_rect(opacity=0.15, color="#d62728").encode(x="from:T", x2="to:T")
            layers = [band, line]
            if pd.notna(alert["baseline"]):
                base = pd.DataFrame({"baseline": [alert["baseline"]]})
                layers.append(alt.Chart(base).mark_rule(strokeDash=[6, 3]).encode(y="baseline:Q"))
            st.altair_chart(alt.layer(*layers), width="stretch")
            hours = int(window.total_seconds() // 3600)
            st.caption(f"Shaded: the {hours} h window that fired; dashed: its baseline share.")
    with right:
        st.markdown("**Top negative stories**")
        stories = queries.negative_headlines(
            url,
            version,
            alert["dimension"],
            alert["value"],
            window_start,
            until,
            TOP_STORIES,
        )
        if stories.empty:
            st.caption("No negative stories in the window.")
        else:
            lines = [
                story_line(
                    r.title,
                    r.url,
                    f"{r.source}, {r.published_at:%m-%d %H:%M} UTC, score {r.score:+.2f}"
                    + (f", {r.copies} copies" if r.copies > 1 else ""),
                )
                for r in stories.itertuples()
            ]
            st.markdown("\n".join(lines))


def silence_form(alert: pd.Series | None) -> None:
    """Draw the form that adds a silence (the dashboard's one write, on the normal engine)."""
    with st.form("silence", clear_on_submit=False):
        st.markdown("**Add a silence** — matching alerts are recorded but not emailed.")
        c1, c2, c3 = st.columns(3)
        rule = c1.text_input("Rule (glob, empty = any)", value="" if alert is None else alert["rule"])
        dimension = c2.selectbox(
            "Dimension",
            ["", "all", "topic", "ticker", "source"],
            index=0 if alert is None else ["", "all", "topic", "ticker", "source"].index(alert["dimension"]),
        )
        value = c3.text_input("Value (glob, empty = any)", value="" if alert is None else alert["value"])
        c4, c5, c6 = st.columns(3)
        hours = c4.number_input("Duration (hours)", min_value=1, max_value=24 * 30, value=4, step=1)
        comment = c5.text_input("Comment")
        author = c6.text_input("Created by")
        submitted = st.form_submit_button("Add silence")
    if submitted:
        try:
            silence_id = add_silence(
                rule=rule.strip() or None,
                dimension=dimension or None,
                value=value.strip() or None,
                ends_at=datetime.now(UTC) + timedelta(hours=int(hours)),
                comment=comment.strip(),
                created_by=author.strip() or None,
                engine=db.get_engine(),
            )
        except SilenceError as exc:
            st.error(str(exc))
        else:
            queries.silences.clear()
            st.success(f"Silence {silence_id} added for {int(hours)} h.")


selected = None
if version is not None and not shown.empty:
    st.subheader("Evidence")
    labels = [
        f"{r.rule} · {r.dimension}={r.value} · "
        + (
            f"firing since {r.fired_at:%b %d %H:%M}"
            if pd.isna(r.resolved_at)
            else f"fired {r.fired_at:%b %d %H:%M}, resolved {r.resolved_at:%b %d %H:%M}"
        )
        for r in shown.itertuples()
    ]
    pick = st.selectbox("Alert", range(len(labels)), format_func=labels.__getitem__, key="alerts_pick")
    selected = shown.iloc[pick]
    evidence(selected, version)

st.subheader("Silences")
silence_form(selected)
active = queries.silences(url, now)
if active.empty:
    st.caption("No silences in force or scheduled.")
else:
    columns = ["id", "rule", "dimension", "value", "starts_at", "ends_at", "comment", "created_by"]
    st.dataframe(active[columns], hide_index=True, key="alerts_silences")
