"""The Notion side's DuckDB tables and the few functions that read and write them.

| table | one row per |
|---|---|
| `sync_state` | synced record: its page, the hash of what was last written, whether it is in the trash |
| `sync_log` | record a run acted on (created/updated/archived/failed/skipped); unchanged records are
  only counted, in `sync_batches`, or every realtime re-sync of a day would log the whole day again |
| `sync_batches` | run of one object partition: status and totals |
| `api_usage` | HTTP call to Notion |
| `notion_targets` | object: the database and data source its pages live in |
| `notion_target_claims` | object whose database a run is creating now: the run, since when |
| `pending_relations` | relation whose parent page did not exist yet when the child was written |
| `sf_fields` | configured Salesforce field: its describe type (drives the Notion property types) |
| `reconciliations` | reconciliation run of an object: what it found (orphaned, missing, drifted pages) |

Writes during a sync go through :class:`StateWriter`, which buffers them and flushes a few hundred
rows at a time in one short transaction, so the staging file is never held while Notion is called
and an extraction waiting for the lock is delayed by milliseconds at most.

Threads of one process share the database and may race on the same rows: DuckDB then fails the
later commit (a write-write conflict or a duplicate key). The few functions that expect such races
(:func:`ensure_tables`, :func:`claim_target`, :func:`record_target`) re-run their short transaction.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import duckdb

Connect = Callable[..., AbstractContextManager[duckdb.DuckDBPyConnection]]

_TABLES = {
    "sync_state": """
        object VARCHAR NOT NULL, sf_id VARCHAR NOT NULL, page_id VARCHAR NOT NULL, content_hash VARCHAR,
        updated_at TIMESTAMPTZ NOT NULL, in_trash BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (object, sf_id)""",
    "sync_log": """
        run_id VARCHAR, object VARCHAR, "partition" VARCHAR, sf_id VARCHAR, action VARCHAR, status VARCHAR,
        error_code VARCHAR, error_message VARCHAR, rate_limited BOOLEAN, retry_count INTEGER,
        last_retry_time TIMESTAMPTZ, "at" TIMESTAMPTZ""",
    "sync_batches": """
        run_id VARCHAR NOT NULL, object VARCHAR NOT NULL, "partition" VARCHAR NOT NULL, status VARCHAR,
        processed BIGINT DEFAULT 0, succeeded BIGINT DEFAULT 0, failed BIGINT DEFAULT 0,
        skipped BIGINT DEFAULT 0, created BIGINT DEFAULT 0, updated BIGINT DEFAULT 0,
        unchanged BIGINT DEFAULT 0, archived BIGINT DEFAULT 0, started_at TIMESTAMPTZ,
        ended_at TIMESTAMPTZ, last_processed_id VARCHAR, error_summary VARCHAR,
        PRIMARY KEY (run_id, object, "partition")""",
    "api_usage": """
        "at" TIMESTAMPTZ, run_id VARCHAR, object VARCHAR, method VARCHAR, endpoint VARCHAR, status INTEGER,
        duration_ms DOUBLE, rate_limited BOOLEAN, retry_after DOUBLE, rate_limit_reason VARCHAR""",
    "notion_targets": """
        object VARCHAR PRIMARY KEY, database_id VARCHAR NOT NULL, data_source_id VARCHAR NOT NULL""",
    "notion_target_claims": """
        object VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, claimed_at TIMESTAMPTZ NOT NULL""",
    "pending_relations": """
        object VARCHAR NOT NULL, sf_id VARCHAR NOT NULL, property VARCHAR NOT NULL,
        parent_object VARCHAR NOT NULL, parent_sf_id VARCHAR NOT NULL,
        PRIMARY KEY (object, sf_id, property)""",
    "sf_fields": """
        object VARCHAR NOT NULL, field VARCHAR NOT NULL, sf_type VARCHAR NOT NULL, label VARCHAR,
        reference_to VARCHAR, PRIMARY KEY (object, field)""",
    "reconciliations": """
        run_id VARCHAR NOT NULL, object VARCHAR NOT NULL, "at" TIMESTAMPTZ NOT NULL,
        salesforce_records BIGINT, pages BIGINT, orphaned BIGINT, missing BIGINT, drifted BIGINT,
        drift VARCHAR""",
}
SYNC_STATE_COLUMNS = ["object", "sf_id", "page_id", "content_hash", "updated_at", "in_trash"]
SYNC_LOG_COLUMNS = [
    "run_id",
    "object",
    "partition",
    "sf_id",
    "action",
    "status",
    "error_code",
    "error_message",
    "rate_limited",
    "retry_count",
    "last_retry_time",
    "at",
]
API_USAGE_COLUMNS = [
    "at",
    "run_id",
    "object",
    "method",
    "endpoint",
    "status",
    "duration_ms",
    "rate_limited",
    "retry_after",
    "rate_limit_reason",
]
# Columns added to a table after its first release: added to an existing file by `ensure_tables`.
_ADDED_COLUMNS = {"api_usage": {"rate_limit_reason": "VARCHAR"}}
PENDING_COLUMNS = ["object", "sf_id", "property", "parent_object", "parent_sf_id"]
BATCH_TOTALS = ["processed", "succeeded", "failed", "skipped", "created", "updated", "unchanged", "archived"]


def now() -> datetime:
    return datetime.now(UTC)


def _is_conflict(error: duckdb.Error) -> bool:
    """A concurrent transaction of this process changed the same row or catalog entry first."""
    text = str(error).lower()
    if isinstance(error, duckdb.ConstraintException):
        return "duplicate key" in text
    return isinstance(error, duckdb.TransactionException) and ("conflict" in text or "duplicate key" in text)


def _retry_conflicts(conn: duckdb.DuckDBPyConnection, work: Callable[[], Any], attempts: int = 50) -> Any:
    """Run ``work`` (one short transaction it begins and commits) again while it loses a race."""
    for attempt in range(attempts):
        try:
            return work()
        except duckdb.Error as error:
            with suppress(duckdb.Error):  # none open when the failed statement was its own
                conn.execute("ROLLBACK")
            if not _is_conflict(error) or attempt == attempts - 1:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the tables that do not exist yet (a thread creating the same one first is no error)."""
    listed = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
    existing = {row[0] for row in conn.execute(listed).fetchall()}
    for table, columns in _TABLES.items():
        if table not in existing:
            _retry_conflicts(conn, partial(conn.execute, f"CREATE TABLE IF NOT EXISTS {table} ({columns})"))
    for table, added in _ADDED_COLUMNS.items():
        present = set(table_columns(conn, table))
        for name, kind in added.items():
            if name not in present:  # a staging file from before the column
                alter = f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}"
                _retry_conflicts(conn, partial(conn.execute, alter))


