"""Tickers mentioned in an article: cashtags (``$AAPL``, ``$BRK.B``) and watchlist names and aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from pipeline.config import DEFAULT_WATCHLIST

# "$AAPL", "$BRK.B", "$aapl" is not (lower case is prose), "$5bn" is not (a number), "US$" is not a tag.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Z]{1,6}(?:\.[A-Z]{1,2})?)(?![\w])")
# Words that make a common-word alias ("Apple", "Target") read as the company rather than the thing.
COMPANY_CUES = frozenset(
    {
        "shares",
        "share",
        "stock",
        "stocks",
        "earnings",
        "revenue",
        "revenues",
        "profit",
        "profits",
        "sales",
        "quarter",
        "quarterly",
        "results",
        "ceo",
        "cfo",
        "chief",
        "executive",
        "investors",
        "investor",
        "analyst",
        "analysts",
        "inc",
        "corp",
        "co",
        "plc",
        "ltd",
        "nyse",
        "nasdaq",
        "dividend",
        "dividends",
        "guidance",
        "outlook",
        "forecast",
        "forecasts",
        "retailer",
        "company",
        "company's",
        "buyback",
        "valuation",
        "market",
        "deal",
        "merger",
        "acquisition",
        "acquire",
        "acquires",
        "layoffs",
        "jobs",
        "iphone",
        "ipad",
        "app",
        "store",
        "stake",
        "lawsuit",
        "regulator",
        "regulators",
        "antitrust",
        "sec",
        "billion",
        "million",
        "trillion",
        "upgrade",
        "downgrade",
        "rating",
    }
)
_WORDS = re.compile(r"[a-z][a-z']*")


class WatchlistError(ValueError):
    """A watchlist file that cannot be used, naming the file and the bad entry."""


class WatchEntity(BaseModel):
    """One watched entity: its display name, the tag stored on articles, and how the news names it."""

    name: str = Field(min_length=1)
    ticker: str = Field(min_length=1)
    kind: str = "company"
    aliases: list[str] = Field(default_factory=list)
    # Aliases that are also ordinary words: they need company context and may not sit in an excluded phrase.
    common: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


def load_watchlist(path: Path | str = DEFAULT_WATCHLIST) -> list[WatchEntity]:
    """Return the entities in a watchlist YAML file; raise WatchlistError naming the file and entry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WatchlistError(f"{path}: cannot read watchlist: {exc}") from exc
    if not isinstance(raw, list):
        raise WatchlistError(f"{path}: expected a list of entities")
    entities: list[WatchEntity] = []
    for i, entry in enumerate(raw):
        try:
            entities.append(WatchEntity.model_validate(entry))
        except ValidationError as exc:
            raise WatchlistError(f"{path}: entry {i}: {exc.errors()[0]['msg']} ({entry!r})") from exc
    return entities


@dataclass(frozen=True)
class _Alias:
    ticker: str
    common: bool
    # Lower-case excluded phrases with the offset of the alias inside each.
    excludes: tuple[tuple[str, int], ...]


def _alternation(aliases: list[str]) -> str:
    """Return a regex matching any of ``aliases``, factored as a prefix trie.

    Python's ``re`` tries a flat alternation's branches one by one at every position; sharing prefixes
    ("Bank of America|Bank of Canada|..." -> "Bank of (?:America|Canada|...)") makes tagging several
    times faster. Optional tails are greedy, so the longest alias wins.
    """
    trie: dict[str, Any] = {}
    for alias in set(aliases):
        node = trie
        for ch in alias:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        ends_here = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        if len(branches) == 1 and not ends_here:
            return branches[0]
        group = "(?:" + "|".join(branches) + ")"
        return group + "?" if ends_here else group

    return build(trie)


@dataclass
class EntityTagger:
    """Finds watchlist entities and cashtags in text; build once, call :meth:`tickers` per article."""

    entities: list[WatchEntity]
    _exact: dict[str, _Alias] = field(default_factory=dict, init=False)
    _folded: dict[str, _Alias] = field(default_factory=dict, init=False)
    _exact_re: re.Pattern[str] | None = field(default=None, init=False)
    _folded_re: re.Pattern[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        for entity in self.entities:
            common = set(entity.common)
            for alias in {entity.name, *entity.aliases}:
                alias = alias.strip()
                if not alias:
                    continue
                excludes = tuple(
                    (phrase.lower(), phrase.lower().find(alias.lower()))
                    for phrase in entity.exclude
                    if alias.lower() in phrase.lower()
                )
                info = _Alias(entity.ticker, alias in common, excludes)
                # One word ("Apple", "AMD") must match exactly; a phrase ("Bank of England") in any case.
                if " " in alias:
                    self._folded.setdefault(alias.lower(), info)
                else:
                    self._exact.setdefault(alias, info)
        boundary_l, boundary_r = r"(?<![\w$&])(", r")(?![\w&])"
        if self._exact:
            self._exact_re = re.compile(boundary_l + _alternation(list(self._exact)) + boundary_r)
        if self._folded:
            self._folded_re = re.compile(
                boundary_l + _alternation(list(self._folded)) + boundary_r, re.IGNORECASE
            )

    @staticmethod
    def _excluded(text_lower: str, start: int, alias: _Alias) -> bool:
        """Return whether the match at ``start`` sits inside one of the alias's excluded phrases."""
        for phrase, offset in alias.excludes:
            begin = start - offset
            if begin < 0 or not text_lower.startswith(phrase, begin):
                continue
            if begin > 0 and text_lower[begin - 1].isalnum():
                continue
            # The phrase must end at a word boundary; a plural ("apple pies") still counts.
            after = text_lower[begin + len(phrase) : begin + len(phrase) + 2]
            if after[:1] == "s":
                after = after[1:]
            if not after[:1].isalnum():
                return True
        return False

    def tickers(self, text: str) -> list[str]:
        """Return the sorted distinct tickers mentioned in ``text``."""
        if not text:
            return []
        found = {m.group(1) for m in _CASHTAG.finditer(text)}
        lower = text.lower()
        has_cue: bool | None = None
        passes = ((self._exact_re, self._exact, False), (self._folded_re, self._folded, True))
        for pattern, table, fold in passes:
            if pattern is None:
                continue
            for match in pattern.finditer(text):
                alias = table[match.group(1).lower() if fold else match.group(1)]
                if alias.ticker in found:
                    continue
                if alias.excludes and self._excluded(lower, match.start(), alias):
                    continue
                if alias.common:
                    if has_cue is None:
                        has_cue = any(word in COMPANY_CUES for word in _WORDS.findall(lower))
                    if not has_cue:
                        continue
                found.add(alias.ticker)
        return sorted(found)


@lru_cache(maxsize=4)
def tagger_for(path: Path | str = DEFAULT_WATCHLIST) -> EntityTagger:
    """Return a tagger for the watchlist at ``path`` (built once per process)."""
    return EntityTagger(load_watchlist(path))


def tag_tickers(text: str, path: Path | str = DEFAULT_WATCHLIST) -> list[str]:
    """Return the tickers mentioned in ``text`` using the watchlist at ``path``."""
    return tagger_for(path).tickers(text)
