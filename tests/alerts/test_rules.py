"""pipeline.alerts.rules: the shipped rules file, user overrides, durations and validation errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.alerts.rules import DEFAULT_RULES, Rule, RulesError, load_rules, parse_duration, rules_from_data
from pipeline.config import Settings


def test_durations_parse_with_units() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration("14d") == timedelta(days=14)
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration(0) == timedelta(0)
    with pytest.raises(ValueError, match="needs a unit"):
        parse_duration(5)
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("six hours")


def test_shipped_rules_cover_every_dimension_and_window() -> None:
    rules = load_rules(DEFAULT_RULES)
    pairs = {(r.dimension, r.window) for r in rules}
    for dimension in ("all", "topic", "source"):
        for hours in (1, 6, 24):
            assert (dimension, timedelta(hours=hours)) in pairs
    # Tickers: counts of negative stories over 2, 6 and 24 hours, and bursts of stories that lean
    # negative in expectation over 3 and 12 hours (bench/storms.py measures them).
    counts = {r.window: r for r in rules if r.dimension == "ticker" and r.test == "poisson_count"}
    assert set(counts) == {timedelta(hours=h) for h in (2, 6, 24)}
    assert all(r.min_negative >= 3 and r.negatives == "labels" for r in counts.values())
    bursts = {r.window: r for r in rules if r.dimension == "ticker" and r.test == "poisson_volume"}
    assert set(bursts) == {timedelta(hours=h) for h in (3, 12)}
    assert all(r.negatives == "probabilities" and r.min_rise > 0 for r in bursts.values())
    assert all(r.baseline == timedelta(days=14) for r in rules)
    assert all(r.keep_firing_for > timedelta(0) for r in rules)


def test_setting_points_at_the_users_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "defaults: {alpha: 0.01, recipients: desk@example.com}\n"
        "rules:\n"
        "  - {name: acme, dimension: ticker, window: 2h, for: 30m, values: [ACME], severity: critical}\n",
        encoding="utf-8",
    )
    (rule,) = load_rules(settings=Settings(alert_rules=path))
    assert rule.name == "acme"
    assert rule.window == timedelta(hours=2)
    assert rule.for_ == timedelta(minutes=30)
    assert rule.alpha == 0.01
    assert rule.recipients == ("desk@example.com",)
    assert rule.values == ("ACME",)


def test_invalid_rule_names_the_file_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - {name: x, dimension: sector, window: 1h}\n", encoding="utf-8")
    with pytest.raises(RulesError, match=r"bad\.yaml: rule x"):
        load_rules(path)


def test_windows_must_be_whole_hours() -> None:
    with pytest.raises(RulesError, match="whole number of hours"):
        rules_from_data({"rules": [{"name": "x", "dimension": "all", "window": "90m"}]})


def test_baseline_gap_defaults_to_a_day_and_must_be_whole_hours() -> None:
    rule = Rule.model_validate({"name": "r", "dimension": "all", "window": "1h"})
    assert rule.baseline_gap == timedelta(hours=24)
    assert Rule.model_validate(
        {"name": "r", "dimension": "all", "window": "1h", "baseline_gap": "0h"}
    ).baseline_gap == timedelta(0)
    with pytest.raises(ValueError, match="baseline_gap"):
        Rule.model_validate({"name": "r", "dimension": "all", "window": "1h", "baseline_gap": "90m"})


def test_unknown_keys_and_duplicate_names_are_rejected() -> None:
    with pytest.raises(RulesError, match="rule x"):
        rules_from_data({"rules": [{"name": "x", "dimension": "all", "window": "1h", "treshold": 3}]})
    dup = {"name": "x", "dimension": "all", "window": "1h"}
    with pytest.raises(RulesError, match="repeated: x"):
        rules_from_data({"rules": [dup, dup]})


def test_missing_or_broken_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(broken)
    with pytest.raises(RulesError, match="'rules' list"):
        rules_from_data({"defaults": {}})


def test_a_bad_rule_is_one_line_naming_file_rule_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: t1, dimension: ticker, window: 2h, alpha: 2, min_stories: 0}\n")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: rule t1: field 'alpha': Input should be less than 1; ")
    assert "field 'min_stories': Input should be greater than or equal to 1" in message


def test_expected_negatives_need_a_count_test() -> None:
    with pytest.raises(RulesError, match="needs a count test"):
        rules_from_data(
            {"rules": [{"name": "x", "dimension": "topic", "window": "6h", "negatives": "probabilities"}]}
        )
