"""DuckDB staging: connections, staged-table schema, spool loading and the partition swap."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from notion_sync.config import ObjectConfig
from notion_sync.salesforce import extract
from notion_sync.staging import (
    ROW_GROUP_SIZE,
    SPOOL_TABLE,
    Column,
    Spool,
    StagingLockedError,
    StagingResource,
    connect,
    duplicate_ids,
    ensure_table,
    partition_rows,
    remove_abandoned_spools,
    replace_partition,
    replace_partitions,
)

COLUMNS = [
    Column("Id", "VARCHAR"),
    Column("Name", "VARCHAR"),
    Column("Amount", "DOUBLE"),
    Column("IsDeleted", "BOOLEAN"),
    Column("SystemModstamp", "TIMESTAMPTZ"),
]
DAY = date(2026, 11, 20)


def _stage(db: Path, rows: list[dict], partition: date = DAY, deleted: tuple = ()) -> int:
    """Spool `rows` as one JSON page and swap them in as `partition` (`deleted`: getDeleted pairs)."""
    with Spool.create(db) as spool:
        spool.create_table(SPOOL_TABLE, COLUMNS)
        page = spool.directory / "page.json"
        page.write_text(json.dumps(rows))
        spool.load_json(SPOOL_TABLE, page, COLUMNS)
        spool.close()
        with connect(db) as conn:
            ensure_table(conn, "stg_account", COLUMNS)
            swap = replace_partition(
                conn, "stg_account", spool.path, partition, cursor="SystemModstamp", deleted=deleted
            )
            return swap.inserted + swap.tombstones


def _row(record_id: str, stamp: str, name: str = "Acme", deleted: bool = False) -> dict:
    return {
        "attributes": {"type": "Account"},
        "Id": record_id,
        "Name": name,
        "Amount": 1.5,
        "IsDeleted": deleted,
        "SystemModstamp": stamp,
    }


def _table(db: Path) -> list[tuple]:
    with connect(db, read_only=True) as conn:
        return conn.execute("SELECT Id, Name, IsDeleted, _partition FROM stg_account ORDER BY Id").fetchall()


def test_connect_waits_while_another_process_holds_the_file(tmp_path):
    db = tmp_path / "s.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
            "print('held', flush=True); time.sleep(1.5)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StagingLockedError, match="stayed locked"), connect(db, timeout_s=0.2):
            pass
        with connect(db, timeout_s=30) as conn:  # waits for the holder to exit
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        holder.wait(timeout=30)


def test_ensure_table_creates_then_adds_new_fields(tmp_path):
    with connect(tmp_path / "s.duckdb") as conn:
        assert ensure_table(conn, "stg_account", COLUMNS[:2]) == []
        assert ensure_table(conn, "stg_account", COLUMNS) == ["Amount", "IsDeleted", "SystemModstamp"]
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'stg_account'"
            ).fetchall()
        )
    assert types["Amount"] == "DOUBLE"
    assert types["SystemModstamp"] == "TIMESTAMP WITH TIME ZONE"
    assert types["_partition"] == "DATE"


def test_csv_page_is_read_in_its_header_order_with_quoted_newlines_and_nulls(tmp_path):
    page = tmp_path / "page.csv"
    page.write_text(
        '"SystemModstamp","Name","Id","Amount","IsDeleted"\n'
        '"2026-11-20T10:00:00.000Z","two\nlines, and ""quotes""","001A","2.5","false"\n'
        '"2026-11-20T11:00:00.000Z","","001B","","true"\n'
    )
    with Spool.create(tmp_path / "s.duckdb") as spool:
        spool.create_table(SPOOL_TABLE, COLUMNS)
        assert spool.load_csv(SPOOL_TABLE, page, {c.name: c.type for c in COLUMNS}) == 2
        rows = spool.conn.execute(
            f"SELECT Id, Name, Amount, IsDeleted FROM {SPOOL_TABLE} ORDER BY Id"
        ).fetchall()
    assert rows == [("001A", 'two\nlines, and "quotes"', 2.5, False), ("001B", None, None, True)]