def table_columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The columns of ``table`` in the current database (none when it does not exist)."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND table_name = ?",
            [table],
        ).fetchall()
    ]


def _insert(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    columns: list[str],
    rows: Sequence[Sequence[Any]],
    *,
    verb: str = "INSERT",
) -> None:
    """Bulk insert in one statement whatever the row count: each column is one list parameter, unnested
    (no DataFrame: pandas would cost every run process ~0.3 s and ~50 MB to import)."""
    if not rows:
        return
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(f"unnest(${n})" for n in range(1, len(columns) + 1))
    conn.execute(
        f"{verb} INTO {table} ({names}) SELECT {values}", [list(column) for column in zip(*rows, strict=True)]
    )


# --- Reads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageState:
    page_id: str
    content_hash: str | None
    in_trash: bool


def _ids(column: str = "sf_id") -> str:
    """The list parameter ``$ids`` as a one-column table (named ``column``) for joins."""
    return f"(SELECT unnest($ids::VARCHAR[]) AS {column})"


def page_states(
    conn: duckdb.DuckDBPyConnection, object_name: str, ids: Sequence[str]
) -> dict[str, PageState]:
    """sync_state of the records ``ids`` of ``object_name`` that have a page."""
    rows = conn.execute(
        f"SELECT s.sf_id, s.page_id, s.content_hash, s.in_trash FROM sync_state s JOIN {_ids()} "
        "USING (sf_id) WHERE s.object = $object",
        {"ids": list(ids), "object": object_name},
    ).fetchall()
    return {
        sf_id: PageState(page_id, content_hash, in_trash) for sf_id, page_id, content_hash, in_trash in rows
    }


