"""Start-up check of the Dagster instance a process is about to use.

Dagster itself reports an unreachable PostgreSQL only after its connection retries, as a raw
driver error. :func:`check_instance` answers at once with the setting to fix
(``DAGSTER_PG_HOST``, ``DAGSTER_PG_PASSWORD``, ...), so the CLI can call it before starting
anything. SQLite storage (the default) needs only a writable `DAGSTER_HOME`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from dagster import DagsterInstance

CONNECT_TIMEOUT_S = 5
# postgres_db field -> the libpq keyword it becomes
PG_FIELDS = {
    "hostname": "host",
    "port": "port",
    "username": "user",
    "password": "password",
    "db_name": "dbname",
}


class InstanceCheckError(RuntimeError):
    """The Dagster instance cannot be used; the message names the setting to change."""


def _resolve(value: Any, field: str, source: Path) -> tuple[str | None, str]:
    """A config value that may be `{env: NAME}`, and the name of the setting it comes from."""
    if isinstance(value, dict) and "env" in value:
        name = value["env"]
        resolved = os.environ.get(name)
        if resolved is None and field != "password":
            raise InstanceCheckError(f"{name} is not set; {source} reads storage.postgres.{field} from it")
        return resolved, name
    return (None if value is None else str(value)), f"storage.postgres.postgres_db.{field} in {source}"


def _postgres_settings(config: dict[str, Any], source: Path) -> dict[str, tuple[str | None, str]] | None:
    postgres = (config.get("storage") or {}).get("postgres")
    if postgres is None:
        return None
    if "postgres_db" not in postgres:
        raise InstanceCheckError(f"{source}: storage.postgres needs postgres_db (see dagster.postgres.yaml)")
    db = postgres["postgres_db"]
    return {field: _resolve(db.get(field), field, source) for field in PG_FIELDS}


def _culprit(message: str, settings: dict[str, tuple[str | None, str]]) -> str:
    """The settings an OperationalError points at."""
    text = message.lower()
    if "password" in text or "role" in text or "authentication" in text:
        fields = ("username", "password")
    elif "database" in text and "does not exist" in text:
        fields = ("db_name",)
    else:  # refused, timeout, unknown host
        fields = ("hostname", "port")
    return " / ".join(settings[field][1] for field in fields)


def check_instance(dagster_home: str | Path | None = None) -> None:
    """Raise :class:`InstanceCheckError` if the instance in `dagster_home` (default `DAGSTER_HOME`)
    cannot be used: no such folder, or PostgreSQL storage that is unreachable or refuses the login."""
    home = Path(dagster_home or os.environ.get("DAGSTER_HOME") or "")
    if not str(home) or not home.is_dir():
        raise InstanceCheckError(
            f"DAGSTER_HOME ({home or 'not set'}) is not a folder; create it or set DAGSTER_HOME"
        )
    source = home / "dagster.yaml"
    config = yaml.safe_load(source.read_text()) if source.exists() else {}
    settings = _postgres_settings(config or {}, source)
    if settings is None:
        if not os.access(home, os.W_OK):
            raise InstanceCheckError(f"DAGSTER_HOME ({home}) is not writable: SQLite storage lives there")
        return
    params = {PG_FIELDS[field]: value for field, (value, _) in settings.items() if value is not None}
    try:
        psycopg2.connect(**params, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg2.OperationalError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
        raise InstanceCheckError(
            f"PostgreSQL storage at {where} (database {params.get('dbname')!r}) is not usable: {first_line}. "
            f"Check {_culprit(first_line, settings)}."
        ) from None


# Pool limits the instance must hold (Dagster keeps per-pool limits in the instance, not in
# dagster.yaml). duckdb_write: DuckDB has one writing process. notion_api: above the backfill lane's
# run limit (4), so a realtime run's Notion step never queues behind backfills; the shared rate
# limiter, not the pool, sets the request pace.
POOL_LIMITS = {"duckdb_write": 1, "notion_api": 6}


def init_instance(instance: DagsterInstance) -> dict[str, int]:
    """Set the project's pool limits on an instance (idempotent); returns what was set."""
    for pool, limit in POOL_LIMITS.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return dict(POOL_LIMITS)
