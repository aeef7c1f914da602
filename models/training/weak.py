"""Weak sentiment labels for unlabeled news: directional rules, a financial lexicon, a model's confident
calls, and the agreement of the three.

News sentences carry their polarity in how a number moved ("net sales rose 5 % to ..."), in what an
analyst or a company did ("cuts outlook", "downgraded to sell") and in loaded words ("impairment",
"robust"). Each source votes a class or abstains; :func:`combine` keeps a line only where the votes
do not contradict each other. How often each source votes (coverage) and how often it is right
(accuracy) are measured on labeled news by :func:`source_quality`.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.labels import SENTIMENT_NAMES

NEGATIVE, NEUTRAL, POSITIVE = (SENTIMENT_NAMES.index(n) for n in ("negative", "neutral", "positive"))

_NUM = r"\d+(?:[.,]\d+)?\s?(?:%|percent|pct|per cent|bps|basis points)"
_UP = (
    r"rose|rises?|rising|climb(?:s|ed|ing)?|jump(?:s|ed|ing)?|surg(?:e|es|ed|ing)|soar(?:s|ed|ing)?|"
    r"gain(?:s|ed|ing)?|advanc(?:e|es|ed|ing)|increas(?:e|es|ed|ing)|grew|grow(?:s|ing)?|"
    r"rall(?:y|ies|ied|ying)|rebound(?:s|ed|ing)?|spurt(?:s|ed)?|zoom(?:s|ed)?|doubl(?:e|es|ed)|"
    r"skyrocket(?:s|ed)?|up|higher|expand(?:s|ed)?|improv(?:e|es|ed)"
)
_DOWN = (
    r"fell|falls?|falling|drop(?:s|ped|ping)?|declin(?:e|es|ed|ing)|slump(?:s|ed|ing)?|"
    r"plung(?:e|es|ed|ing)|tumbl(?:e|es|ed|ing)|slid(?:e|es|ing)?|slip(?:s|ped|ping)?|sink(?:s|ing)?|"
    r"sank|sunk|tank(?:s|ed)?|crash(?:es|ed)?|decreas(?:e|es|ed|ing)|shed(?:s|ding)?|lost|"
    r"los(?:e|es|ing)|down|dip(?:s|ped)?|retreat(?:s|ed)?|skid(?:s|ded)?|lower|halv(?:e|es|ed)|"
    r"shr(?:ank|inks?|unk)|contract(?:s|ed)|slow(?:s|ed)|weaken(?:s|ed)?|deteriorat(?:e|es|ed)"
)
_RESULT = r"profits?|earnings|revenues?|sales|income|ebitda|margins?|eps|turnover|orders|bookings|traffic"
_EXPECT = r"estimates?|expectations?|forecasts?|consensus|views?|street"
_GUIDE = r"outlook|guidance|forecasts?|dividends?|(?:price )?targets?|payout|estimates?|view|buyback"

# (name, pattern): each named for what it recognises, so coverage is reported per rule.
POSITIVE_RULES: tuple[tuple[str, str], ...] = (
    ("moved up by a figure", rf"\b(?:{_UP})\b[^.;]{{0,40}}?\b{_NUM}"),
    ("results up", rf"\b(?:{_RESULT})\b[^.;]{{0,25}}\b(?:{_UP})\b"),
    (
        "beat expectations",
        rf"\b(?:beat|beats|beating|tops?|topped|exceed(?:s|ed)?|surpass(?:es|ed)?)\b"
        rf"[^.;]{{0,30}}\b(?:{_EXPECT})\b",
    ),
    (
        "raised guidance",
        rf"\b(?:rais(?:e|es|ed|ing)|lift(?:s|ed)?|boost(?:s|ed)?|hik(?:e|es|ed)|"
        rf"increas(?:e|es|ed)|ups)\b[^.;]{{0,25}}\b(?:{_GUIDE})\b",
    ),
    ("upgrade", r"\bupgrad(?:e|es|ed|ing)\b|\b(?:outperform|overweight|strong buy)\b"),
    ("record high", r"\b(?:record|all-time|52-week|multi-year|lifetime) (?:high|highs|profit|revenue|sales)"),
    (
        "swung to profit",
        r"\b(?:swung|swings?|return(?:s|ed)?|turn(?:s|ed)?) (?:back )?to (?:a )?"
        r"(?:net )?profit",
    ),
    (
        "won business",
        r"\b(?:wins?|won|bags?|bagged|secur(?:e|es|ed)|clinch(?:es|ed)?|land(?:s|ed)?)\b"
        r"[^.;]{0,30}\b(?:contract|order|deal|approval|mandate)s?\b",
    ),
)
NEGATIVE_RULES: tuple[tuple[str, str], ...] = (
    ("moved down by a figure", rf"\b(?:{_DOWN})\b[^.;]{{0,40}}?\b{_NUM}"),
    ("results down", rf"\b(?:{_RESULT})\b[^.;]{{0,25}}\b(?:{_DOWN})\b"),
    (
        "missed expectations",
        rf"\b(?:miss(?:es|ed)?|lag(?:s|ged)?|trail(?:s|ed)?|short of|below)\b"
        rf"[^.;]{{0,30}}\b(?:{_EXPECT})\b",
    ),
    (
        "cut guidance",
        rf"\b(?:cut(?:s|ting)?|lower(?:s|ed|ing)?|slash(?:es|ed|ing)?|reduc(?:e|es|ed|ing)|"
        rf"trim(?:s|med|ming)?|withdr(?:aw|aws|ew|awn)|suspend(?:s|ed)?|scrap(?:s|ped)?|pull(?:s|ed)?)\b"
        rf"[^.;]{{0,25}}\b(?:{_GUIDE}|rating)\b",
    ),
    ("downgrade", r"\bdowngrad(?:e|es|ed|ing)\b|\b(?:underperform|underweight)\b"),
    ("record low", r"\b(?:record|all-time|52-week|multi-year|lifetime) lows?\b"),
    (
        "swung to loss",
        r"\b(?:swung|swings?|turn(?:s|ed)?|plung(?:es|ed)|slipp?(?:s|ed)?) (?:in)?to (?:a )?"
        r"(?:net )?loss",
    ),
    ("loss widened", r"\bwiden(?:s|ed|ing)?\b[^.;]{0,15}\bloss|\bloss(?:es)?\b[^.;]{0,20}\bwiden"),
    ("job cuts", r"\b(?:lay(?:s|ing)? off|laid off|layoffs?|job cuts?|cut(?:s|ting)? [\d,]+ jobs)\b"),
    (
        "distress",
        r"\b(?:bankrupt(?:cy)?|insolven(?:t|cy)|defaults?|defaulted|chapter 11|liquidation|"
        r"impairment|write-?downs?|writedowns?)\b",
    ),
)
_COMPILED = {
    POSITIVE: tuple((name, re.compile(p, re.IGNORECASE)) for name, p in POSITIVE_RULES),
    NEGATIVE: tuple((name, re.compile(p, re.IGNORECASE)) for name, p in NEGATIVE_RULES),
}
_WORD = re.compile(r"[a-z][a-z'-]+")


def rule_hits(text: str) -> dict[int, list[str]]:
    """Return the names of the positive and the negative rules that match ``text``."""
    return {label: [name for name, rx in rules if rx.search(text)] for label, rules in _COMPILED.items()}


def rule_vote(text: str) -> int | None:
    """Return the class the directional rules give ``text``, or None when none or both directions match."""
    hits = rule_hits(text)
    if bool(hits[POSITIVE]) == bool(hits[NEGATIVE]):
        return None
    return POSITIVE if hits[POSITIVE] else NEGATIVE


class LexiconNotFound(RuntimeError):
    """The ``finvader`` package, which ships the lexicons, is not installed."""


@lru_cache(maxsize=1)
def finance_lexicon() -> dict[str, float]:
    """Return word -> polarity in [-1, 1]: SentiBignomics with Henry's (2008) earnings-release words on top.

    Both ship in the ``finvader`` package (Apache-2.0). Its files are read as data, not imported: the
    package downloads a VADER lexicon when imported, and nothing here may reach a network.
    """
    spec = importlib.util.find_spec("finvader")
    if spec is None or not spec.submodule_search_locations:
        raise LexiconNotFound("the finvader package (financial lexicons) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    words = _dict_assignments(folder / "SentiBignomics.py")
    henry = _dict_assignments(folder / "Henry.py")
    words.update({w: max(-1.0, min(1.0, v / 1.5)) for w, v in henry.items()})  # Henry's scale is +-1.5
    return words


def _dict_assignments(path: Path) -> dict[str, float]:
    """Return the ``name['word'] = number`` assignments of a lexicon file, parsed without running it."""
    out: dict[str, float] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            key, value = node.targets[0].slice, node.value
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                number = ast.literal_eval(value)
                if isinstance(number, int | float):
                    out[key.value.lower()] = float(number)
    return out


def lexicon_score(text: str, lexicon: dict[str, float]) -> tuple[float, int]:
    """Return the mean polarity of ``text``'s lexicon words and how many there were."""
    scores = [lexicon[w] for w in _WORD.findall(text.lower()) if w in lexicon]
    return (float(np.mean(scores)) if scores else 0.0), len(scores)


