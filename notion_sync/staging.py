"""DuckDB access: the one place that opens the staging database.

DuckDB lets only one process open a database file for writing, and a reader is refused while a
writer holds it. So every caller takes a short-lived connection through :func:`connect`, which
retries while another process holds the file and fails with a clear error after a bound.
"""

from __future__ import annotations

import csv
import fcntl
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import duckdb
from dagster import ConfigurableResource

DEFAULT_DUCKDB_PATH = "data/staging.duckdb"


class StagingLockedError(RuntimeError):
    """Another process kept the staging database locked for longer than we wait."""


def duckdb_path() -> Path:
    return Path(os.environ.get("NOTION_SYNC_DUCKDB", DEFAULT_DUCKDB_PATH))


_NEW_FILE_BYTES = 1 << 20
# DuckDB's default row group is 122,880 rows, and an insert keeps a whole row group in memory
# before it compresses and writes it. At 65 fields a row group is ~150 MB, far over the 64 MB
# budget (see `_bound_memory`), so it was spilled to a temporary file and read back at COMMIT:
# a 100,000-row swap took 1.3 s, 0.7 s at this size. Scans lose little at 16K rows; files grow by
# about a third (23 -> 31 MB for 100,000 Accounts).
ROW_GROUP_SIZE = 16_384
ALIAS = "staging"


class _HeldReadOnly(Exception):
    """This process has the file open read-only; a writer waits as it would for another process."""