def test_field_chunks_join_on_id(tmp_path):
    with Spool.create(tmp_path / "s.duckdb") as spool:
        spool.create_table("chunk_0", COLUMNS[:2])
        spool.create_table("chunk_1", [COLUMNS[0], COLUMNS[2]])
        spool.conn.execute("INSERT INTO chunk_0 VALUES ('a', 'A'), ('b', 'B')")
        spool.conn.execute("INSERT INTO chunk_1 VALUES ('a', 1.0), ('b', 2.0)")
        spool.join_on_id(["chunk_0", "chunk_1"], into=SPOOL_TABLE)
        assert spool.conn.execute(f"SELECT * FROM {SPOOL_TABLE} ORDER BY Id").fetchall() == [
            ("a", "A", 1.0),
            ("b", "B", 2.0),
        ]


def test_swap_replaces_the_partition_and_is_idempotent(tmp_path):
    db = tmp_path / "s.duckdb"
    rows = [_row("001A", "2026-11-20T10:00:00.000+0000"), _row("001B", "2026-11-20T12:00:00.000+0000")]
    assert _stage(db, rows) == 2
    assert _stage(db, rows) == 2
    assert len(_table(db)) == 2
    assert _stage(db, rows[:1]) == 1  # 001B moved out of the day: its row goes with the old partition
    assert [r[0] for r in _table(db)] == ["001A"]


def test_a_record_keeps_only_its_newest_version_across_partitions(tmp_path):
    db = tmp_path / "s.duckdb"
    _stage(db, [_row("001A", "2026-11-20T10:00:00.000+0000", name="old")])
    _stage(db, [_row("001A", "2026-11-21T09:00:00.000+0000", name="new")], date(2026, 11, 21))
    assert _table(db) == [("001A", "new", False, date(2026, 11, 21))]
    _stage(db, [_row("001A", "2026-11-20T10:00:00.000+0000", name="old")])  # a stale re-run of the 20th
    assert _table(db) == [("001A", "new", False, date(2026, 11, 21))]
    with connect(db, read_only=True) as conn:
        assert duplicate_ids(conn, "stg_account") == []
        assert partition_rows(conn, "stg_account", DAY) == 0


def test_a_hard_deleted_record_moves_into_the_day_of_its_deletion_as_deleted(tmp_path):
    db = tmp_path / "s.duckdb"
    _stage(db, [_row("001A", "2026-11-20T10:00:00.000+0000"), _row("001B", "2026-11-20T11:00:00.000+0000")])
    purged = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    # 001A is gone from queryAll; getDeleted lists it for 2026-11-21, and the day's spool lacks it.
    assert (
        _stage(db, [_row("001C", "2026-11-21T08:00:00.000+0000")], date(2026, 11, 21), (("001A", purged),))
        == 2
    )
    expected = [
        ("001A", "Acme", True, date(2026, 11, 21)),
        ("001B", "Acme", False, DAY),
        ("001C", "Acme", False, date(2026, 11, 21)),
    ]
    assert _table(db) == expected
    # A re-run of either day keeps it: the tombstone is rebuilt from itself, day 20 no longer has it.
    _stage(db, [_row("001C", "2026-11-21T08:00:00.000+0000")], date(2026, 11, 21), (("001A", purged),))
    _stage(db, [_row("001B", "2026-11-20T11:00:00.000+0000")])
    assert _table(db) == expected
    with connect(db, read_only=True) as conn:
        stamp = conn.execute("SELECT SystemModstamp FROM stg_account WHERE Id = '001A'").fetchone()[0]
    assert stamp == purged