def lexicon_vote(text: str, lexicon: dict[str, float], threshold: float = 0.25) -> int | None:
    """Return the lexicon's class for ``text``: polar when its words' mean polarity passes ``threshold``."""
    score, hits = lexicon_score(text, lexicon)
    if hits == 0 or abs(score) < threshold:
        return None
    return POSITIVE if score > 0 else NEGATIVE


def model_vote(probs: np.ndarray, confidence: float = 0.85) -> int | None:
    """Return the model's class when its probability is at least ``confidence``, else None."""
    best = int(np.argmax(probs))
    return best if probs[best] >= confidence else None


@dataclass(frozen=True)
class Votes:
    """One line's votes; None is an abstention."""

    rule: int | None
    lexicon: int | None
    model: int | None


def combine(votes: Votes) -> int | None:
    """Return the weak label of one line, or None.

    A rule decides unless the lexicon or the model calls the opposite polarity; without a rule, the
    lexicon and the model must agree on a polarity; a line is neutral only when the model is confident
    of it and neither the rules nor the lexicon see a direction.
    """
    polar = {NEGATIVE, POSITIVE}
    if votes.rule is not None:
        opposite = polar - {votes.rule}
        return None if votes.lexicon in opposite or votes.model in opposite else votes.rule
    if votes.lexicon is not None:
        return votes.lexicon if votes.model == votes.lexicon else None
    return NEUTRAL if votes.model == NEUTRAL else None