def written_since(
    conn: duckdb.DuckDBPyConnection, object_name: str, ids: Sequence[str], since: datetime
) -> set[str]:
    """The records of ``ids`` whose sync_state row was written at or after ``since``."""
    rows = conn.execute(
        f"SELECT s.sf_id FROM sync_state s JOIN {_ids()} USING (sf_id) "
        "WHERE s.object = $object AND s.updated_at >= $since",
        {"ids": list(ids), "object": object_name, "since": since},
    ).fetchall()
    return {sf_id for (sf_id,) in rows}


def records_of_pages(conn: duckdb.DuckDBPyConnection, page_ids: Sequence[str]) -> dict[str, str]:
    """page id -> Salesforce Id, for the ``page_ids`` that sync_state knows (any object)."""
    return dict(
        conn.execute(
            f"SELECT s.page_id, s.sf_id FROM sync_state s JOIN {_ids('page_id')} USING (page_id)",
            {"ids": list(page_ids)},
        ).fetchall()
    )


def _on_ids(
    conn: duckdb.DuckDBPyConnection, object_name: str, ids: Sequence[str] | None, statement: str
) -> None:
    """Run an UPDATE or DELETE of sync_state on this object's ``ids`` (None: all its records), one
    statement whatever their number."""
    if ids is None:
        conn.execute(f"{statement} WHERE object = ?", [object_name])
        return
    conn.execute(
        f"{statement} WHERE object = $object AND sf_id IN (SELECT sf_id FROM {_ids()})",
        {"ids": list(ids), "object": object_name},
    )


def mark_trashed(conn: duckdb.DuckDBPyConnection, object_name: str, ids: Sequence[str]) -> None:
    """Record that the pages of ``ids`` are in Notion's trash."""
    _on_ids(conn, object_name, ids, "UPDATE sync_state SET in_trash = true")


def forget(conn: duckdb.DuckDBPyConnection, object_name: str, ids: Sequence[str]) -> None:
    """Drop the sync_state of ``ids``: their next sync creates (or looks up) their pages again."""
    _on_ids(conn, object_name, ids, "DELETE FROM sync_state")


def mark_stale(conn: duckdb.DuckDBPyConnection, object_name: str, ids: Sequence[str] | None) -> None:
    """Forget what the pages of ``ids`` (None: every record of the object) hold, not which pages they
    are: their next sync writes them."""
    _on_ids(conn, object_name, ids, "UPDATE sync_state SET content_hash = NULL")


@dataclass(frozen=True)
class Reconciliation:
    """What one reconciliation of an object found (a row of ``reconciliations``)."""

    run_id: str
    object: str
    salesforce_records: int
    pages: int
    orphaned: int
    missing: int
    drifted: int
    drift: str  # resync | report: what was done about the drifted pages


def record_reconciliation(conn: duckdb.DuckDBPyConnection, result: Reconciliation) -> None:
    conn.execute(
        "INSERT INTO reconciliations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            result.run_id,
            result.object,
            now(),
            result.salesforce_records,
            result.pages,
            result.orphaned,
            result.missing,
            result.drifted,
            result.drift,
        ],
    )


def prune_history(conn: duckdb.DuckDBPyConnection, object_name: str, days: int) -> int:
    """Delete the object's sync_log and api_usage rows older than ``days``; returns how many.

    Cheap when there is nothing to delete: both tables grow in time order, so DuckDB skips every row
    group newer than the cutoff by its min/max statistics.
    """
    cutoff = now() - timedelta(days=days)
    deleted = 0
    for table in ("sync_log", "api_usage"):
        deleted += conn.execute(
            f'DELETE FROM {table} WHERE object = ? AND "at" < ?', [object_name, cutoff]
        ).fetchone()[0]
    return deleted


