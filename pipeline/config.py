"""Settings: one pydantic-settings class, read from the environment (prefix ``FINSENT_``)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEFAULT_SOURCES = PACKAGE_DIR / "ingest" / "sources.yaml"
DEFAULT_WATCHLIST = PACKAGE_DIR / "ingest" / "watchlist.yaml"
DEFAULT_MODEL_DIR = REPO_DIR / "models" / "default"


# The blanket switch that let every private and loopback address be fetched, and so every redirect to
# one; the scoped allowed_hosts replaced it. It is still read, only to refuse it with this message.
ALLOW_PRIVATE_HOSTS_REPLACED = (
    "FINSENT_ALLOW_PRIVATE_HOSTS was replaced by FINSENT_ALLOWED_HOSTS: list the hosts or networks "
    "feeds may be fetched from (e.g. 127.0.0.1, feeds.internal, 10.20.0.0/16)"
)


# A host name as an allowlist names it: dot-separated labels of letters, digits, hyphens and underscores
# (no scheme, port or path).
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


def host_entry(entry: str) -> str:
    """Return an allowlist entry (host name, IP address or CIDR network) normalised to lower case;
    raise ValueError saying what is wrong with it, so a typo fails at load time, not at fetch time."""
    text = entry.strip().lower()
    address, slash, _prefix = text.partition("/")
    if slash and _is_address(address):
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry.strip()!r} is not a network: {exc}") from None
    text = text.removeprefix("[").removesuffix("]")
    if _is_address(text):
        return str(ipaddress.ip_address(text))
    text = text.removesuffix(".")  # the root label: "feeds.lab." is the host of http://feeds.lab/
    if not _HOST_NAME.match(text):
        raise ValueError(f"{entry.strip()!r} is not a host name, an IP address or a CIDR network")
    return text


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class SettingsError(ValueError):
    """An unusable setting in the environment or ``.env``; the message is one line naming it."""


def _field_name(loc: tuple[int | str, ...]) -> str:
    return f"field {'.'.join(str(p) for p in loc) or 'value'!r}"


def validation_summary(
    exc: ValidationError, name: Callable[[tuple[int | str, ...]], str] = _field_name
) -> str:
    """Return a pydantic error as one line: each failing field by ``name(loc)``, with its reason (alone
    when the reason already starts with that name)."""
    parts = []
    for error in exc.errors():
        where = name(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(message if message.startswith(where) else f"{where}: {message}")
    return "; ".join(parts)


def _variable_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a Settings field (``FINSENT_...``), or the alias it was read by."""
    field = str(loc[0]) if loc else "settings"
    return f"FINSENT_{field.upper()}" if field in Settings.model_fields else field


class Settings(BaseSettings):
    """Every knob of finsent; each field is ``FINSENT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FINSENT_", env_file=".env", extra="ignore")

    # Where the embedded PostgreSQL, caches and checkpoints live.
    home: Path = Field(default_factory=lambda: Path(user_data_dir("finsent")))
    # Directory with the shared real data (labeled sets, recorded feeds, article pages, unlabeled text).
    data_dir: Path | None = None
    # Unset -> an embedded PostgreSQL under ``home``; also read from plain ``DATABASE_URL``.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "FINSENT_DATABASE_URL")
    )
    # The dashboard's connection (a login role in finsent_readonly); unset -> the database above.
    dashboard_database_url: str | None = None

    sources: Path = DEFAULT_SOURCES
    watchlist: Path = DEFAULT_WATCHLIST
    model_dir: Path = DEFAULT_MODEL_DIR

    # Fetching.
    user_agent: str = "finsent/0.1 (+https://github.com/finsent/finsent; financial news sentiment monitor)"
    # Feeds on private networks, scoped: comma-separated host names, IP addresses and CIDR networks
    # ("127.0.0.1, feeds.internal, 10.20.0.0/16"); any other non-public address (loopback included) is
    # refused. Link-local and cloud-metadata addresses only when named here exactly (a name or an
    # address, not a network). A source's own ``allowed_hosts`` in the sources file adds entries for
    # that source's fetches only.
    allowed_hosts: str = ""
    # FINSENT_ALLOW_PRIVATE_HOSTS, removed: read only to refuse it (see ALLOW_PRIVATE_HOSTS_REPLACED).
    removed_allow_private_hosts: None = Field(
        default=None, validation_alias="FINSENT_ALLOW_PRIVATE_HOSTS", exclude=True, repr=False
    )
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    source_deadline_s: float = 30.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    # Server-side guards on an ingest run's connection: a run that dies mid-transaction (its client
    # killed) is ended by the server after this long, and a statement waits at most lock_timeout_s
    # for a lock, so a crashed run never blocks the next one for longer.
    idle_in_transaction_timeout_s: float = 60.0
    lock_timeout_s: float = 120.0
    retries: int = 3
    # Per-feed parse budgets: a feed whose parse runs longer, or (in a parse worker process) grows the
    # worker's memory by more, fails alone with a one-line error. 0 turns a budget off.
    parse_timeout_s: float = 20.0
    parse_memory_mb: int = 1024
    # Per-page full-text extraction budget (fulltext sources): a page whose extraction runs longer
    # loses its text, the article keeps its summary. In a worker process the memory budget above
    # applies too. A news page takes well under a second; 0 turns the budget off.
    extract_timeout_s: float = 5.0
    concurrency: int = 64
    per_host_concurrency: int = 4
    robots_ttl_s: int = 24 * 3600
    # Exponential backoff between retries: first wait, and the cap on any single wait.
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 8.0

    # Scoring and alerts.
    batch_size: int = 64
    torch_threads: int | None = None
    alert_rules: Path | None = None

    # Email.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    alert_from: str = "finsent@localhost"
    alert_to: str | None = None

    # Airflow DAGs (dags/): cron strings or presets; an empty train schedule means manual runs only.
    ingest_schedule: str = "@daily"
    maintenance_schedule: str = "@daily"
    train_schedule: str | None = None
    source_batch_size: int = 8  # sources per mapped ingest task
    gpu_pool: str = "finsent_gpu"  # the Airflow pool that bounds concurrent model tasks
    retention_days: int = 365  # articles and fetch log rows older than this are deleted
    # Promotion of a newly trained model: no metric may drop by more than this (absolute, 0..1).
    promote_tolerance: float = 0.01

    @model_validator(mode="before")
    @classmethod
    def _refuse_allow_private_hosts_argument(cls, data: Any) -> Any:
        if isinstance(data, dict) and "allow_private_hosts" in data:
            raise ValueError(ALLOW_PRIVATE_HOSTS_REPLACED)
        return data

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: str) -> str:
        for entry in value.split(","):
            if entry.strip():
                host_entry(entry)  # a typo fails when settings load, not when the first feed is fetched
        return value

    @field_validator("removed_allow_private_hosts", mode="before")
    @classmethod
    def _refuse_allow_private_hosts(cls, value: object) -> None:
        if value is not None:  # None: the default (settings validate their defaults too)
            raise ValueError(ALLOW_PRIVATE_HOSTS_REPLACED)
        return None

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pgdata"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (tests call ``get_settings.cache_clear()`` after changing env).

    Raise SettingsError, one line naming each bad variable, when the environment or ``.env`` holds an
    unusable setting."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {validation_summary(exc, _variable_name)}") from None
