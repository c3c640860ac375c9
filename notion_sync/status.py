"""`notion-sync status`: what each object partition synced, and what it cost in Notion API calls.

Everything comes from the Notion side's DuckDB tables (see :mod:`notion_sync.notion.state`), read
through a read-only connection so that a report never blocks a running sync for long:

- partitions: the latest `sync_batches` row of each object partition (its totals are the partition's
  current state: a resumed re-run counts already synced records as unchanged; a run that failed
  before its first record, e.g. on a 401, is a failed row with its error), the requests and 429s of
  all its runs (`api_usage` joined by run), and its relations still pending. A run's requests are
  split as its run metadata counts them: ``requests`` between the start and the end of the batch (the
  metadata's `requests`), ``setup`` before the run's first batch (finding, creating or checking the
  Notion database: a run of several days counts it on its first day);
- API usage: `api_usage` overall and per object, plus a time series for the HTML charts;
- failure patterns: failed record attempts of `sync_log` grouped by object, status and error code,
  and skipped records by reason;
- 429s by the Notion limit they hit (`api_usage.rate_limit_reason`);
- reconciliations: the latest of each object (`reconciliations`): orphaned, missing and drifted
  pages (edited by hand in Notion; synced again or only reported, by the object's ``drift``).

Rates are measured in real time. Against the sandbox at speed K (``NOTION_TIME_SCALE``) the limit
is ``NOTION_RATE_LIMIT_RPS * K`` real requests per second, which is what the charts draw.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from dagster import DagsterInstance

from notion_sync import staging
from notion_sync.notion.errors import RATE_LIMIT_REASONS
from notion_sync.notion.state import table_columns

REQUIRED_TABLES = ("sync_batches", "sync_log", "api_usage", "pending_relations")
TIMELINE_BUCKETS = 60
LOCK_WAIT_S = 15.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LIMITED = "(rate_limited OR status = 429)"


class StatusUnavailable(Exception):
    """Nothing to report from this staging file; the message says why and what to do.

    ``exit_code`` 0 when that is a normal state (no sync has run yet), 1 when something is wrong.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class PartitionStatus:
    object: str
    partition: str
    synced: int
    failed: int
    skipped: int
    pending: int
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    runs: int
    requests: int
    setup_requests: int
    rate_limited: int
    error: str | None