def count_pages(conn: duckdb.DuckDBPyConnection, object_name: str) -> int:
    return conn.execute("SELECT count(*) FROM sync_state WHERE object = ?", [object_name]).fetchone()[0]


def latest_batch(conn: duckdb.DuckDBPyConnection, object_name: str, partition: str) -> dict[str, Any] | None:
    """The most recent sync_batches row of this object partition (status ``running`` = killed)."""
    cursor = conn.execute(
        'SELECT * FROM sync_batches WHERE object = ? AND "partition" = ? ORDER BY started_at DESC LIMIT 1',
        [object_name, partition],
    )
    row = cursor.fetchone()
    return dict(zip([d[0] for d in cursor.description], row, strict=True)) if row else None


def load_target(conn: duckdb.DuckDBPyConnection, object_name: str) -> tuple[str, str] | None:
    """(database_id, data_source_id) recorded for ``object_name``."""
    row = conn.execute(
        "SELECT database_id, data_source_id FROM notion_targets WHERE object = ?", [object_name]
    ).fetchone()
    return (row[0], row[1]) if row else None


def save_target(
    conn: duckdb.DuckDBPyConnection, object_name: str, database_id: str, data_source_id: str
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO notion_targets VALUES (?, ?, ?)", [object_name, database_id, data_source_id]
    )


def forget_target(conn: duckdb.DuckDBPyConnection, object_name: str, database_id: str) -> int | None:
    """Drop the record of ``database_id`` (gone from Notion) and the object's sync_state, in one
    transaction; returns how many records were mapped, or None when another run already replaced
    the record (then nothing is dropped: its new database and pages stay)."""

    def attempt() -> int | None:
        conn.execute("BEGIN TRANSACTION")
        removed = conn.execute(
            "DELETE FROM notion_targets WHERE object = ? AND database_id = ? RETURNING object",
            [object_name, database_id],
        ).fetchall()
        pages = None
        if removed:
            pages = conn.execute(
                "DELETE FROM sync_state WHERE object = ? RETURNING sf_id", [object_name]
            ).fetchall()
            conn.execute("DELETE FROM pending_relations WHERE object = ?", [object_name])
        conn.execute("COMMIT")
        return None if pages is None else len(pages)

    return _retry_conflicts(conn, attempt)


@dataclass(frozen=True)
class TargetClaim:
    """A run creating the Notion database of ``object`` (a row of ``notion_target_claims``)."""

    object: str
    run_id: str
    claimed_at: datetime


@dataclass(frozen=True)
class ClaimOutcome:
    """What :func:`claim_target` found: a recorded target, or the claim now held (ours or not)."""

    target: tuple[str, str] | None = None
    holder: TargetClaim | None = None
    taken_over: TargetClaim | None = None  # the stale claim replaced by ours

    def held_by(self, run_id: str) -> bool:
        return self.target is None and self.holder is not None and self.holder.run_id == run_id


def load_claim(conn: duckdb.DuckDBPyConnection, object_name: str) -> TargetClaim | None:
    row = conn.execute(
        "SELECT run_id, claimed_at FROM notion_target_claims WHERE object = ?", [object_name]
    ).fetchone()
    return TargetClaim(object_name, row[0], _as_datetime(row[1]).astimezone(UTC)) if row else None