def test_a_failed_swap_leaves_the_previous_rows(tmp_path):
    db = tmp_path / "s.duckdb"
    _stage(db, [_row("001A", "2026-11-20T10:00:00.000+0000")])
    with Spool.create(db) as spool:
        spool.create_table(SPOOL_TABLE, [Column("Id", "VARCHAR")])  # no SystemModstamp: the swap fails
        spool.conn.execute(f"INSERT INTO {SPOOL_TABLE} VALUES ('001Z')")
        spool.close()
        with connect(db) as conn, pytest.raises(duckdb.Error):
            replace_partition(conn, "stg_account", spool.path, DAY, cursor="SystemModstamp")
    assert [r[0] for r in _table(db)] == ["001A"]


def _spooled(db: Path, rows: list[dict], columns: list[Column] = COLUMNS) -> Spool:
    """A closed spool (inside a `Spool.create` context) holding `rows`."""
    spool = Spool(db)
    spool.create_table(SPOOL_TABLE, columns)
    page = db.with_suffix(".json")
    page.write_text(json.dumps(rows))
    spool.load_json(SPOOL_TABLE, page, columns)
    spool.close()
    return spool


def _state(db: Path) -> tuple[list[tuple], list[tuple]]:
    with connect(db, read_only=True) as conn:
        table = conn.execute(
            "SELECT Id, Name, IsDeleted, SystemModstamp, _partition FROM stg_account ORDER BY Id"
        ).fetchall()
        staged = conn.execute(
            "SELECT table_name, _partition, rows FROM staged_partitions ORDER BY _partition"
        ).fetchall()
    return table, staged


def test_a_chunk_of_days_swapped_in_one_transaction_equals_day_by_day_swaps(tmp_path):
    days = [date(2026, 11, 20) + timedelta(days=n) for n in range(3)]
    before = [
        _row("001A", "2026-11-19T10:00:00.000+0000", name="A old"),  # moves into the range (day 2)
        _row("001B", "2026-11-19T11:00:00.000+0000"),  # purged on day 2: a tombstone there
        _row("001C", "2026-11-21T09:00:00.000+0000", name="C old"),  # moves from day 2 to day 3
        _row("001D", "2026-11-22T09:00:00.000+0000", name="D"),  # gone from day 3: goes with it
        _row("001F", "2026-11-23T09:00:00.000+0000", name="F newer"),  # newer than the spool's
    ]
    first, second = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    for day in [date(2026, 11, 19), *days, date(2026, 11, 23)]:
        _stage(first, before, day)
    shutil.copy(first, second)
    spool = _spooled(
        tmp_path / "spool.duckdb",
        [
            _row("001E", "2026-11-20T08:00:00.000+0000", name="E"),
            _row("001A", "2026-11-21T10:00:00.000+0000", name="A new"),
            _row("001C", "2026-11-22T10:00:00.000+0000", name="C new"),
            _row("001F", "2026-11-22T11:00:00.000+0000", name="F older"),
        ],
    )
    deleted = [("001B", datetime(2026, 11, 21, 9, 30, tzinfo=UTC))]
    with connect(first) as conn:
        by_day = [
            replace_partition(conn, "stg_account", spool.path, day, cursor="SystemModstamp", deleted=deleted)
            for day in days
        ]
    with connect(second) as conn:
        chunk = replace_partitions(
            conn, "stg_account", spool.path, days, cursor="SystemModstamp", deleted=deleted
        )
    assert chunk == by_day
    assert [(s.inserted, s.tombstones) for s in chunk] == [(1, 0), (1, 1), (1, 0)]
    table, staged = _state(second)
    assert (table, staged) == _state(first)
    assert [(r[0], r[1], r[2], r[4]) for r in table] == [
        ("001A", "A new", False, days[1]),
        ("001B", "Acme", True, days[1]),
        ("001C", "C new", False, days[2]),
        ("001E", "E", False, days[0]),
        ("001F", "F newer", False, date(2026, 11, 23)),
    ]
    assert [
        r[1:] for r in staged
    ] == [  # the days outside the range keep their counts of when they were staged
        (date(2026, 11, 19), 2),
        (days[0], 1),
        (days[1], 2),
        (days[2], 1),
        (date(2026, 11, 23), 1),
    ]