def _attach(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is the file at `path`, opened with our row group size."""
    conn = duckdb.connect()
    try:
        options = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}" + (", READ_ONLY" if read_only else "")
        conn.execute(f"ATTACH '{path}' AS {ALIAS} ({options})")
        conn.execute(f"USE {ALIAS}")
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass
class _Opened:
    root: duckdb.DuckDBPyConnection
    read_only: bool
    users: int = 0


class _OpenFiles:
    """One DuckDB instance per staging file in this process, shared by its threads.

    `duckdb.connect(path)` shares an instance the same way, but cannot take ROW_GROUP_SIZE; two
    separate ATTACHes of one file in one process are refused. Each user gets its own cursor, and the
    file is closed, so that other processes can take its lock, when the last cursor is released.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, _Opened] = {}

    def acquire(self, path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        key = path.resolve()
        with self._lock:
            opened = self._open.get(key)
            if opened is None:
                opened = self._open[key] = _Opened(_attach(path, read_only=read_only), read_only)
            elif opened.read_only and not read_only:
                raise _HeldReadOnly(str(path))
            cursor = opened.root.cursor()
            opened.users += 1
        try:
            cursor.execute(f"USE {ALIAS}")
        except BaseException:
            self.release(path, cursor)
            raise
        return cursor

    def release(self, path: Path, cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.close()
        key = path.resolve()
        with self._lock:
            opened = self._open[key]
            opened.users -= 1
            if opened.users == 0:
                opened.root.close()
                del self._open[key]


_OPEN_FILES = _OpenFiles()


def _is_lock_error(error: duckdb.Error, target: Path) -> bool:
    """Another process holds the file, or is still writing a brand-new one (its header is not there yet)."""
    text = str(error).lower()
    if "lock" in text or "conflicting" in text:
        return True
    invalid = "not a valid duckdb database file" in text
    return invalid and target.exists() and target.stat().st_size < _NEW_FILE_BYTES


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
            conn = _OPEN_FILES.acquire(target, read_only=read_only and target.exists())
            break
        except (duckdb.Error, _HeldReadOnly) as error:
            if isinstance(error, duckdb.Error) and not _is_lock_error(error, target):
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
        _OPEN_FILES.release(target, conn)


class StagingResource(ConfigurableResource):
    """The DuckDB staging database (`NOTION_SYNC_DUCKDB`) as a Dagster resource."""

    path: str = DEFAULT_DUCKDB_PATH
    lock_timeout_s: float = 120.0

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.path, read_only=read_only, timeout_s=self.lock_timeout_s) as conn:
            yield conn


# --- Staged Salesforce tables -------------------------------------------------------------------
#
# `stg_<object>` mirrors one Salesforce object: a column per field, named as in Salesforce, plus
# `_partition` (the UTC day of SystemModstamp that staged the row) and `_staged_at`.
#
# A partition is extracted into a *spool*: a private temporary DuckDB file next to the staging file.
# Pages land there while the API is read (minutes for a big window), then one short connection to
# the shared staging file swaps the partition in a single transaction. So the write lock that the
# Notion sync also needs is held only for the swap, a killed extraction leaves the previous rows
# untouched, and memory stays flat: pages go from disk to disk, bounded by SPOOL_MEMORY_LIMIT.

PARTITION_COLUMN = "_partition"
STAGED_AT_COLUMN = "_staged_at"
SPOOL_MEMORY_LIMIT = "64MB"
SPOOL_COMPRESSION = "uncompressed"  # the spool file only; the staging file keeps DuckDB's compression
SPOOL_TABLE = "records"
# A Bulk CSV row can hold up to 1,638,400 characters of long text (Salesforce's per-object total), up
# to 4 bytes each and doubled where quotes are escaped: DuckDB's default limit of 2,000,000 bytes a line
# is far too small. This one reads within the spool's 64 MB memory limit.
MAX_CSV_LINE_BYTES = 16 << 20
SPOOL_PREFIX = ".spool-"
OWNER_FILE = "owner.lock"
UNOWNED_SPOOL_GRACE_S = 600.0


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a DuckDB type: VARCHAR, DOUBLE, BIGINT, BOOLEAN, DATE, TIMESTAMPTZ


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _struct(columns: Iterable[Column]) -> str:
    """A DuckDB `columns=` argument: {'Id': 'VARCHAR', ...}."""
    return "{" + ", ".join(f"'{c.name}': '{c.type}'" for c in columns) + "}"


def _bound_memory(conn: duckdb.DuckDBPyConnection) -> None:
    """Keep big loads and swaps within a flat budget: they spill to disk instead of growing.

    One thread: each DuckDB thread adds buffers, and the run is bound by the API anyway.
    """
    conn.execute(f"SET memory_limit = '{SPOOL_MEMORY_LIMIT}'")
    conn.execute("SET threads = 1")
    conn.execute("SET preserve_insertion_order = false")
    conn.execute("SET TimeZone = 'UTC'")


def ensure_table(conn: duckdb.DuckDBPyConnection, table: str, columns: Sequence[Column]) -> list[str]:
    """Create `table` or add the columns it lacks (new Salesforce fields); returns the added names."""
    defs = ", ".join(f"{quote_ident(c.name)} {c.type}" for c in columns)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} ({defs}, "
        f"{PARTITION_COLUMN} DATE NOT NULL, {STAGED_AT_COLUMN} TIMESTAMPTZ NOT NULL)"
    )
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
    }
    added = [c for c in columns if c.name not in existing]
    for column in added:
        conn.execute(f"ALTER TABLE {quote_ident(table)} ADD COLUMN {quote_ident(column.name)} {column.type}")
    return [c.name for c in added]


