"""Model: the active model's card and metrics, confusion matrices, score distribution, version history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import queries
from models.labels import SENTIMENT_NAMES, TOPIC_NAMES

BINS = 20
SAMPLE_ROWS = 50_000
CARD_FILE = "MODEL_CARD.md"
METRICS_FILE = "metrics.json"

url = queries.database_url()
st.title("Model")
versions = queries.model_versions(url)
version = queries.model_version(url)
if version is None or versions.empty:
    st.info("No model version registered yet. `finsent score` registers the shipped model.")
    st.stop()

row = versions[versions["version"] == version].iloc[0]
model_dir = Path(row["path"]) if isinstance(row["path"], str) and row["path"] else None


def metrics_of(row: pd.Series, model_dir: Path | None) -> dict[str, Any]:
    """Return the version's recorded metrics, else the model directory's metrics file, else {}."""
    if isinstance(row["metrics"], dict) and row["metrics"]:
        return row["metrics"]
    if model_dir and (model_dir / METRICS_FILE).is_file():
        try:
            return json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            st.warning(f"{model_dir / METRICS_FILE}: unreadable ({exc})")
    return {}


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Return every numeric leaf of ``metrics`` as ``{"task.metric": value}`` (lists skipped)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(scalar_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _labels(task: str, size: int) -> list[str]:
    # News sets ("news/sentivent_eval") are sentiment matrices.
    kind = "sentiment" if task.startswith("news/") else task.rsplit(".", 1)[-1]
    known = {"sentiment": SENTIMENT_NAMES, "topic": TOPIC_NAMES}.get(kind, ())
    return list(known) if len(known) == size else [str(i) for i in range(size)]


def confusion_matrices(metrics: dict[str, Any], prefix: str = "") -> dict[str, pd.DataFrame]:
    """Return ``{task: matrix}`` for every matrix in ``metrics``: ``{task: {"confusion_matrix": [[..]],
    "labels": [..]}}`` or ``{"confusion": {task: [[..]]}}`` (labels then from the task's label set)."""
    found: dict[str, pd.DataFrame] = {}
    for key, value in metrics.items():
        if not isinstance(value, dict):
            continue
        name = f"{prefix}{key}"
        if key in ("confusion", "confusion_matrix", "confusion_matrices"):
            for task, matrix in value.items():
                if isinstance(matrix, list) and matrix and isinstance(matrix[0], list):
                    labels = _labels(task, len(matrix))
                    found[f"{prefix}{task}"] = pd.DataFrame(matrix, index=labels, columns=labels)
            continue
        matrix = value.get("confusion_matrix")
        if isinstance(matrix, list) and matrix and isinstance(matrix[0], list):
            labels = value.get("labels") or _labels(name, len(matrix))
            found[name] = pd.DataFrame(matrix, index=labels, columns=labels)
        found.update(confusion_matrices(value, f"{name}."))
    return found


RELIABILITY_SETS = {
    "sentiment": "tweets (valid split)",
    "news/sentfin_heldout": "news headlines (SEntFiN, held out)",
    "news/finentity_heldout": "news paragraphs (FinEntity, held out)",
    "news/sentivent_eval": "news sentences (SENTiVENT)",
}


NEWS_SETS = {
    "sentivent_eval": "SENTiVENT news sentences (evaluation only)",
    "sentfin_heldout": "SEntFiN headlines (held out)",
    "finentity_heldout": "FinEntity paragraphs (held out)",
}


def class_rows(matrix: Any, names: tuple[str, ...] | list[str], label: str) -> list[dict[str, Any]]:
    """Return precision, recall and text count per class of a confusion matrix (rows true, columns
    predicted); none when the matrix does not match the class names."""
    if not (isinstance(matrix, list) and len(matrix) == len(names)):
        return []
    rows = []
    for i, name in enumerate(names):
        called = sum(row[i] for row in matrix)
        actual = sum(matrix[i])
        rows.append(
            {
                "set": label,
                "class": name,
                "precision": matrix[i][i] / called if called else None,
                "recall": matrix[i][i] / actual if actual else None,
                "texts": actual,
            }
        )
    return rows


PER_CLASS_COLUMNS = ["set", "class", "precision", "recall", "texts"]


def per_class_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Return precision and recall per sentiment class for the tweets and each news set."""
    matrices = metrics.get("confusion") or {}
    rows = [
        r
        for key, label in RELIABILITY_SETS.items()
        for r in class_rows(matrices.get(key), SENTIMENT_NAMES, label)
    ]
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def topic_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Return precision and recall per topic on the topic tweets' valid split, weakest recall first."""
    rows = class_rows(
        (metrics.get("confusion") or {}).get("topic"), TOPIC_NAMES, "topic tweets (valid split)"
    )
    table = pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)
    return table.drop(columns="set").sort_values("recall", na_position="last").reset_index(drop=True)