@dataclass(frozen=True)
class Usage:
    """API usage of one object, or of all (``scope`` = ``"all"``)."""

    scope: str
    requests: int
    rate_limited: int
    p50_ms: float
    p95_ms: float
    active_minutes: int
    peak_per_minute: int

    @property
    def per_minute(self) -> float:
        """Requests per minute over the (UTC clock) minutes with calls: never above the peak minute."""
        return self.requests / self.active_minutes if self.active_minutes else 0.0

    @property
    def rate_limited_share(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class FailurePattern:
    object: str
    status: str
    error_code: str
    count: int
    example: str


@dataclass(frozen=True)
class Bucket:
    """``width_s`` seconds of API calls starting at ``start``."""

    start: datetime
    requests: int
    rate_limited: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class ReconciliationStatus:
    """The latest reconciliation of one object."""

    object: str
    at: datetime
    salesforce_records: int
    pages: int
    orphaned: int
    missing: int
    drifted: int
    drift: str


@dataclass(frozen=True)
class StatusReport:
    path: Path
    generated_at: datetime
    since: datetime | None
    object: str | None
    limit_rps: float
    partitions: list[PartitionStatus]
    usage: list[Usage]  # "all" first, then one per object
    http_statuses: dict[int, int]
    failures: list[FailurePattern]
    skips: list[FailurePattern]
    rate_limit_reasons: dict[str, int]  # 429s by additional_data.rate_limit_reason
    bucket_width_s: float
    timeline: list[Bucket]
    reconciliations: list[ReconciliationStatus]


def limit_rps_from_env() -> float:
    """The real requests per second allowed: the configured rate times the sandbox time scale."""
    rps = float(os.environ.get("NOTION_RATE_LIMIT_RPS") or 3)
    return rps * float(os.environ.get("NOTION_TIME_SCALE") or 1)


# --- Reading --------------------------------------------------------------------------------------


# Every query filters on the session variables `since` and `object` (see `load_report`).
_SCOPE = "(getvariable('object') IS NULL OR object = getvariable('object'))"
_SINCE = "getvariable('since')"
_WINDOW = f'"at" >= {_SINCE} AND {_SCOPE}'  # the rows of `api_usage` and `sync_log` to report


def _partitions(conn: duckdb.DuckDBPyConnection) -> list[PartitionStatus]:
    rows = conn.execute(
        f"""
        WITH batches AS (
            SELECT *, row_number() OVER w AS newest, count(*) OVER (PARTITION BY object, "partition") AS runs
            FROM sync_batches WHERE started_at >= {_SINCE} AND {_SCOPE}
            WINDOW w AS (PARTITION BY object, "partition" ORDER BY started_at DESC)
        ), usage AS (
            SELECT object, "partition", count(*) FILTER (in_batch) AS requests,
                   count(*) FILTER (first AND u_at < started_at) AS setup,
                   count(*) FILTER (limited AND in_batch) AS limited
            FROM (
                SELECT b.object, b."partition", b.started_at, u."at" AS u_at, b.first,
                       u."at" >= b.started_at AND (b.ended_at IS NULL OR u."at" <= b.ended_at) AS in_batch,
                       (u.rate_limited OR u.status = 429) AS limited
                FROM api_usage u JOIN (
                    -- a run may sync several days (a backfill range): its set-up counts on its first
                    SELECT *, started_at = min(started_at) OVER (PARTITION BY run_id, object) AS first
                    FROM sync_batches
                ) b ON b.run_id = u.run_id AND b.object = u.object
            )
            GROUP BY ALL
        ), last_partition AS (
            SELECT object, sf_id, arg_max("partition", "at") AS "partition" FROM sync_log GROUP BY ALL
        ), pending AS (
            SELECT object, l."partition", count(*) AS pending
            FROM pending_relations JOIN last_partition l USING (object, sf_id) GROUP BY ALL
        )
        SELECT object, "partition", b.succeeded, b.failed, b.skipped, coalesce(p.pending, 0), b.status,
               b.started_at, b.ended_at, b.runs, coalesce(u.requests, 0), coalesce(u.setup, 0),
               coalesce(u.limited, 0), CASE WHEN b.status <> 'succeeded' THEN b.error_summary END
        FROM batches b
        LEFT JOIN usage u USING (object, "partition") LEFT JOIN pending p USING (object, "partition")
        WHERE newest = 1 ORDER BY object, "partition" DESC
        """
    ).fetchall()
    return [PartitionStatus(*row) for row in rows]


def _usage(conn: duckdb.DuckDBPyConnection) -> list[Usage]:
    scopes = conn.execute(
        f"""
        SELECT coalesce(object, 'all'), count(*), count(*) FILTER ({_LIMITED}),
               quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95)
        FROM api_usage WHERE {_WINDOW} GROUP BY GROUPING SETS ((), (object)) ORDER BY object NULLS FIRST
        """
    ).fetchall()
    minutes = {
        scope: (active, peak)
        for scope, active, peak in conn.execute(
            f"""
            SELECT coalesce(object, 'all'), count(*), max(n) FROM (
                SELECT object, date_trunc('minute', "at") AS minute, count(*) AS n FROM api_usage
                WHERE {_WINDOW} GROUP BY GROUPING SETS ((minute), (object, minute))
            ) GROUP BY object
            """
        ).fetchall()
    }
    return [
        Usage(scope, requests, limited, p50 or 0.0, p95 or 0.0, *minutes.get(scope, (0, 0)))
        for scope, requests, limited, p50, p95 in scopes
        if requests
    ]


def _http_statuses(conn: duckdb.DuckDBPyConnection) -> dict[int, int]:
    rows = conn.execute(
        f"SELECT status, count(*) FROM api_usage WHERE {_WINDOW} GROUP BY status ORDER BY status"
    ).fetchall()
    return {int(status or 0): count for status, count in rows}


def _patterns(conn: duckdb.DuckDBPyConnection, condition: str) -> list[FailurePattern]:
    """Records of `sync_log` matching ``condition`` by object, status and error code (the reason)."""
    rows = conn.execute(
        f"""
        SELECT object, status, coalesce(error_code, 'unrecorded'), count(*),
               coalesce(any_value(error_message), 'no reason recorded (logged by an older version)')
        FROM sync_log WHERE {condition} AND {_WINDOW}
        GROUP BY ALL ORDER BY count(*) DESC, 1, 3
        """
    ).fetchall()
    return [FailurePattern(*row[:4], row[4][:160]) for row in rows]


def _rate_limit_reasons(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """429s by reason; a staging file from before the column has none recorded."""
    if "rate_limit_reason" not in table_columns(conn, "api_usage"):
        return {}
    rows = conn.execute(
        f"""
        SELECT coalesce(rate_limit_reason, 'unspecified'), count(*) FROM api_usage
        WHERE {_LIMITED} AND {_WINDOW} GROUP BY ALL ORDER BY count(*) DESC, 1
        """
    ).fetchall()
    return dict(rows)


def _timeline(conn: duckdb.DuckDBPyConnection) -> tuple[float, list[Bucket]]:
    first, last = conn.execute(f'SELECT min("at"), max("at") FROM api_usage WHERE {_WINDOW}').fetchone()
    if first is None:
        return 1.0, []
    width = max(1.0, math.ceil((last - first).total_seconds() / TIMELINE_BUCKETS))
    origin = math.floor(first.timestamp() / width) * width
    rows = conn.execute(
        f"""
        SELECT floor((epoch("at") - ?) / ?)::BIGINT AS i, count(*), count(*) FILTER ({_LIMITED}),
               quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95)
        FROM api_usage WHERE {_WINDOW} GROUP BY i ORDER BY i
        """,
        [origin, width],
    ).fetchall()
    found = {i: row for i, *row in rows}
    return width, [
        Bucket(datetime.fromtimestamp(origin + i * width, UTC), *found.get(i, (0, 0, None, None)))
        for i in range(max(found) + 1)
    ]


def _reconciliations(conn: duckdb.DuckDBPyConnection, tables: set[str]) -> list[ReconciliationStatus]:
    if "reconciliations" not in tables:  # no reconciliation ran with this version yet
        return []
    rows = conn.execute(
        f"""
        SELECT object, "at", salesforce_records, pages, orphaned, missing, drifted, drift
        FROM reconciliations WHERE {_WINDOW}
        QUALIFY row_number() OVER (PARTITION BY object ORDER BY "at" DESC) = 1 ORDER BY object
        """
    ).fetchall()
    return [ReconciliationStatus(*row) for row in rows]


def _require_file(path: Path) -> None:
    if not path.exists():
        raise StatusUnavailable(
            f"no staging database at {path}: set NOTION_SYNC_DUCKDB to the file the platform syncs with"
        )


def load_report(
    path: str | Path | None = None,
    *,
    object_name: str | None = None,
    since_days: float | None = None,
    limit_rps: float | None = None,
) -> StatusReport:
    """Read the status report from the staging file (default ``NOTION_SYNC_DUCKDB``)."""
    target = Path(path) if path is not None else staging.duckdb_path()
    _require_file(target)
    since = datetime.now(UTC) - timedelta(days=since_days) if since_days is not None else None
    try:
        with staging.connect(target, read_only=True, timeout_s=LOCK_WAIT_S) as conn:
            tables = {row[0] for row in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            if missing := [t for t in REQUIRED_TABLES if t not in tables]:
                raise StatusUnavailable(
                    f"{target} holds no Notion sync yet (no table {', '.join(missing)}): "
                    "materialize a notion/<Object> partition first",
                    exit_code=0,
                )
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute("SET VARIABLE since = ?::TIMESTAMPTZ", [since or _EPOCH])
            conn.execute("SET VARIABLE object = ?::VARCHAR", [object_name])
            partitions, usage = _partitions(conn), _usage(conn)
            statuses = _http_statuses(conn)
            failures, skips = _patterns(conn, "status LIKE '%error'"), _patterns(conn, "status = 'skipped'")
            reasons = _rate_limit_reasons(conn)
            width, timeline = _timeline(conn)
            reconciliations = _reconciliations(conn, tables)
    except staging.StagingLockedError as error:
        raise StatusUnavailable(str(error)) from error
    return StatusReport(
        path=target,
        generated_at=datetime.now(UTC),
        since=since,
        object=object_name,
        limit_rps=limit_rps if limit_rps is not None else limit_rps_from_env(),
        partitions=partitions,
        usage=usage,
        http_statuses=statuses,
        failures=failures,
        skips=skips,
        rate_limit_reasons=reasons,
        bucket_width_s=width,
        timeline=timeline,
        reconciliations=reconciliations,
    )


# --- Plain text -----------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def partition_rows(report: StatusReport) -> list[list[object]]:
    return [
        [
            p.object,
            p.partition,
            p.synced,
            p.failed,
            p.skipped,
            p.pending,
            p.status,
            _when(p.ended_at or p.started_at),
            p.runs,
            p.requests,
            p.setup_requests,
            p.rate_limited,
        ]
        for p in report.partitions
    ]


def failed_partition_rows(report: StatusReport) -> list[list[object]]:
    return [
        [p.object, p.partition, _when(p.ended_at or p.started_at), (p.error or "no error recorded")[:300]]
        for p in report.partitions
        if p.status == "failed"
    ]


PARTITION_HEADERS = [
    "object",
    "partition",
    "synced",
    "failed",
    "skipped",
    "pending",
    "last run",
    "at (UTC)",
    "runs",
    "requests",
    "setup",
    "429s",
]
FAILED_PARTITION_HEADERS = ["object", "partition", "at (UTC)", "error"]
USAGE_HEADERS = ["scope", "requests", "req/min", "peak/min", "429s", "429 share", "p50 ms", "p95 ms"]
FAILURE_HEADERS = ["object", "status", "error code", "records", "example"]
SKIP_HEADERS = ["object", "status", "reason", "records", "example"]


def usage_rows(report: StatusReport) -> list[list[object]]:
    return [
        [
            u.scope,
            u.requests,
            round(u.per_minute, 1),
            u.peak_per_minute,
            u.rate_limited,
            f"{u.rate_limited_share:.1%}",
            round(u.p50_ms, 1),
            round(u.p95_ms, 1),
        ]
        for u in report.usage
    ]


def rate_limit_text(report: StatusReport) -> str:
    """ "2 the connection's request budget (public_api_request_rate_limit), …" or "none"."""
    return (
        ", ".join(
            f"{count} {RATE_LIMIT_REASONS.get(reason, 'other')} ({reason})"
            for reason, count in report.rate_limit_reasons.items()
        )
        or "none"
    )


def pattern_rows(patterns: list[FailurePattern]) -> list[list[object]]:
    return [[f.object, f.status, f.error_code, f.count, f.example[:70]] for f in patterns]


PARTITIONS_TITLE = (
    "Partitions (latest run of each)\n"
    "  synced = created + updated + unchanged + archived; pending = relations waiting for their parent page\n"
    "  requests = Notion calls of the syncs (the run metadata's requests); setup = calls before them that\n"
    "  find, create or check the database; both over all runs of the partition"
)
USAGE_NOTE = "req/min averaged over the clock minutes with calls, peak/min the busiest of them"


RECONCILIATIONS_TITLE = (
    "Reconciliations (latest of each object; drifted = pages edited by hand in Notion, synced again "
    "(resync) or only reported (report), by the object's drift setting)"
)
RECONCILIATION_HEADERS = ["object", "at (UTC)", "records", "pages", "orphaned", "missing", "drifted", "drift"]


def reconciliation_rows(report: StatusReport) -> list[list[object]]:
    return [
        [r.object, _when(r.at), r.salesforce_records, r.pages, r.orphaned, r.missing, r.drifted, r.drift]
        for r in report.reconciliations
    ]


def heading(report: StatusReport) -> str:
    scope = f" object {report.object}" if report.object else ""
    since = f" since {_when(report.since)}" if report.since else ""
    return f"notion-sync status of {report.path}{scope}{since} (generated {_when(report.generated_at)} UTC)"


def render_text(report: StatusReport) -> str:
    parts = [
        heading(report),
        "",
        PARTITIONS_TITLE,
        table(PARTITION_HEADERS, partition_rows(report)) if report.partitions else "  none",
        "",
        "Failed partitions (latest run failed; its error)",
        table(FAILED_PARTITION_HEADERS, rows) if (rows := failed_partition_rows(report)) else "  none",
        "",
        f"API usage (limit {report.limit_rps * 60:g} requests/min; {USAGE_NOTE})",
        table(USAGE_HEADERS, usage_rows(report)) if report.usage else "  no API calls recorded",
        "",
        "HTTP statuses: "
        + (", ".join(f"{status}: {count}" for status, count in report.http_statuses.items()) or "none"),
        "429s by the Notion limit they hit: " + rate_limit_text(report),
        "",
        "Failure patterns (failed record attempts by error code)",
        table(FAILURE_HEADERS, pattern_rows(report.failures)) if report.failures else "  none",
        "",
        "Skipped records (by reason)",
        table(SKIP_HEADERS, pattern_rows(report.skips)) if report.skips else "  none",
        "",
        RECONCILIATIONS_TITLE,
        table(RECONCILIATION_HEADERS, rows) if (rows := reconciliation_rows(report)) else "  none",
    ]
    return "\n".join(parts) + "\n"


def realtime_paths_text() -> str:
    """Which realtime object takes change events and which is polled, from the Dagster instance
    (DAGSTER_HOME) where the `realtime_changes` sensor stores its cursor."""
    from notion_sync.automation.realtime import SENSOR_NAME, describe_paths, stored_cursor

    title = f"\nRealtime lane ({SENSOR_NAME} sensor)\n"
    if not os.environ.get("DAGSTER_HOME"):
        return title + "  DAGSTER_HOME is not set: no Dagster instance to read the sensor's state from\n"
    try:
        with DagsterInstance.get() as instance:
            cursor = stored_cursor(instance)
    except Exception as error:  # a broken or locked instance must not hide the report above
        return title + f"  the Dagster instance could not be read: {error}\n"
    lines = describe_paths(cursor) if cursor else ["the sensor has not ticked yet"]
    return title + "".join(f"  {line}\n" for line in lines)


def run_status(
    html: str | None = None, object_name: str | None = None, since_days: float | None = None
) -> int:
    """The `notion-sync status` command: print the report, optionally write the HTML file too."""
    try:
        report = load_report(object_name=object_name, since_days=since_days)
    except StatusUnavailable as error:
        print(f"notion-sync status: {error}", file=sys.stderr)
        return error.exit_code
    sys.stdout.write(render_text(report))
    sys.stdout.write(realtime_paths_text())
    if html:
        from notion_sync.status_html import render_html  # imported here: it imports this module

        Path(html).write_text(render_html(report), encoding="utf-8")
        print(f"HTML report written to {html}")
    return 0