class Spool:
    """A temporary DuckDB file collecting one partition's pages, typed, before the swap.

    All pages go in one transaction (committed by :meth:`close`): it costs DuckDB about half the
    CPU of a commit per page, and a spool that is never closed is thrown away anyway.
    """

    def __init__(self, path: Path):
        self.path = path
        self.conn = _attach(path)
        _bound_memory(self.conn)
        # The spool is read once, by the swap, then deleted: compressing it (mostly strings) cost about
        # 30% of the load's CPU and is done again anyway when the swap writes the staging table. The
        # price is temporary disk: ~1.2 KB a record for a 65-field Account instead of ~0.25 KB.
        self.conn.execute(f"SET force_compression = '{SPOOL_COMPRESSION}'")
        self.conn.execute("BEGIN TRANSACTION")

    @classmethod
    @contextmanager
    def create(cls, near: str | Path) -> Iterator[Spool]:
        """A spool in a fresh directory beside `near` (the staging file), removed afterwards.

        The directory holds `owner.lock`, locked (flock) while its process lives; a run killed with
        SIGKILL leaves the directory behind, and :func:`remove_abandoned_spools` finds it by that.
        """
        parent = Path(near).parent
        parent.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(
                prefix=SPOOL_PREFIX, dir=parent, ignore_cleanup_errors=True
            ) as directory,
            _owner_lock(Path(directory)),
        ):
            spool = cls(Path(directory) / "spool.duckdb")
            try:
                yield spool
            finally:
                spool.conn.close()

    @property
    def directory(self) -> Path:
        return self.path.parent

    def create_table(self, table: str, columns: Sequence[Column]) -> None:
        defs = ", ".join(f"{quote_ident(c.name)} {c.type}" for c in columns)
        self.conn.execute(f"CREATE TABLE {quote_ident(table)} ({defs})")

    def drop_table(self, table: str) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {quote_ident(table)}")

    def load_csv(self, table: str, path: Path, types: Mapping[str, str]) -> int:
        """Append a CSV page (header row first, Bulk 2.0 dialect) typed by `types`; returns its rows."""
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        if not header:
            return 0
        columns = [Column(name, types[name]) for name in header]
        # The dialect and the types are known: without auto_detect = false DuckDB still sniffs every
        # page, which cost about a third of the load.
        return self._insert(
            table,
            columns,
            f"read_csv('{path}', header = true, auto_detect = false, delim = ',', quote = '\"', "
            f"escape = '\"', max_line_size = {MAX_CSV_LINE_BYTES}, columns = {_struct(columns)})",
        )

    def load_json(self, table: str, path: Path, columns: Sequence[Column]) -> int:
        """Append a JSON array of records (extra keys such as `attributes` ignored); returns its rows."""
        return self._insert(
            table, columns, f"read_json('{path}', format = 'array', columns = {_struct(columns)})"
        )

    def _insert(self, table: str, columns: Sequence[Column], source: str) -> int:
        names = ", ".join(quote_ident(c.name) for c in columns)
        row = self.conn.execute(f"INSERT INTO {quote_ident(table)} ({names}) SELECT {names} FROM {source}")
        return row.fetchone()[0]

    def join_on_id(self, tables: Sequence[str], into: str) -> None:
        """Stitch field chunks queried separately back into one row per Id (inner join)."""
        first, *rest = (quote_ident(t) for t in tables)
        joins = " ".join(f"JOIN {t} USING (Id)" for t in rest)
        self.conn.execute(f"CREATE TABLE {quote_ident(into)} AS SELECT * FROM {first} {joins}")

    def count(self, table: str, where: str = "true") -> int:
        return self.conn.execute(f"SELECT count(*) FROM {quote_ident(table)} WHERE {where}").fetchone()[0]

    def count_by_day(self, table: str, cursor: str, deleted: str | None) -> dict[date, tuple[int, int]]:
        """UTC day of `cursor` -> (rows, rows with the boolean column `deleted` true)."""
        flagged = f"count(*) FILTER (WHERE {quote_ident(deleted)})" if deleted else "0"
        rows = self.conn.execute(
            f"SELECT CAST({quote_ident(cursor)} AS DATE) AS day, count(*), {flagged} "
            f"FROM {quote_ident(table)} GROUP BY day"
        ).fetchall()
        return {day: (total, gone) for day, total, gone in rows}

    def close(self) -> None:
        """Commit and release the file so the staging connection can attach it."""
        self.conn.execute("COMMIT")
        self.conn.close()