def class_table(table: pd.DataFrame, key: str, caption: str) -> None:
    """Show a precision/recall table under its caption; nothing when there is no table."""
    if table.empty:
        return
    st.markdown(caption)
    st.dataframe(
        table,
        hide_index=True,
        key=key,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall")},
    )


def news_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Return a row per labeled news set: weighted F1 and per-class recall, the model's and the baseline's."""
    rows = []
    for name, m in (metrics.get("news") or {}).items():
        if not isinstance(m, dict) or "per_class" not in m:
            continue
        base = m.get("baseline") or {}
        rows.append(
            {
                "news set": NEWS_SETS.get(name, name),
                "texts": m["n"],
                "weighted F1": m["weighted_f1"],
                "negative recall": m["per_class"]["negative"]["recall"],
                "negative precision": m["per_class"]["negative"]["precision"],
                "positive recall": m["per_class"]["positive"]["recall"],
                "baseline weighted F1": base.get("weighted_f1"),
                "baseline negative recall": (base.get("per_class") or {}).get("negative", {}).get("recall"),
            }
        )
    return pd.DataFrame(rows)


def analyst_notes(metrics: dict[str, Any]) -> list[str]:
    """Return plain sentences an analyst can act on: per labeled news set, how the model calls negative
    texts, and how often a negative call is right (from the confusion matrices on held-out texts)."""
    notes = []
    matrices = metrics.get("confusion") or {}
    kinds = {
        "sentfin_heldout": "negative news headlines",
        "finentity_heldout": "negative news paragraphs",
        "sentivent_eval": "negative sentences from news articles (implicit, investor-perspective tone)",
    }
    neg, neu, pos = (SENTIMENT_NAMES.index(n) for n in ("negative", "neutral", "positive"))
    for name, kind in kinds.items():
        matrix = matrices.get(f"news/{name}")
        if not (isinstance(matrix, list) and len(matrix) == len(SENTIMENT_NAMES)):
            continue
        row = matrix[neg]
        total = sum(row)
        called_negative = sum(r[neg] for r in matrix)
        if not total or not called_negative:
            continue
        right = matrix[neg][neg] / called_negative
        notes.append(
            f"Of 100 {kind}, it calls **{100 * row[neg] / total:.0f} negative**, {100 * row[neu] / total:.0f}"
            f" neutral and {100 * row[pos] / total:.0f} positive; when it calls one of these texts negative,"
            f" it is right {100 * right:.0f} times in 100 ({NEWS_SETS.get(name, name)}, {total:,} negative"
            " texts)."
        )
    if notes:
        notes.append(
            "Alerts count negative stories, so a storm written in plain negative headlines is seen; one told"
            " in implicit language (a plant closing, a CFO leaving) is under-counted and may fire late or"
            " not at all. The Alerts page shows the stories behind each alert: read them."
        )
    return notes


st.markdown(
    f"**Active version** `{version}` · {row['name'] or 'unnamed'} · registered "
    f"{row['created_at']:%Y-%m-%d %H:%M} UTC · {int(row['articles']):,} articles scored"
)
metrics = metrics_of(row, model_dir)
expect, numbers, card = st.tabs(["What to expect", "Metrics", "Model card"])


def reliability_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Return the recorded reliability points (set, confidence, accuracy, n) of the known sets."""
    rows = [
        {"set": label, **point}
        for key, label in RELIABILITY_SETS.items()
        for point in (metrics.get("reliability") or {}).get(key, [])
    ]
    return pd.DataFrame(rows, columns=["set", "confidence", "accuracy", "n"])


