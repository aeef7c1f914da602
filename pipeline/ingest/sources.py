"""The list of feeds to poll: a YAML file of ``{name, url, tags?, fulltext?, allowed_hosts?}`` mappings."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from pipeline.config import host_entry, validation_summary

# The login part of a URL in any text: scheme://user:password@ (up to the last @ before the path).
_URL_LOGIN = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s]*@")


def redact_credentials(text: str) -> str:
    """Return ``text`` with the login of every URL in it shown as ``***@``: a feed URL may carry one
    (http://user:password@host/feed), and error lines, logs and stored rows must not."""
    return _URL_LOGIN.sub(r"\1***@", text)


def without_credentials(url: str) -> str:
    """Return ``url`` without its login: the base that a feed's relative links are resolved against,
    so that the feed's password never ends up in a stored article link or an alert email."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class SourcesError(ValueError):
    """A sources file that cannot be used, with the file and entry that is wrong."""


class Source(BaseModel):
    """One feed: a unique name, its URL, free-form tags, whether to fetch each article's full text, and
    the non-public hosts and networks this source alone may fetch from (added to FINSENT_ALLOWED_HOSTS)."""

    name: str = Field(min_length=1)
    url: str
    tags: list[str] = Field(default_factory=list)
    fulltext: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        url = url.strip()
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"only http(s) feed URLs are supported, got {url!r}")
        return url

    @field_validator("allowed_hosts")
    @classmethod
    def _host_entries(cls, entries: list[str]) -> list[str]:
        return [host_entry(entry) for entry in entries]


def load_sources(path: Path | str) -> list[Source]:
    """Return the sources in ``path``; raise SourcesError naming the file and the bad entry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SourcesError(f"{path}: cannot read sources file: {exc}") from exc
    entries = raw.get("sources", raw) if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise SourcesError(f"{path}: expected a list of sources (or a mapping with key 'sources')")
    sources: list[Source] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        try:
            source = Source.model_validate(entry)
        except ValidationError as exc:
            name = entry.get("name") if isinstance(entry, dict) else None
            label = f"entry {i + 1}" + (f" ({name})" if name else "")
            raise SourcesError(f"{path}: {label}: {validation_summary(exc)}") from exc
        if source.name in seen:
            raise SourcesError(f"{path}: entry {i + 1}: duplicate source name {source.name!r}")
        seen.add(source.name)
        sources.append(source)
    return sources