@contextmanager
def _owner_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on `directory/owner.lock` (it appears only once locked)."""
    pending = directory / f"{OWNER_FILE}.pending"
    with pending.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        pending.rename(directory / OWNER_FILE)
        yield


def _abandoned(directory: Path, now: float) -> bool:
    """No live process holds the spool's owner lock (or it has none, and is not brand new)."""
    try:
        handle = (directory / OWNER_FILE).open("r")
    except FileNotFoundError:  # being created this instant, or written before owner locks existed
        return now - directory.stat().st_mtime > UNOWNED_SPOOL_GRACE_S
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def remove_abandoned_spools(near: str | Path) -> list[tuple[Path, int]]:
    """Delete spool directories beside `near` whose run was killed; returns (path, bytes) of each.

    A spool is ~1.2 KB a record (uncompressed), so a few killed big runs would otherwise fill the disk.
    """
    removed = []
    now = time.time()
    for directory in Path(near).parent.glob(f"{SPOOL_PREFIX}*"):
        with suppress(FileNotFoundError):  # another process removed it first
            if directory.is_dir() and _abandoned(directory, now):
                size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
                shutil.rmtree(directory)
                removed.append((directory, size))
    return removed


def day_filter(cursor: str, first: date, last: date | None = None) -> str:
    """SQL condition: `cursor` falls on the UTC day `first` (or days `first` to `last`): a range on the
    column, so DuckDB skips the row groups of other days by their min/max."""
    start = datetime.combine(first, dtime(), UTC)
    end = datetime.combine(last or first, dtime(), UTC) + timedelta(days=1)
    low, high = (f"'{moment.isoformat()}'::TIMESTAMPTZ" for moment in (start, end))
    return f"{quote_ident(cursor)} >= {low} AND {quote_ident(cursor)} < {high}"


# `staged_partitions`: one row per (table, day) ever staged, written in the swap's transaction. It is
# how the Notion sync tells "staged, and the day had no records" from "never staged".
STAGED_PARTITIONS = "staged_partitions"


