"""The label names of both heads, in the order of the model's outputs: all the dashboard needs of models/."""

from __future__ import annotations

TOPIC_NAMES: tuple[str, ...] = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)
SENTIMENT_NAMES: tuple[str, ...] = ("negative", "neutral", "positive")
# The dataset's ids: 0 Bearish, 1 Bullish, 2 Neutral -> our index into SENTIMENT_NAMES.
SENTIMENT_FROM_DATASET: dict[int, int] = {0: 0, 1: 2, 2: 1}
