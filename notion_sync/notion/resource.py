"""`NotionResource`: Dagster's handle on Notion — configuration, validation and a ready `NotionClient`.

Wiring from the environment (CONTRACT.md)::

    NotionResource.from_env()
    # token           <- EnvVar("NOTION_TOKEN")  (resolved when a run starts; never shown in the UI)
    # base_url        <- NOTION_BASE_URL           default https://api.notion.com
    # version         <- NOTION_VERSION            default 2025-09-03
    # parent_page_id  <- NOTION_PARENT_PAGE_ID     default none
    # rate_limit_rps  <- NOTION_RATE_LIMIT_RPS     default 3
    # time_scale      <- NOTION_TIME_SCALE         default 1 (sandbox speed factor)
    # limiter_backend <- NOTION_RATE_LIMIT_BACKEND default sqlite (postgres when a DSN is set)
    # postgres_dsn    <- EnvVar("NOTION_RATE_LIMIT_DSN") when set
    # limiter_path    <- NOTION_RATE_LIMIT_PATH    default $DAGSTER_HOME/notion_rate_limit.sqlite, else data/

Every value is checked before any API call; a bad one raises `NotionConfigError` naming the
environment variable to fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from notion_sync.notion.client import (
    DEFAULT_BASE_URL,
    DEFAULT_VERSION,
    READ_TIMEOUT_S,
    ApiCall,
    NotionClient,
)
from notion_sync.notion.pipeline import run_pipelined
from notion_sync.notion.rate_limit import make_limiter

T = TypeVar("T")
R = TypeVar("R")

BACKENDS = ("sqlite", "postgres")
LIMITER_FILE = "notion_rate_limit.sqlite"


class NotionConfigError(ValueError):
    """The Notion configuration cannot work; the message names the variable to fix."""


def _number(environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise NotionConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= minimum:
        raise NotionConfigError(f"{name} must be a number > {minimum:g}, got {raw!r}")
    return value


def _resolved(value: str | None) -> str | None:
    """The value of a field that may still be an unresolved `EnvVar` (resource used outside a run)."""
    return value.get_value() if isinstance(value, EnvVar) else value


def default_limiter_path(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    home = environ.get("DAGSTER_HOME")
    return os.path.join(home, LIMITER_FILE) if home else os.path.join("data", LIMITER_FILE)


class NotionResource(ConfigurableResource):
    """Notion API access shared by the Notion assets: one rate-limit bucket per token, all processes."""

    token: str = Field(description="Notion integration token (NOTION_TOKEN)")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="API root (NOTION_BASE_URL)")
    version: str = Field(default=DEFAULT_VERSION, description="Notion-Version header (NOTION_VERSION)")
    parent_page_id: str | None = Field(
        default=None, description="Page under which missing databases are created (NOTION_PARENT_PAGE_ID)"
    )
    rate_limit_rps: float = Field(
        default=3.0, description="Requests per second for the token (NOTION_RATE_LIMIT_RPS)"
    )
    burst: float = Field(default=2.0, description="Tokens the shared bucket holds when idle")
    time_scale: float = Field(default=1.0, description="Sandbox speed factor (NOTION_TIME_SCALE)")
    limiter_backend: str = Field(
        default="sqlite", description="sqlite | postgres (NOTION_RATE_LIMIT_BACKEND)"
    )
    limiter_path: str | None = Field(
        default=None, description="SQLite bucket file; default under DAGSTER_HOME"
    )
    postgres_dsn: str | None = Field(
        default=None, description="PostgreSQL bucket DSN (NOTION_RATE_LIMIT_DSN)"
    )
    workers: int = Field(default=8, description="Requests kept in flight per process")
    adaptive: bool = Field(default=True, description="Slow start, halve on 429, grow back")
    connect_timeout: float = 5.0
    read_timeout: float = READ_TIMEOUT_S  # Notion's own: it answers 503 after 60 s
    max_retries: int = 6

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> NotionResource:
        """The resource configured by CONTRACT.md's environment variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        dsn = env.get("NOTION_RATE_LIMIT_DSN") or None
        backend = (env.get("NOTION_RATE_LIMIT_BACKEND") or ("postgres" if dsn else "sqlite")).strip().lower()
        if backend not in BACKENDS:
            raise NotionConfigError(
                f"NOTION_RATE_LIMIT_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        if backend == "postgres" and not dsn:
            raise NotionConfigError("NOTION_RATE_LIMIT_BACKEND=postgres needs NOTION_RATE_LIMIT_DSN")
        values = dict(
            token=EnvVar("NOTION_TOKEN"),
            base_url=env.get("NOTION_BASE_URL") or DEFAULT_BASE_URL,
            version=env.get("NOTION_VERSION") or DEFAULT_VERSION,
            parent_page_id=env.get("NOTION_PARENT_PAGE_ID") or None,
            rate_limit_rps=_number(env, "NOTION_RATE_LIMIT_RPS", 3.0),
            time_scale=_number(env, "NOTION_TIME_SCALE", 1.0),
            limiter_backend=backend,
            limiter_path=env.get("NOTION_RATE_LIMIT_PATH") or default_limiter_path(env),
            # An EnvVar keeps a password in the DSN out of the Dagster UI.
            postgres_dsn=EnvVar("NOTION_RATE_LIMIT_DSN") if dsn and environ is None else dsn,
        )
        values.update(overrides)
        return cls(**values)

    def _token(self) -> str:
        return _resolved(self.token) or ""

    def validate_config(self) -> None:
        """Raise `NotionConfigError` naming the variable when a value cannot work."""
        if not self._token().strip():
            raise NotionConfigError("NOTION_TOKEN is not set: the Notion integration token is required")
        for name, value, var in (
            ("rate_limit_rps", self.rate_limit_rps, "NOTION_RATE_LIMIT_RPS"),
            ("time_scale", self.time_scale, "NOTION_TIME_SCALE"),
        ):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise NotionConfigError(f"{var} ({name}) must be a number > 0, got {value!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise NotionConfigError(f"NOTION_BASE_URL must be an http(s) URL, got {self.base_url!r}")
        if self.limiter_backend not in BACKENDS:
            raise NotionConfigError(
                f"NOTION_RATE_LIMIT_BACKEND (limiter_backend) must be one of {', '.join(BACKENDS)}, "
                f"got {self.limiter_backend!r}"
            )
        if self.limiter_backend == "postgres" and not _resolved(self.postgres_dsn):
            raise NotionConfigError(
                "NOTION_RATE_LIMIT_BACKEND=postgres needs NOTION_RATE_LIMIT_DSN (postgres_dsn)"
            )
        if self.burst < 1 or self.workers < 1:
            raise NotionConfigError(
                f"burst and workers must be >= 1, got {self.burst!r} and {self.workers!r}"
            )

    def get_client(
        self, on_call: Callable[[ApiCall], None] | None = None, priority: bool = False
    ) -> NotionClient:
        """A `NotionClient` sharing this token's rate-limit bucket with every other process.

        ``priority=True`` (the realtime lane): its requests take the bucket's next free slots ahead of
        the other clients' waiting requests; the bucket's rate and burst stay the same for all."""
        self.validate_config()
        limiter = make_limiter(
            self.limiter_backend,
            token=self._token(),
            rate=self.rate_limit_rps,
            burst=self.burst,
            time_scale=self.time_scale,
            path=self.limiter_path or default_limiter_path(),
            dsn=_resolved(self.postgres_dsn),
            adaptive=self.adaptive,
        )
        return NotionClient(
            self._token(),
            base_url=self.base_url,
            version=self.version,
            limiter=limiter,
            timeout=(self.connect_timeout, self.read_timeout),
            time_scale=self.time_scale,
            max_retries=self.max_retries,
            on_call=on_call,
            pool_size=self.workers + 2,
            priority=priority,
        )

    def run_pipelined(
        self, items: Iterable[T], work: Callable[[T], R]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """`pipeline.run_pipelined` with this resource's ``workers``."""
        return run_pipelined(items, work, workers=self.workers)
