"""The list of feeds to poll: a YAML file of ``{name, url, tags?, fulltext?}`` mappings."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from pipeline.config import validation_summary


class SourcesError(ValueError):
    """A sources file that cannot be used, with the file and entry that is wrong."""


class Source(BaseModel):
    """One feed: a unique name, its URL, free-form tags, and whether to fetch each article's full text."""

    name: str = Field(min_length=1)
    url: str
    tags: list[str] = Field(default_factory=list)
    fulltext: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        url = url.strip()
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"only http(s) feed URLs are supported, got {url!r}")
        return url


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
