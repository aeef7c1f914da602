"""Tests for models.training.weak: directional rules, the lexicon, combining votes and measuring them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.training.weak import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    Votes,
    _dict_assignments,
    combine,
    finance_lexicon,
    lexicon_vote,
    model_vote,
    rule_hits,
    rule_vote,
    source_quality,
    split_lead,
    votes_for,
)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Net sales rose 5% to $1.2 billion in the quarter", POSITIVE),
        ("The company swung to a loss in the fourth quarter", NEGATIVE),
        ("Acme cuts its full-year outlook", NEGATIVE),
        ("Globex misses analysts' estimates", NEGATIVE),
        ("Initech downgraded to sell at Morgan Stanley", NEGATIVE),
        ("Hooli beats profit estimates", POSITIVE),
        ("Shares hit a record high on Monday", POSITIVE),
        ("Operating profit jumped on strong demand", POSITIVE),
        ("GM is down 0.5 % to $ 43.20 in recent trading", NEGATIVE),
    ],
)
def test_rules_read_directional_statements(text: str, label: int) -> None:
    assert rule_vote(text) == label


@pytest.mark.parametrize(
    "text",
    [
        "Acme CEO steps down",  # 'down' without a figure is not a move
        "Globex to hold annual meeting in Zurich",
        "Sales rose 4% but operating profit fell 10%",  # both directions: abstain
    ],
)
def test_rules_abstain_without_a_single_direction(text: str) -> None:
    assert rule_vote(text) is None


def test_rule_hits_name_the_rules_that_matched() -> None:
    hits = rule_hits("Revenue fell 3% and the firm cut its dividend")
    assert set(hits[NEGATIVE]) == {"moved down by a figure", "results down", "cut guidance"}
    assert hits[POSITIVE] == []


def test_the_finance_lexicon_is_read_from_the_package_files() -> None:
    lexicon = finance_lexicon()
    assert len(lexicon) > 7000
    assert lexicon["abandon"] < 0 < lexicon["able"]
    assert all(-1.0 <= v <= 1.0 for v in lexicon.values())


def test_lexicon_files_are_parsed_not_run(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.py"
    lines = ("raise SystemExit('ran')", "lex = {}", "lex['Gain'] = 0.5", "lex['loss'] = -1", "lex['x'] = ''")
    path.write_text("\n".join(lines) + "\n")
    assert _dict_assignments(path) == {"gain": 0.5, "loss": -1.0}


def test_lexicon_votes_only_past_its_threshold() -> None:
    lexicon = {"robust": 0.8, "weak": -0.6, "steady": 0.1}
    assert lexicon_vote("robust demand", lexicon, 0.4) == POSITIVE
    assert lexicon_vote("weak demand and robust pricing", lexicon, 0.4) is None  # mean 0.1
    assert lexicon_vote("weak weak steady", lexicon, 0.3) == NEGATIVE
    assert lexicon_vote("nothing here", lexicon, 0.1) is None


def test_model_votes_only_when_confident() -> None:
    assert model_vote(np.array([0.9, 0.05, 0.05]), 0.85) == NEGATIVE
    assert model_vote(np.array([0.5, 0.3, 0.2]), 0.85) is None


@pytest.mark.parametrize(
    ("votes", "label"),
    [
        (Votes(POSITIVE, None, None), POSITIVE),  # a rule alone decides
        (Votes(POSITIVE, POSITIVE, NEUTRAL), POSITIVE),  # a neutral model does not veto a direction
        (Votes(POSITIVE, NEGATIVE, None), None),  # the lexicon contradicts the rule
        (Votes(NEGATIVE, None, POSITIVE), None),  # the model contradicts the rule
        (Votes(None, NEGATIVE, NEGATIVE), NEGATIVE),  # lexicon and model agree
        (Votes(None, NEGATIVE, None), None),  # the lexicon alone is not enough
        (Votes(None, None, NEUTRAL), NEUTRAL),  # neutral: a confident model, no direction seen
        (Votes(None, POSITIVE, NEUTRAL), None),
        (Votes(None, None, POSITIVE), None),  # the model alone does not label a polarity
    ],
)
def test_combine_keeps_only_uncontradicted_votes(votes: Votes, label: int | None) -> None:
    assert combine(votes) == label


def test_source_quality_counts_coverage_and_accuracy() -> None:
    texts = ["Sales rose 5%", "Sales fell 5%", "Acme to hold meeting", "Profit jumped"]
    labels = [POSITIVE, POSITIVE, NEUTRAL, POSITIVE]
    probs = np.array([[0.0, 0.1, 0.9], [0.0, 0.1, 0.9], [0.0, 0.95, 0.05], [0.3, 0.4, 0.3]])
    quality = source_quality(votes_for(texts, probs, {}, 0.4, 0.85), labels)
    assert quality["rules"] == {"coverage": 0.75, "accuracy": round(2 / 3, 4), "n": 3}
    assert quality["model"] == {"coverage": 0.75, "accuracy": 1.0, "n": 3}
    assert quality["lexicon"]["n"] == 0
    # 'Sales fell 5%' has a negative rule and a positive model: no label; the others are right.
    assert quality["combined"] == {"coverage": 0.75, "accuracy": 1.0, "n": 3}


def test_split_lead_separates_a_headline_from_its_lead() -> None:
    line = "Exxon offers plan to end Alaska dispute. Exxon offered to pay a fine to resolve a dispute."
    assert split_lead(line) == ["Exxon offers plan to end Alaska dispute", line.split(". ", 1)[1]]
    assert split_lead("U.S. stocks rise") == ["U.S. stocks rise"]
