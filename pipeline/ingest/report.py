"""What an ingest run reports: one SourceReport per source and the run's IngestReport."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SourceReport:
    """What one source gave in one run; ``items_seen = items_new + duplicates + invalid + filtered``."""

    name: str
    url: str
    status: str  # ok | not_modified | error
    http_status: int | None = None
    bytes: int = 0
    items_seen: int = 0
    items_new: int = 0
    duplicates: int = 0
    invalid: int = 0
    filtered: int = 0
    duration_ms: int = 0
    error: str | None = None
    warning: str | None = None


@dataclass
class IngestReport:
    """Per-source rows and totals of one ingest run."""

    run_id: str
    sources: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0

    def _sum(self, attr: str) -> int:
        return sum(getattr(s, attr) for s in self.sources)

    @property
    def sources_ok(self) -> int:
        """Return the sources polled without error (changed or not)."""
        return sum(s.status != "error" for s in self.sources)

    @property
    def sources_failed(self) -> int:
        return sum(s.status == "error" for s in self.sources)

    @property
    def not_modified(self) -> int:
        return sum(s.status == "not_modified" for s in self.sources)

    @property
    def items_seen(self) -> int:
        return self._sum("items_seen")

    @property
    def items_new(self) -> int:
        return self._sum("items_new")

    @property
    def duplicates(self) -> int:
        return self._sum("duplicates")

    @property
    def invalid(self) -> int:
        return self._sum("invalid")

    @property
    def filtered(self) -> int:
        return self._sum("filtered")

    @property
    def bytes(self) -> int:
        return self._sum("bytes")

    def totals(self) -> dict[str, Any]:
        """Return the run's totals as a flat mapping."""
        return {
            "run_id": self.run_id,
            "sources": len(self.sources),
            "sources_ok": self.sources_ok,
            "sources_failed": self.sources_failed,
            "not_modified": self.not_modified,
            "items_seen": self.items_seen,
            "items_new": self.items_new,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "filtered": self.filtered,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }

    def as_dict(self) -> dict[str, Any]:
        """Return totals plus one mapping per source (JSON-ready)."""
        return {**self.totals(), "per_source": [asdict(s) for s in self.sources]}