def _ensure_staged_partitions(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {STAGED_PARTITIONS} (table_name VARCHAR NOT NULL, "
        f"{PARTITION_COLUMN} DATE NOT NULL, rows BIGINT NOT NULL, {STAGED_AT_COLUMN} TIMESTAMPTZ NOT NULL, "
        f"PRIMARY KEY (table_name, {PARTITION_COLUMN}))"
    )


def staged_rows(conn: duckdb.DuckDBPyConnection, table: str, first: date, last: date) -> int | None:
    """Rows the days `first`..`last` of `table` held when they were last staged; None when none of
    them was ever staged (`staged_partitions`)."""
    try:
        days, rows = conn.execute(
            f"SELECT count(*), sum(rows) FROM {STAGED_PARTITIONS} "
            f"WHERE table_name = ? AND {PARTITION_COLUMN} BETWEEN ? AND ?",
            [table, first, last],
        ).fetchone()
    except duckdb.CatalogException:
        return None
    return int(rows) if days else None


def was_staged(conn: duckdb.DuckDBPyConnection, table: str, partition: date) -> bool:
    """Whether `partition` of `table` was ever staged (with 0 rows or more).

    Partitions staged before `staged_partitions` existed count when they have rows.
    """
    queries = (
        (
            f"SELECT 1 FROM {STAGED_PARTITIONS} WHERE table_name = ? AND {PARTITION_COLUMN} = ?",
            [table, partition],
        ),
        (f"SELECT 1 FROM {quote_ident(table)} WHERE {PARTITION_COLUMN} = ? LIMIT 1", [partition]),
    )
    for query, params in queries:
        try:
            if conn.execute(query, params).fetchone():
                return True
        except duckdb.CatalogException:  # that table does not exist (yet)
            continue
    return False


@dataclass(frozen=True)
class Swap:
    inserted: int  # rows of the spool inserted
    tombstones: int  # staged records moved into the partition as deleted (`deleted` of replace_partition)


TOMBSTONES = "_tombstones"


def replace_partition(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    spool_path: Path,
    partition: date,
    *,
    cursor: str,
    deleted: Sequence[tuple[str, datetime]] = (),
) -> Swap:
    """Swap one day: :func:`replace_partitions` of `[partition]`."""
    [swap] = replace_partitions(conn, table, spool_path, [partition], cursor=cursor, deleted=deleted)
    return swap


def replace_partitions(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    spool_path: Path,
    partitions: Sequence[date],
    *,
    cursor: str,
    deleted: Sequence[tuple[str, datetime]] = (),
) -> list[Swap]:
    """Swap the consecutive days `partitions` for the spool's rows of those days in one transaction
    (a spool of a backfill range is swapped in chunks of days), and record each day in
    `staged_partitions`; returns each day's :class:`Swap`.

    An Id staged under another day is replaced only by a newer version (by `cursor`), so the table
    keeps one row per record, the latest, whichever order partitions are (re)run in. The days of a
    chunk are replaced together (as if swapped at one instant), so that holds within a chunk too.

    `deleted`: (Id, deletion time) of deleted records (Salesforce's getDeleted); those deleted on one
    of the days count. A live staged row of such an Id that the spool lacks (hard-deleted or purged
    from the Recycle Bin: queryAll no longer returns it) moves into the day of its deletion as a
    tombstone, with `IsDeleted` and the deletion time as `cursor`, so that partition's sync trashes
    its page as for any delete.
    """
    first, last = partitions[0], partitions[-1]
    if list(partitions) != [first + timedelta(days=n) for n in range((last - first).days + 1)]:
        raise ValueError(f"not consecutive days: {partitions}")
    _bound_memory(conn)
    _ensure_staged_partitions(conn)
    target, ts = quote_ident(table), quote_ident(cursor)
    new = (
        f"(SELECT *, CAST({ts} AS DATE) AS {PARTITION_COLUMN} FROM spool.{SPOOL_TABLE} "
        f"WHERE {day_filter(cursor, first, last)})"
    )
    days = f"{PARTITION_COLUMN} BETWEEN ?::DATE AND ?::DATE"
    conn.execute(f"ATTACH '{spool_path}' AS spool (READ_ONLY)")
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            tombstones = _collect_tombstones(
                conn, target, new, ts, (first, last), deleted
            )  # before the days go
            conn.execute(f"DELETE FROM {target} WHERE {days}", [first, last])
            _insert_newer(conn, target, new, ts)
            inserted = _rows_by_day(conn, target, days, first, last)
            if tombstones:
                _insert_newer(conn, target, TOMBSTONES, ts)
            conn.execute(
                f"INSERT OR REPLACE INTO {STAGED_PARTITIONS} SELECT ?, day, count(t.Id), now() "
                f"FROM unnest(?::DATE[]) AS d(day) LEFT JOIN {target} t ON t.{PARTITION_COLUMN} = d.day "
                "GROUP BY day",
                [table, list(partitions)],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {TOMBSTONES}")
    finally:
        conn.execute("DETACH spool")
    return [Swap(inserted.get(day, 0), tombstones.get(day, 0)) for day in partitions]


def _rows_by_day(
    conn: duckdb.DuckDBPyConnection, target: str, days: str, first: date, last: date
) -> dict[date, int]:
    rows = conn.execute(
        f"SELECT {PARTITION_COLUMN}, count(*) FROM {target} WHERE {days} GROUP BY 1", [first, last]
    ).fetchall()
    return dict(rows)


def _insert_newer(conn: duckdb.DuckDBPyConnection, target: str, source: str, ts: str) -> None:
    """Insert `source`'s rows (with their `_partition`), replacing older versions of their Ids staged
    elsewhere; an Id staged in a newer version is left as it is."""
    conn.execute(f"DELETE FROM {target} t USING {source} n WHERE t.Id = n.Id AND t.{ts} <= n.{ts}")
    conn.execute(
        f"INSERT INTO {target} BY NAME SELECT n.*, now() AS {STAGED_AT_COLUMN} "
        f"FROM {source} n ANTI JOIN {target} t USING (Id)"
    )


def _collect_tombstones(
    conn: duckdb.DuckDBPyConnection,
    target: str,
    spool: str,
    ts: str,
    days: tuple[date, date],
    deleted: Sequence[tuple[str, datetime]],
) -> dict[date, int]:
    """Copy the staged rows of records deleted on `days` that the spool lacks into TOMBSTONES, marked
    deleted, as rows of the day of their deletion: live rows, and that day's tombstones of an earlier
    run (its rows are about to be replaced). Returns their count per day."""
    if not deleted:
        return {}
    ids, moments = [record_id for record_id, _ in deleted], [when for _, when in deleted]
    conn.execute(
        f"CREATE TEMP TABLE {TOMBSTONES} AS "
        f"WITH d AS (SELECT unnest(?::VARCHAR[]) AS Id, unnest(?::TIMESTAMPTZ[]) AS deleted), "
        f"gone AS (SELECT Id, deleted, CAST(deleted AS DATE) AS day FROM d "
        f"WHERE CAST(deleted AS DATE) BETWEEN ?::DATE AND ?::DATE) "
        f"SELECT t.* EXCLUDE ({STAGED_AT_COLUMN}) "
        f"REPLACE (true AS IsDeleted, g.deleted AS {ts}, g.day AS {PARTITION_COLUMN}) "
        f"FROM {target} t JOIN gone g ON t.Id = g.Id "
        f"WHERE (NOT t.IsDeleted OR t.{PARTITION_COLUMN} = g.day) AND t.{ts} <= g.deleted "
        f"AND t.Id NOT IN (SELECT Id FROM {spool}) "
        f"QUALIFY row_number() OVER (PARTITION BY t.Id ORDER BY g.deleted DESC) = 1",
        [ids, moments, *days],
    )
    return dict(conn.execute(f"SELECT {PARTITION_COLUMN}, count(*) FROM {TOMBSTONES} GROUP BY 1").fetchall())


def update_values(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    spool_path: Path,
    fields: Sequence[str],
    staged_before: datetime,
) -> dict[date, int]:
    """Set `fields` of staged rows to the spool's values (joined by Id) where they differ; returns
    the changed rows per partition. Rows staged since `staged_before` were read after the spool
    and are left alone."""
    _bound_memory(conn)
    target, new = quote_ident(table), f"spool.{SPOOL_TABLE}"
    differs = " OR ".join(f"t.{quote_ident(f)} IS DISTINCT FROM n.{quote_ident(f)}" for f in fields)
    matched = f"t.Id = n.Id AND t.{STAGED_AT_COLUMN} < ? AND ({differs})"
    conn.execute(f"ATTACH '{spool_path}' AS spool (READ_ONLY)")
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            changed = conn.execute(
                f"SELECT t.{PARTITION_COLUMN}, count(*) FROM {target} t JOIN {new} n ON {matched} GROUP BY 1",
                [staged_before],
            ).fetchall()
            values = ", ".join(f"{quote_ident(f)} = n.{quote_ident(f)}" for f in fields)
            conn.execute(
                f"UPDATE {target} AS t SET {values}, {STAGED_AT_COLUMN} = now() "
                f"FROM {new} AS n WHERE {matched}",
                [staged_before],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH spool")
    return dict(changed)


def partition_rows(conn: duckdb.DuckDBPyConnection, table: str, partition: date) -> int:
    return conn.execute(
        f"SELECT count(*) FROM {quote_ident(table)} WHERE {PARTITION_COLUMN} = ?", [partition]
    ).fetchone()[0]


def duplicate_ids(conn: duckdb.DuckDBPyConnection, table: str, limit: int = 5) -> list[str]:
    """Up to `limit` Ids that appear more than once (should be none)."""
    rows = conn.execute(
        f"SELECT Id FROM {quote_ident(table)} GROUP BY Id HAVING count(*) > 1 ORDER BY Id LIMIT {limit}"
    ).fetchall()
    return [row[0] for row in rows]