with expect:
    notes = analyst_notes(metrics)
    if notes:
        st.markdown("\n".join(f"- {note}" for note in notes))
    else:
        st.info("No held-out news results recorded for this version: see the Metrics tab.")
    points = reliability_frame(metrics)
    if not points.empty:
        st.markdown(
            "**How sure is it, and how often is it right?** Each point: the sentiment calls made at about "
            "that confidence, and the share of them that were right. On the dashed diagonal the model's "
            "confidence means what it says; below it, the model is surer than it should be."
        )
        diagonal = alt.Chart(pd.DataFrame({"x": [0.3, 1.0]})).mark_line(strokeDash=[5, 4], color="#888")
        reliability = alt.Chart(points).encode(
            x=alt.X("confidence:Q", title="confidence of the call", scale=alt.Scale(domain=[0.3, 1])),
            y=alt.Y("accuracy:Q", title="share right", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("set:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=400)),
            tooltip=[
                "set",
                alt.Tooltip("confidence:Q", format=".0%"),
                alt.Tooltip("accuracy:Q", format=".0%"),
                "n",
            ],
        )
        # Lines join each set's points; a point's size is how many calls it stands for.
        curves = reliability.mark_line() + reliability.mark_circle().encode(
            size=alt.Size("n:Q", title="calls", legend=None, scale=alt.Scale(range=[20, 300]))
        )
        st.altair_chart(diagonal.encode(x="x:Q", y="x:Q") + curves, width="stretch")
with card:
    card_path = model_dir / CARD_FILE if model_dir else None
    if card_path and card_path.is_file():
        # The card ships with the model; still rendered as Markdown only, no raw HTML.
        st.markdown(card_path.read_text(encoding="utf-8"))
    else:
        where = f" in {model_dir}" if model_dir else " (no model path)"
        st.info(f"No {CARD_FILE} for this version{where}")

with numbers:
    news = news_table(metrics)
    if not news.empty:
        st.markdown(
            "**News sentiment** — how often a negative news text is called negative (*negative recall*) "
            "is what alerts depend on; the baseline is TF-IDF + logistic regression on the same training "
            "data."
        )
        st.dataframe(
            news,
            hide_index=True,
            key="model_news",
            column_config={
                c: st.column_config.NumberColumn(format="%.3f")
                for c in news.columns
                if c not in ("news set", "texts")
            },
        )
    class_table(
        per_class_table(metrics),
        "model_per_class",
        "**Per class** — precision (calls of a class that are right) and recall (texts of a class called "
        "so), from each set's confusion matrix.",
    )
    class_table(
        topic_table(metrics),
        "model_per_topic",
        "**Per topic** — the same for the 20 topics, weakest recall first: a topic with low recall is "
        "often filed under another one (see the topic confusion matrix below).",
    )
    flat = scalar_metrics(metrics)
    if not flat:
        st.info("No evaluation metrics recorded for this version.")
    else:
        # Tiles for the two heads on the tweets; the news sets have their own table above.
        headline = {
            k: v
            for k, v in flat.items()
            if k.count(".") == 1
            and k.split(".")[0] in ("sentiment", "topic")
            and k.rsplit(".", 1)[-1] in ("accuracy", "macro_f1")
        }
        for column, (name, value) in zip(st.columns(max(len(headline), 1)), headline.items(), strict=False):
            base = flat.get(f"baseline.{name}")
            delta = None if base is None else f"{value - base:+.3f} vs baseline"
            column.metric(name, f"{value:.3f}", delta=delta)
        st.dataframe(
            pd.DataFrame({"metric": list(flat), "value": list(flat.values())}),
            hide_index=True,
            key="model_metrics",
        )
    for task, matrix in confusion_matrices(metrics).items():
        st.markdown(f"**Confusion matrix — {task}** (rows: true label, columns: predicted)")
        long = matrix.rename_axis("true").reset_index().melt("true", var_name="predicted", value_name="n")
        grid = alt.Chart(long).encode(
            x=alt.X("predicted:N", sort=list(matrix.columns)), y=alt.Y("true:N", sort=list(matrix.index))
        )
        st.altair_chart(
            grid.mark_rect().encode(color=alt.Color("n:Q", scale=alt.Scale(scheme="blues")))
            + grid.mark_text(fontSize=10).encode(text="n:Q"),
            width="stretch",
        )

st.subheader("Scores of the active version")
totals = queries.sentiment_totals(url, version)
articles = int(totals["articles"])
c1, c2, c3, c4 = st.columns(4)
for column, label in zip((c1, c2, c3), ("negative", "neutral", "positive"), strict=True):
    share = int(totals[label]) / articles if articles else 0.0
    column.metric(label.capitalize(), f"{int(totals[label]):,}", help=f"{share:.1%} of {articles:,} articles")
c4.metric("Mean score", f"{totals['score_sum'] / articles:+.3f}" if articles else "n/a")
histogram = queries.score_histogram(url, version, BINS, SAMPLE_ROWS)
edges = [-1 + 2 * i / BINS for i in range(BINS)]
bars = pd.DataFrame({"from": edges, "to": [e + 2 / BINS for e in edges], "articles": histogram["counts"]})
st.altair_chart(
    alt.Chart(bars)
    .mark_bar()
    .encode(
        x=alt.X("from:Q", bin="binned", title="score"),
        x2="to:Q",
        y="articles:Q",
        tooltip=[alt.Tooltip("from:Q", format="+.1f"), alt.Tooltip("to:Q", format="+.1f"), "articles"],
    ),
    width="stretch",
)
percent = histogram["sample_percent"]
sampled = "" if percent >= 100 else f" from a {percent:.2g}% block sample of the scores"
st.caption(f"Score distribution{sampled}")

st.subheader("Version history")
st.dataframe(
    versions[["version", "name", "active", "created_at", "articles", "first_bucket", "last_bucket", "path"]],
    hide_index=True,
    key="model_versions",
)