def claim_target(
    conn: duckdb.DuckDBPyConnection, object_name: str, run_id: str, stale_after: timedelta
) -> ClaimOutcome:
    """Claim the creation of ``object_name``'s Notion database for ``run_id``, in one transaction.

    The target already recorded: it, and no claim. No claim, ours, or one older than
    ``stale_after`` (its run crashed): ours now (``taken_over`` names the stale one). Else the
    holder's claim. A thread of this process claiming at the same time loses the commit; the
    transaction is re-run and then sees the winner's claim.
    """

    def attempt() -> ClaimOutcome:
        conn.execute("BEGIN TRANSACTION")
        if target := load_target(conn, object_name):
            conn.execute("COMMIT")
            return ClaimOutcome(target=target)
        current = load_claim(conn, object_name)
        at = now()
        if current is None:
            conn.execute("INSERT INTO notion_target_claims VALUES (?, ?, ?)", [object_name, run_id, at])
            outcome = ClaimOutcome(holder=TargetClaim(object_name, run_id, at))
        elif current.run_id == run_id or at - current.claimed_at > stale_after:
            conn.execute(
                "UPDATE notion_target_claims SET run_id = ?, claimed_at = ? WHERE object = ?",
                [run_id, at, object_name],
            )
            stale = current if current.run_id != run_id else None
            outcome = ClaimOutcome(holder=TargetClaim(object_name, run_id, at), taken_over=stale)
        else:
            outcome = ClaimOutcome(holder=current)
        conn.execute("COMMIT")
        return outcome

    return _retry_conflicts(conn, attempt)


def release_claim(conn: duckdb.DuckDBPyConnection, object_name: str, run_id: str) -> None:
    """Drop ``run_id``'s claim on ``object_name`` (a claim taken over since is left alone)."""
    conn.execute("DELETE FROM notion_target_claims WHERE object = ? AND run_id = ?", [object_name, run_id])


def record_target(
    conn: duckdb.DuckDBPyConnection, object_name: str, database_id: str, data_source_id: str, run_id: str
) -> tuple[str, str]:
    """Record the database ``run_id`` created (or found) and release its claim, in one transaction.

    A target recorded meanwhile (this run's claim went stale and another run finished first) is
    kept and returned, so every run writes to the same database.
    """

    def attempt() -> tuple[str, str]:
        conn.execute("BEGIN TRANSACTION")
        recorded = load_target(conn, object_name)
        if recorded is None:
            save_target(conn, object_name, database_id, data_source_id)
        release_claim(conn, object_name, run_id)
        conn.execute("COMMIT")
        return recorded or (database_id, data_source_id)

    return _retry_conflicts(conn, attempt)


def field_types(conn: duckdb.DuckDBPyConnection, object_name: str) -> dict[str, str]:
    rows = conn.execute("SELECT field, sf_type FROM sf_fields WHERE object = ?", [object_name]).fetchall()
    return dict(rows)


def save_field_types(
    conn: duckdb.DuckDBPyConnection,
    object_name: str,
    fields: Sequence[tuple[str, str, str | None, str | None]],
) -> None:
    """Store describe entries ``(field, sf_type, label, reference_to)`` of ``object_name``."""
    _insert(
        conn,
        "sf_fields",
        ["object", "field", "sf_type", "label", "reference_to"],
        [(object_name, *field) for field in fields],
        verb="INSERT OR REPLACE",
    )


def ready_pending_relations(
    conn: duckdb.DuckDBPyConnection, object_name: str, after: tuple[str, str, str], limit: int
) -> list[tuple[str, ...]]:
    """Up to ``limit`` pending relations of or to ``object_name`` whose both pages now exist, in key
    order after ``after`` (``(object, sf_id, property)`` of the last one read; ``("", "", "")`` first).

    Rows are ``(object, sf_id, property, parent_object, parent_sf_id, child page, parent page)``.
    """
    return conn.execute(
        f"""
        SELECT p.object, p.sf_id, p.property, p.parent_object, p.parent_sf_id, c.page_id, a.page_id
        FROM pending_relations p
        JOIN sync_state c ON c.object = p.object AND c.sf_id = p.sf_id
        JOIN sync_state a ON a.object = p.parent_object AND a.sf_id = p.parent_sf_id
        WHERE (p.object = ? OR p.parent_object = ?) AND (p.object, p.sf_id, p.property) > (?, ?, ?)
        ORDER BY p.object, p.sf_id, p.property
        LIMIT {int(limit)}
        """,
        [object_name, object_name, *after],
    ).fetchall()


