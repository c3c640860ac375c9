"""DuckDB access: the one place that opens the staging database.

DuckDB lets only one process open a database file for writing, and a reader is refused while a
writer holds it. So every caller takes a short-lived connection through :func:`connect`, which
retries while another process holds the file and fails with a clear error after a bound.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import ConfigurableResource

DEFAULT_DUCKDB_PATH = "data/staging.duckdb"


class StagingLockedError(RuntimeError):
    """Another process kept the staging database locked for longer than we wait."""


def duckdb_path() -> Path:
    return Path(os.environ.get("NOTION_SYNC_DUCKDB", DEFAULT_DUCKDB_PATH))


def _is_lock_error(error: duckdb.Error) -> bool:
    text = str(error).lower()
    return "lock" in text or "conflicting" in text


@contextmanager
def connect(
    path: str | Path | None = None, *, read_only: bool = False, timeout_s: float = 120.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the staging database for a short piece of work, waiting while another process holds it."""
    target = Path(path) if path is not None else duckdb_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            conn = duckdb.connect(str(target), read_only=read_only and target.exists())
            break
        except duckdb.Error as error:
            if not _is_lock_error(error):
                raise
            if time.monotonic() >= deadline:
                raise StagingLockedError(
                    f"staging database {target} stayed locked by another process for {timeout_s:.0f} s; "
                    "wait for the running extraction to finish or raise the timeout"
                ) from error
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
    try:
        yield conn
    finally:
        conn.close()


class StagingResource(ConfigurableResource):
    """The DuckDB staging database (`NOTION_SYNC_DUCKDB`) as a Dagster resource."""

    path: str = DEFAULT_DUCKDB_PATH
    lock_timeout_s: float = 120.0

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.path, read_only=read_only, timeout_s=self.lock_timeout_s) as conn:
            yield conn