def votes_for(
    texts: Sequence[str],
    probs: np.ndarray | None,
    lexicon: dict[str, float],
    threshold: float,
    confidence: float,
) -> list[Votes]:
    """Return each text's votes; ``probs``: a model's sentiment probabilities, rows as ``texts``."""
    return [
        Votes(
            rule_vote(text),
            lexicon_vote(text, lexicon, threshold),
            None if probs is None else model_vote(probs[i], confidence),
        )
        for i, text in enumerate(texts)
    ]


def source_quality(votes: Iterable[Votes], labels: Sequence[int]) -> dict[str, dict[str, float]]:
    """Return per source (rules, lexicon, model, combined) its coverage and accuracy against ``labels``."""
    votes = list(votes)
    out: dict[str, dict[str, float]] = {}
    pick = {
        "rules": lambda v: v.rule,
        "lexicon": lambda v: v.lexicon,
        "model": lambda v: v.model,
        "combined": combine,
    }
    for name, get in pick.items():
        called = [(get(v), y) for v, y in zip(votes, labels, strict=True) if get(v) is not None]
        out[name] = {
            "coverage": round(len(called) / max(1, len(votes)), 4),
            "accuracy": round(sum(p == y for p, y in called) / max(1, len(called)), 4),
            "n": len(called),
        }
    return out


def split_lead(line: str) -> list[str]:
    """Return a 'headline. lead' line as its headline and its lead (one item when there is no lead)."""
    head, sep, lead = line.partition(". ")
    if not sep or len(head) < 15 or len(lead) < 30:
        return [line]
    return [head, lead]
