"""Benchmark: how long a backfill range's swap holds the staging file, a day at a time against chunks.

    .venv/bin/python benchmarks/bench_swap_chunks.py
    .venv/bin/python benchmarks/bench_swap_chunks.py --records-per-day 100 --days 30 --big-per-day 2000

The hold is what the realtime lane waits for: from opening the staging file (`staging.connect`)
to closing it, the swap's transaction in between. Measured, each on a fresh copy of the same staging
file (already holding ``--days`` other days), with the sandbox's Accounts (65 queryable fields):

- one day of ``--records-per-day`` records, one connection (a day's swap before chunks);
- ``--days`` such days in one connection and one transaction (`replace_partitions`);
- ``--days`` days of ``--big-per-day`` records, in chunks of at most ``SWAP_CHUNK_ROWS`` spool rows
  (the largest chunk's hold).

Each figure is the median of ``--repeat`` runs, in this process (no Dagster).

Figures on 2 cores shared with other work (2026-11-27, load average 2.1-2.6), ``--repeat 7``; the
same data swapped a day per connection by the code before chunks: 30-32 ms to the commit, 45-47 ms
to the close:

    100 records a day, a connection a day:           33.9 ms to the commit,  48.9 ms to the close
      1 days x 100 (   100 rows) in one chunk:       33.9 ms to the commit,  45.8 ms to the close
      3 days x 100 (   300 rows) in one chunk:       35.7 ms to the commit,  48.7 ms to the close
      5 days x 100 (   500 rows) in one chunk:       39.8 ms to the commit,  53.7 ms to the close
     10 days x 100 (  1000 rows) in one chunk:       43.3 ms to the commit,  59.7 ms to the close
     30 days x 100 (  3000 rows) in one chunk:       61.4 ms to the commit,  87.8 ms to the close
     25 days x 2000 ( 50000 rows) in one chunk:     378.3 ms to the commit, 389.0 ms to the close
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from notion_sync.salesforce.extract import SWAP_CHUNK_ROWS, chunk_days, staging_columns
from notion_sync.sandbox.sf_data import SalesforceData, describe_sobject
from notion_sync.staging import SPOOL_TABLE, Spool, connect, ensure_table, replace_partitions

END = datetime(2026, 11, 21, tzinfo=UTC)
TABLE = "stg_account"
CURSOR = "SystemModstamp"


def _spool_records(spool: Spool, data: SalesforceData, columns: Sequence, page: int = 2_000) -> None:
    spool.create_table(SPOOL_TABLE, columns)
    for first in range(0, data.records, page):
        records = [data.generate("Account", i) for i in range(first, min(first + page, data.records))]
        path = spool.directory / "page.json"
        path.write_text(json.dumps(records))
        spool.load_json(SPOOL_TABLE, path, columns)
        path.unlink()
    spool.close()


def _days(days: int, end: datetime) -> list[date]:
    return [(end - timedelta(days=days - n)).date() for n in range(days)]


def _hold(db: Path, spool_path: Path, days: Sequence[date]) -> tuple[float, float]:
    """Seconds from opening the staging file to the swap's commit, and to closing it (DuckDB writes
    the swap into the file then), swapping `days` in one transaction (the range's first chunk also
    ensures the table's columns: a few ms more, not counted here)."""
    began = time.monotonic()
    with connect(db) as conn:
        replace_partitions(conn, TABLE, spool_path, days, cursor=CURSOR)
        swapped = time.monotonic() - began
    return swapped, time.monotonic() - began


def _median_hold(
    base: Path, spool_path: Path, chunks: Sequence[Sequence[date]], repeat: int
) -> tuple[float, float]:
    """Median holds of a chunk (to the commit, to the close), over `repeat` fresh copies of `base`
    each swapping all `chunks`."""
    work = base.with_name("work.duckdb")
    held = []
    for _ in range(repeat):
        shutil.copy(base, work)
        held.extend(_hold(work, spool_path, chunk) for chunk in chunks)
        work.unlink()
    return statistics.median(h[0] for h in held), statistics.median(h[1] for h in held)


def _ms(held: tuple[float, float]) -> str:
    return f"{held[0] * 1000:6.1f} ms to the commit, {held[1] * 1000:6.1f} ms to the close"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records-per-day", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--big-per-day", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bound", type=int, action="append", help="chunk bound(s) in spool rows")
    args = parser.parse_args()
    bounds = args.bound or [SWAP_CHUNK_ROWS]
    per_day, days = args.records_per_day, args.days
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.duckdb"
        earlier = _days(days, END - timedelta(days=days))
        small = SalesforceData(records=per_day * days, days=days, end=END)
        columns = staging_columns(describe_sobject(small.sobjects["Account"], "v62.0")["fields"])
        with Spool.create(base) as spool:  # the staging file already holds other days
            _spool_records(
                spool,
                SalesforceData(records=per_day * days, days=days, seed=8, end=END - timedelta(days=days)),
                columns,
            )
            with connect(base) as conn:
                ensure_table(conn, TABLE, columns)
            _hold(base, spool.path, earlier)
        print(
            f"hold of the staging file (open, swap, close), median of {args.repeat} runs; "
            f"the file holds {per_day * days} rows"
        )
        range_days = _days(days, END)
        with Spool.create(base) as spool:
            _spool_records(spool, small, columns)
            one_a_day = _median_hold(base, spool.path, [[day] for day in range_days], args.repeat)
            print(f"  {per_day} records a day, a connection a day:   {_ms(one_a_day)}")
            for n in sorted(n for n in {1, 3, 5, 7, 10, 15, days} if n <= days):
                held = _median_hold(base, spool.path, [range_days[:n]], args.repeat)
                print(f"  {n:3d} days x {per_day} ({n * per_day:6d} rows) in one chunk: {_ms(held)}")
        big = SalesforceData(records=args.big_per_day * days, days=days, seed=9, end=END)
        with Spool.create(base) as spool:
            _spool_records(spool, big, columns)
            rows = dict.fromkeys(range_days, args.big_per_day)
            for bound in bounds:
                chunk = chunk_days(range_days, rows, bound)[0]
                held = _median_hold(base, spool.path, [chunk], args.repeat)
                print(
                    f"  {len(chunk):3d} days x {args.big_per_day} ({len(chunk) * args.big_per_day:6d} rows), "
                    f"a chunk at the bound {bound}: {_ms(held)}"
                )


if __name__ == "__main__":
    main()