# --- Buffered writes during a sync ---------------------------------------------------------------


@dataclass
class CallStats:
    """What one record's HTTP attempts cost: feeds sync_log's rate_limited/retry_count/last_retry_time."""

    calls: int = 0
    rate_limited: bool = False
    last_at: datetime | None = None

    @property
    def retries(self) -> int:
        return max(self.calls - 1, 0)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


class StateWriter:
    """Buffers sync_state, sync_log, api_usage and pending_relations rows; flushes in short transactions.

    ``record_call`` is the NotionClient's ``on_call``: it may run in any worker thread. The other
    methods run in the thread that consumes results.
    """

    def __init__(
        self,
        connect: Connect,
        run_id: str,
        object_name: str,
        *,
        flush_rows: int = 500,
        flush_seconds: float = 2.0,
    ) -> None:
        self.connect = connect
        self.run_id = run_id
        self.object_name = object_name
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.durations_ms: list[float] = []
        self.rate_limited_calls = 0
        self.rate_limit_reasons: Counter[str] = Counter()  # 429s by the limit they hit
        self._lock = threading.Lock()
        self._local = threading.local()
        self._states: dict[str, tuple[Any, ...]] = {}
        self._discovered: dict[str, tuple[Any, ...]] = {}
        self._logs: list[tuple[Any, ...]] = []
        self._usage: list[tuple[Any, ...]] = []
        self._pending: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._resolved: list[tuple[str, str, str]] = []
        self._flushed_at = time.monotonic()

    # HTTP calls --------------------------------------------------------------------------------

    def record_call(self, call: Any) -> None:
        """``on_call`` hook: one row of api_usage, and the attempt counted for the current record."""
        at = _as_datetime(call.at)
        with self._lock:
            self._usage.append(
                (
                    at,
                    self.run_id,
                    self.object_name,
                    call.method,
                    call.endpoint,
                    call.status,
                    call.duration_ms,
                    call.rate_limited,
                    call.retry_after,
                    call.rate_limit_reason,
                )
            )
            self.durations_ms.append(call.duration_ms)
            self.rate_limited_calls += bool(call.rate_limited)
            if call.rate_limited:
                self.rate_limit_reasons[call.rate_limit_reason or "unspecified"] += 1
        stats: CallStats | None = getattr(self._local, "stats", None)
        if stats is not None:
            stats.calls += 1
            stats.rate_limited |= bool(call.rate_limited)
            stats.last_at = at

    @contextmanager
    def track_calls(self) -> Iterator[CallStats]:
        """Attribute the HTTP attempts made by this thread inside the block to one record."""
        self._local.stats = stats = CallStats()
        try:
            yield stats
        finally:
            self._local.stats = None

    @property
    def requests(self) -> int:
        return len(self.durations_ms)

    # Record results ----------------------------------------------------------------------------

    def save_state(self, sf_id: str, page_id: str, content_hash: str | None, in_trash: bool = False) -> None:
        self._states[sf_id] = (self.object_name, sf_id, page_id, content_hash, now(), in_trash)

    def discover_state(self, sf_id: str, page_id: str, content_hash: str | None) -> None:
        """A page found in Notion: recorded unless sync_state already maps the record."""
        self._discovered[sf_id] = (self.object_name, sf_id, page_id, content_hash, now(), False)

    def log(
        self,
        partition: str,
        sf_id: str,
        action: str,
        status: str,
        *,
        stats: CallStats | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        stats = stats or CallStats()
        self._logs.append(
            (
                self.run_id,
                self.object_name,
                partition,
                sf_id,
                action,
                status,
                error_code,
                error_message,
                stats.rate_limited,
                stats.retries,
                stats.last_at if stats.retries else None,
                now(),
            )
        )

    def add_pending(self, sf_id: str, prop: str, parent_object: str, parent_sf_id: str) -> None:
        key = (self.object_name, sf_id, prop)
        self._pending[key] = (*key, parent_object, parent_sf_id)

    def resolve_pending(self, object_name: str, sf_id: str, prop: str) -> None:
        self._resolved.append((object_name, sf_id, prop))

    def maybe_flush(self) -> None:
        buffers = (self._states, self._discovered, self._logs, self._usage, self._resolved)
        buffered = sum(len(buffer) for buffer in buffers)
        if buffered >= self.flush_rows or time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered in one transaction (a failed write keeps the rows buffered)."""
        with self._lock:
            usage, self._usage = self._usage, []
        states, discovered, logs = list(self._states.values()), list(self._discovered.values()), self._logs
        pending, resolved = list(self._pending.values()), self._resolved
        try:
            with self.connect() as conn:
                conn.execute("BEGIN TRANSACTION")
                _insert(conn, "sync_state", SYNC_STATE_COLUMNS, discovered, verb="INSERT OR IGNORE")
                _insert(conn, "sync_state", SYNC_STATE_COLUMNS, states, verb="INSERT OR REPLACE")
                _insert(conn, "sync_log", SYNC_LOG_COLUMNS, logs)
                _insert(conn, "api_usage", API_USAGE_COLUMNS, usage)
                _insert(conn, "pending_relations", PENDING_COLUMNS, pending, verb="INSERT OR REPLACE")
                if resolved:
                    conn.executemany(
                        "DELETE FROM pending_relations WHERE object = ? AND sf_id = ? AND property = ?",
                        resolved,
                    )
                conn.execute("COMMIT")
        except BaseException:
            with self._lock:
                self._usage[:0] = usage
            raise
        self._states.clear()
        self._discovered.clear()
        self._logs = []
        self._pending.clear()
        self._resolved = []
        self._flushed_at = time.monotonic()


# --- Batches -------------------------------------------------------------------------------------


def start_batch(conn: duckdb.DuckDBPyConnection, run_id: str, object_name: str, partition: str) -> str | None:
    """Record a running batch; returns the status of the partition's previous batch (None if first)."""
    ensure_tables(conn)
    previous = latest_batch(conn, object_name, partition)
    conn.execute(
        'INSERT OR REPLACE INTO sync_batches (run_id, object, "partition", status, started_at) '
        "VALUES (?, ?, ?, 'running', ?)",
        [run_id, object_name, partition, now()],
    )
    return previous["status"] if previous else None


def batched_partitions(conn: duckdb.DuckDBPyConnection, object_name: str) -> list[str]:
    """Every partition of the object a run has synced (or tried to), oldest first."""
    rows = conn.execute(
        'SELECT DISTINCT "partition" FROM sync_batches WHERE object = ? ORDER BY 1', [object_name]
    ).fetchall()
    return [row[0] for row in rows]


def record_failed_batch(
    conn: duckdb.DuckDBPyConnection, run_id: str, object_name: str, partition: str, error_summary: str
) -> None:
    """A run that failed before its first record (e.g. a 401 while checking the database): a failed
    batch, so the partition shows as failed with its error instead of not at all."""
    start_batch(conn, run_id, object_name, partition)
    finish_batch(conn, run_id, object_name, partition, "failed", {}, None, error_summary)


def finish_batch(
    conn: duckdb.DuckDBPyConnection,
    run_id: str,
    object_name: str,
    partition: str,
    status: str,
    totals: dict[str, int],
    last_processed_id: str | None,
    error_summary: str | None,
) -> None:
    assignments = ", ".join(f"{name} = ?" for name in BATCH_TOTALS)
    conn.execute(
        f"UPDATE sync_batches SET status = ?, {assignments}, ended_at = ?, last_processed_id = ?, "
        'error_summary = ? WHERE run_id = ? AND object = ? AND "partition" = ?',
        [
            status,
            *(totals.get(name, 0) for name in BATCH_TOTALS),
            now(),
            last_processed_id,
            error_summary,
            run_id,
            object_name,
            partition,
        ],
    )
