"""Alert rules: the YAML rules file (shipped default or ``FINSENT_ALERT_RULES``) as validated Rule objects."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.alerts.stats import COUNT_TESTS, TestName
from pipeline.config import PACKAGE_DIR, Settings, get_settings, validation_summary

DEFAULT_RULES = PACKAGE_DIR / "alerts" / "alert_rules.yaml"
Dimension = Literal["all", "topic", "ticker", "source"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class RulesError(ValueError):
    """A rules file that cannot be read or does not validate; the message names the file and the rule."""


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Return ``text`` ("90s", "30m", "6h", "14d", "2w", or 0) as a timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text == 0:
            return timedelta(0)
        raise ValueError(f"duration {text!r} needs a unit: s, m, h, d or w")
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"bad duration {text!r}: use a number and a unit, e.g. 30m, 6h, 14d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class Rule(BaseModel):
    """One rule: which dimension to watch over which window, the test, and the alert lifecycle knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dimension: Dimension
    window: timedelta
    baseline: timedelta = timedelta(days=14)
    # The baseline ends this long before the window starts, so a storm that has run for hours does not
    # raise its own baseline and mask itself (Prometheus users write ``offset 1d``).
    baseline_gap: timedelta = timedelta(hours=24)
    test: TestName = "beta_binomial"
    alpha: float = Field(default=0.001, gt=0, lt=1)
    min_stories: int = Field(default=5, ge=1)
    min_negative: float = Field(default=0, ge=0)  # negative stories the window needs (any test)
    # What a count test counts: ``labels``, the stories the model calls negative; ``probabilities``, the
    # expected number of negative stories, each story adding its calibrated p(negative). A model that
    # reads a bad sentence as neutral at p(negative) = 0.4 still adds 0.4: its storms are counted in
    # expectation instead of lost under the argmax.
    negatives: Literal["labels", "probabilities"] = "labels"
    min_rise: float = Field(default=0.15, ge=0, le=1)
    # Pseudo-stories at the all-stories share that steady a thin baseline (see stats.baseline_share).
    prior_stories: float = Field(default=20.0, ge=0)
    for_: timedelta = Field(default=timedelta(0), alias="for")
    keep_firing_for: timedelta = timedelta(hours=2)
    cooldown: timedelta = timedelta(hours=6)
    severity: Literal["info", "warning", "critical"] = "warning"
    recipients: tuple[str, ...] = ()
    # Optional glob patterns: only these dimension values are watched (default: every value).
    values: tuple[str, ...] = ()
    # A firing alert of a topic, source or all rule is inhibited (recorded and shown, not emailed) when
    # tickers with firing alerts explain it: without the articles naming them, the window does not
    # breach. Ticker rules ignore it.
    inhibit_by_tickers: bool = True

    @field_validator(
        "window", "baseline", "baseline_gap", "for_", "keep_firing_for", "cooldown", mode="before"
    )
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("recipients", mode="before")
    @classmethod
    def _recipients(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _windows_are_hours(self) -> Rule:
        # Rollups are hourly: windows and baselines are whole hours of buckets.
        for label, span in (("window", self.window), ("baseline", self.baseline)):
            if span <= timedelta(0) or span % timedelta(hours=1):
                raise ValueError(f"{label} must be a positive whole number of hours, got {span}")
        if self.baseline_gap < timedelta(0) or self.baseline_gap % timedelta(hours=1):
            raise ValueError(f"baseline_gap must be zero or a whole number of hours, got {self.baseline_gap}")
        if self.negatives == "probabilities" and self.test not in COUNT_TESTS:
            # The share tests count whole stories (binomial trials); only a count test takes a sum.
            raise ValueError("negatives: probabilities needs a count test (poisson_count or poisson_volume)")
        return self


def rules_from_data(data: Any, origin: str = "<rules>") -> list[Rule]:
    """Return the rules in a parsed rules document (``defaults`` merged into each of ``rules``)."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RulesError(f"{origin}: expected a mapping with a 'rules' list")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise RulesError(f"{origin}: 'defaults' must be a mapping")
    rules: list[Rule] = []
    for index, raw in enumerate(data["rules"]):
        if not isinstance(raw, dict):
            raise RulesError(f"{origin}: rule #{index + 1} is not a mapping")
        label = raw.get("name", f"#{index + 1}")
        try:
            rules.append(Rule.model_validate({**defaults, **raw}))
        except ValidationError as exc:
            raise RulesError(f"{origin}: rule {label}: {validation_summary(exc)}") from exc
        except ValueError as exc:
            raise RulesError(f"{origin}: rule {label}: {exc}") from exc
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RulesError(f"{origin}: rule names must be unique, repeated: {', '.join(duplicates)}")
    return rules


def load_rules(path: Path | None = None, settings: Settings | None = None) -> list[Rule]:
    """Return the rules from ``path``, else ``FINSENT_ALERT_RULES``, else the shipped default file."""
    path = path or (settings or get_settings()).alert_rules or DEFAULT_RULES
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from exc
    return rules_from_data(data, str(path))