def test_days_of_a_chunk_must_be_consecutive(tmp_path):
    spool = _spooled(tmp_path / "spool.duckdb", [])
    with connect(tmp_path / "s.duckdb") as conn, pytest.raises(ValueError, match="not consecutive"):
        replace_partitions(
            conn, "stg_account", spool.path, [DAY, DAY + timedelta(days=2)], cursor="SystemModstamp"
        )


def test_days_are_cut_into_chunks_of_bounded_rows():
    rows = {"d1": 30, "d2": 30, "d3": 50, "d4": 0, "d5": 200, "d6": 10}
    assert extract.chunk_days(list(rows), rows, 100) == [["d1", "d2"], ["d3", "d4"], ["d5"], ["d6"]]
    assert extract.chunk_days(["d1"], {}, 100) == [["d1"]]


def test_a_failed_chunk_leaves_earlier_chunks_staged_and_its_own_days_as_they_were(tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"
    keys = [f"2026-11-{day}" for day in range(20, 24)]
    old = [_row(f"001{n}", f"{key}T10:00:00.000+0000", name="old") for n, key in enumerate(keys)]
    for key in keys:
        _stage(db, old, date.fromisoformat(key))
    with connect(db, read_only=True) as conn:
        staged_before = conn.execute("SELECT * FROM staged_partitions ORDER BY _partition").fetchall()
    # The spool reads Amount as text: day 3's value is not a number, so its chunk fails in the swap.
    text_columns = [Column("Amount", "VARCHAR") if c.name == "Amount" else c for c in COLUMNS]
    new = [{**row, "Name": "new"} for row in old]
    new[2]["Amount"] = "not a number"
    spool = _spooled(tmp_path / "spool.duckdb", new, text_columns)
    monkeypatch.setattr(extract, "SWAP_CHUNK_ROWS", 2)
    obj = ObjectConfig(name="Account", title_field="Name", start_date=date(2026, 11, 1))
    swapped = extract._swap_days(
        StagingResource(path=str(db)),
        obj,
        spool.path,
        text_columns,
        keys,
        "SystemModstamp",
        dict.fromkeys((date.fromisoformat(key) for key in keys), (1, 0)),
        [],
    )
    done = []
    with pytest.raises(duckdb.ConversionException):
        for key, swap, lock_s, _ in swapped:
            done.append((key, swap.inserted, lock_s > 0))
    assert done == [(keys[0], 1, True), (keys[1], 1, True)]
    assert [r[1] for r in _table(db)] == ["new", "new", "old", "old"]
    with connect(db, read_only=True) as conn:
        staged_after = conn.execute("SELECT * FROM staged_partitions ORDER BY _partition").fetchall()
    assert staged_after[2:] == staged_before[2:]
    assert all(
        after[3] > before[3] for after, before in zip(staged_after[:2], staged_before[:2], strict=True)
    )


def test_spool_directory_is_removed(tmp_path):
    with Spool.create(tmp_path / "s.duckdb") as spool:
        directory = spool.directory
        assert directory.parent == tmp_path
    assert not directory.exists()


_OPEN_AND_WRITE = """
import sys
from notion_sync.staging import connect
with connect(sys.argv[1]) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS t (pid INTEGER)")
    conn.execute("INSERT INTO t VALUES (?)", [int(sys.argv[2])])
"""


def test_processes_opening_a_brand_new_file_together_all_succeed(tmp_path):
    """The first process may still be writing the new file's header when the others open it."""
    for round_ in range(3):
        path = tmp_path / f"fresh{round_}.duckdb"
        command = [sys.executable, "-c", _OPEN_AND_WRITE, str(path)]
        procs = [subprocess.Popen([*command, str(i)], stderr=subprocess.PIPE) for i in range(4)]
        errors = [p.communicate(timeout=120)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        with duckdb.connect(str(path), read_only=True) as conn:
            assert sorted(row[0] for row in conn.execute("SELECT pid FROM t").fetchall()) == [0, 1, 2, 3]


def test_a_big_swap_is_written_in_small_row_groups(tmp_path):
    """Whole 122,880-row groups would be held (and spilled) in memory until COMMIT; ours are 16,384."""
    db = tmp_path / "s.duckdb"
    rows = [_row(f"001{i:06d}", "2026-11-20T10:00:00.000+0000") for i in range(40_000)]
    assert _stage(db, rows) == 40_000
    with connect(db, read_only=True) as conn:
        sizes = conn.execute(
            "SELECT max(count) FROM pragma_storage_info('stg_account') WHERE column_id = 0 "
            "GROUP BY row_group_id ORDER BY row_group_id"
        ).fetchall()
    assert len(sizes) == 3  # 16,384 + 16,384 + 7,232
    assert max(size for (size,) in sizes) <= ROW_GROUP_SIZE


def _held_in_other_process(db: Path) -> bool:
    probe = (
        f"import duckdb\ntry:\n    duckdb.connect({str(db)!r}).close()\n"
        "except duckdb.IOException:\n    print('locked')"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() == "locked"


def test_threads_share_the_file_which_is_released_after_the_last_connection(tmp_path):
    db = tmp_path / "s.duckdb"
    with connect(db) as first:
        first.execute("CREATE TABLE t (i INTEGER)")
        opened = threading.Event()
        release = threading.Event()

        def second() -> None:
            with connect(db, timeout_s=1) as conn:
                conn.execute("INSERT INTO t VALUES (2)")
                opened.set()
                release.wait(10)

        worker = threading.Thread(target=second)
        worker.start()
        assert opened.wait(10)  # no lock wait between threads of one process
    assert _held_in_other_process(db)  # the second thread still has it
    release.set()
    worker.join(10)
    assert not _held_in_other_process(db)
    with connect(db, read_only=True) as conn:
        assert conn.execute("SELECT i FROM t").fetchall() == [(2,)]


def test_a_writer_waits_for_this_process_readers(tmp_path):
    db = tmp_path / "s.duckdb"
    with connect(db) as conn:
        conn.execute("CREATE TABLE t (i INTEGER)")
    with connect(db, read_only=True), pytest.raises(StagingLockedError), connect(db, timeout_s=0.2):
        pass
    with connect(db, timeout_s=1) as conn:
        conn.execute("INSERT INTO t VALUES (1)")


_SPOOL_THEN = """
import os, signal, sys, time
from notion_sync.staging import Spool
with Spool.create(sys.argv[1]) as spool:
    print(spool.directory, flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()
"""


def test_spools_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    db = tmp_path / "s.duckdb"
    command = [sys.executable, "-c", _SPOOL_THEN, str(db)]
    killed = subprocess.Popen([*command, "die"], stdout=subprocess.PIPE, text=True)
    dead_dir = Path(killed.stdout.readline().strip())
    assert killed.wait(30) == -9 and dead_dir.is_dir()
    alive = subprocess.Popen([*command, "live"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        live_dir = Path(alive.stdout.readline().strip())
        old_unowned, new_unowned = tmp_path / ".spool-old", tmp_path / ".spool-new"
        for directory in (old_unowned, new_unowned):
            directory.mkdir()
            (directory / "spool.duckdb").write_bytes(b"x" * 1000)
        os.utime(old_unowned, (time.time() - 3600, time.time() - 3600))
        with Spool.create(db) as mine:
            removed = remove_abandoned_spools(db)
            assert sorted(path for path, _ in removed) == sorted([dead_dir, old_unowned])
            assert dict(removed)[old_unowned] == 1000
            assert live_dir.is_dir() and mine.directory.is_dir() and new_unowned.is_dir()
    finally:
        alive.communicate("", timeout=30)
    assert not live_dir.exists()
