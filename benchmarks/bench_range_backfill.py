"""Benchmark: a backfill of `salesforce/Account` staged one run per day against runs of N-day ranges.

    .venv/bin/python benchmarks/bench_range_backfill.py                      # 365 days, both sides
    .venv/bin/python benchmarks/bench_range_backfill.py --per-day-days 60    # the slow side on 60 days
    .venv/bin/python benchmarks/bench_range_backfill.py --rss-records 300000 # + one 30-day range of 300,000

What it measures, in one run, against one sandbox Salesforce (in this process, HTTPS) holding
``--records-per-day`` Accounts (65 queryable fields) on each of ``--days`` days:

- ranges: the backfill as Dagster's `BackfillPolicy.multi_run(N)` hands it out, one run per N
  consecutive days (``--per-run``, default 30): the describe (kept an hour), one probe Composite
  call (and more, or a Bulk job, for a big range), the days swapped in chunks and each recorded as
  its own materialization;
- per day: one run per day (the same asset, a range of one day, as before ranges), on
  ``--per-day-days`` days spread evenly over the year (default all); the total for all ``--days`` is
  then extrapolated from the mean per run and printed as such.

Each run is its own process (`python -c` + `execute_in_process`), as the daemon's run launcher starts
one per run, against one Dagster instance per side (SQLite storage in a temporary DAGSTER_HOME, the
default a user gets; ``--storage postgres`` for PostgreSQL) and its own staging file. The two sides'
runs alternate in proportion (a range run, then about five one-day runs, ...), so that the machine's
drift during the minutes of the benchmark falls on both alike. Figures: wall time (the sum of the
side's run processes, each timed from start to exit), runs, Salesforce API calls (the sandbox counts
them), peak RSS of the largest run process. Only the staging step is run (no checks, no Notion), so
the figures are the extraction's.

``--rss-records``: one more run, a 30-day range holding that many records in all (Bulk API 2.0), and
its peak RSS: memory stays flat whatever the range's size.

Figures on 2 cores with nothing else running (2026-11-27, load average 0.9-1.3), the sides' runs
alternating, ``--per-day-days 60 --rss-records 300000`` (SQLite, two runs) and ``--storage postgres``:

    sqlite:   ranges 365 days in 13 runs, 43.1 s / 42.8 s, 14 API calls, peak RSS 242 MB
              per-day 60 days in 60 runs, 143.6 s / 142.6 s, 61 API calls, peak RSS 205 MB
              365 days one run per day (scaled): 874 s / 868 s, 371 API calls
              -> 20.3x / 20.3x less wall time, 26.5x fewer API calls, 28.1x fewer runs
              one 30-day range of 300,000 records: 32.0 s, 20 API calls, peak RSS 266 MB
    postgres: ranges 44.8 s, per-day 848 s (scaled) -> 18.9x less wall time, 26.5x fewer calls

(Each side back to back, before the alternation: 20.5x, 21.3x, 19.2x on SQLite, 19.1x on PostgreSQL.
Before the Composite reads, the 2,000-row swap chunks and a run without pandas, on a loaded machine
with the per-day side on the latest 60 days: 18.1x, 13.6x, 310 MB.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

END = datetime(2026, 11, 21, tzinfo=UTC)  # the sandbox data's default end (exclusive)
SEED = 7

# The run process: stage the days first..last of salesforce/Account and report its peak RSS.
CHILD = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
from datetime import date
from dagster import DagsterInstance, Definitions, define_asset_job
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from notion_sync.config import ObjectConfig
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce import SalesforceResource, build_salesforce_asset
from notion_sync.staging import StagingResource
first, last, start, per_run, db = sys.argv[1:6]
obj = ObjectConfig(name="Account", title_field="Name", start_date=date.fromisoformat(start),
                   max_partitions_per_run=int(per_run))
asset = build_salesforce_asset(obj)
defs = Definitions(
    assets=[asset],
    jobs=[define_asset_job("stage", selection=[asset.key], partitions_def=daily_partitions(obj))],
    resources={"salesforce": SalesforceResource.from_env(), "staging": StagingResource(path=db)},
)
tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
with DagsterInstance.get() as instance:
    if first == last:
        result = defs.resolve_job_def("stage").execute_in_process(instance=instance, partition_key=first)
    else:
        result = defs.resolve_job_def("stage").execute_in_process(instance=instance, tags=tags)
assert result.success
held = [e.materialization.metadata["staging_lock_s"].value
        for e in result.get_asset_materialization_events()]
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "days": len(held), "max_lock_s": max(held)}))
"""


def day_keys(days: int) -> list[str]:
    return [(END - timedelta(days=days - n)).date().isoformat() for n in range(days)]


def run_process(first: str, last: str, start: str, per_run: int, workdir: Path, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, first, last, start, str(per_run), str(workdir / "staging.duckdb")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"run {first}..{last} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


PG_STORAGE = """storage:
  postgres:
    postgres_db:
      {hostname: 127.0.0.1, port: 5432, username: postgres, password: "", db_name: %s,
       scheme: postgresql+psycopg2}
telemetry:
  enabled: false
"""


@contextmanager
def instance_home(workdir: Path, storage: str) -> Iterator[Path]:
    """A fresh DAGSTER_HOME: SQLite files in it (the default), or a new PostgreSQL database on this
    machine's server (127.0.0.1:5432, trust auth), dropped afterwards."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    if storage == "sqlite":
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        yield home
        return
    import psycopg2

    name = f"bench_ranges_{os.getpid()}_{workdir.name.replace('-', '_')}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        (home / "dagster.yaml").write_text(PG_STORAGE % name)
        yield home
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@dataclass
class Side:
    """One side of the comparison: its runs (chunks of days), instance and staging file, figures."""

    name: str
    chunks: list[list[str]]
    per_run: int
    workdir: Path
    env: dict
    runs: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    api_calls: int = 0

    def figures(self) -> dict:
        return {
            "side": self.name,
            "days": sum(len(chunk) for chunk in self.chunks),
            "runs": len(self.runs),
            "seconds": self.seconds,
            "api_calls": self.api_calls,
            "peak_rss_mb": max(run["rss_mb"] for run in self.runs),
            "max_lock_s": max(run["max_lock_s"] for run in self.runs),
        }


def run_sides(sides: list[Side], start: str, sandbox) -> None:
    """Run the sides' runs interleaved in proportion to their counts (13 ranges among 60 days), so
    that whatever the machine does meanwhile falls on both sides alike; each run is timed and its
    Salesforce calls counted on its own side."""
    order = sorted(
        ((n + 0.5) / len(side.chunks), i, n) for i, side in enumerate(sides) for n in range(len(side.chunks))
    )
    for _, i, n in order:
        side, chunk = sides[i], sides[i].chunks[n]
        used = sandbox.stats()["api_usage"]["used"]
        began = time.perf_counter()
        side.runs.append(run_process(chunk[0], chunk[-1], start, side.per_run, side.workdir, side.env))
        side.seconds += time.perf_counter() - began
        side.api_calls += sandbox.stats()["api_usage"]["used"] - used


def compare(
    plans: list[tuple[str, list[list[str]], int]],
    start: str,
    sandbox,
    root: Path,
    base_env: dict,
    storage: str,
) -> list[dict]:
    """Each plan (name, chunks of days, max_partitions_per_run) against a fresh instance and staging
    file of its own, run interleaved; the figures of each."""
    with ExitStack() as stack:
        sides = []
        for name, chunks, per_run in plans:
            home = stack.enter_context(instance_home(root / name, storage))
            sides.append(Side(name, chunks, per_run, root / name, {**base_env, "DAGSTER_HOME": str(home)}))
        run_sides(sides, start, sandbox)
    return [side.figures() for side in sides]


def spread(keys: list[str], count: int) -> list[str]:
    """`count` days spread evenly over `keys`: a sample whose extrapolation is fair to both ends of
    the year (only days within the last 30 get a getDeleted call; the latest 60 alone overstate it)."""
    count = min(count, len(keys))
    return [keys[(n * len(keys)) // count] for n in range(count)]


def chunked(keys: list[str], size: int) -> list[list[str]]:
    return [keys[n : n + size] for n in range(0, len(keys), size)]


def report(ranges: dict, per_day: dict, days: int) -> None:
    per_day_runs = days  # one run per day
    scale = days / per_day["days"]
    per_day_seconds = per_day["seconds"] * scale
    per_day_calls = per_day["api_calls"] * scale
    for figures in (ranges, per_day):
        print(
            f"{figures['side']:>8}: {figures['days']:4d} days in {figures['runs']:4d} runs, "
            f"{figures['seconds']:8.1f} s ({figures['seconds'] / figures['runs']:5.2f} s/run), "
            f"{figures['api_calls']:5d} Salesforce API calls, peak RSS {figures['peak_rss_mb']:5.0f} MB, "
            f"longest hold of the staging file {figures['max_lock_s']:.3f} s"
        )
    note = "" if scale == 1 else f" (extrapolated from {per_day['days']} days x {scale:.2f})"
    print(
        f"{days} days, one run per day{note}: {per_day_runs} runs, {per_day_seconds:.0f} s, "
        f"{per_day_calls:.0f} API calls"
    )
    print(
        f"{days} days in ranges: {ranges['runs']} runs, {ranges['seconds']:.0f} s, {ranges['api_calls']} API "
        f"calls -> {per_day_seconds / ranges['seconds']:.1f}x less wall time, "
        f"{per_day_calls / ranges['api_calls']:.1f}x fewer API calls, "
        f"{per_day_runs / ranges['runs']:.1f}x fewer runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--per-day-days", type=int, default=None, help="days run one per run (default --days)"
    )
    parser.add_argument("--records-per-day", type=int, default=100)
    parser.add_argument(
        "--storage",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="Dagster instance storage: SQLite files (dagster.yaml's default) or PostgreSQL "
        "(dagster.postgres.yaml, production), on this machine's server",
    )
    parser.add_argument("--per-run", type=int, default=30, help="max_partitions_per_run")
    parser.add_argument(
        "--rss-records", type=int, default=0, help="also one 30-day range of this many records"
    )
    args = parser.parse_args()

    from notion_sync.sandbox.salesforce_server import SalesforceSandbox

    keys = day_keys(args.days)
    per_day_keys = spread(keys, args.per_day_days or args.days)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ranges-") as tmp:
        root = Path(tmp)
        with SalesforceSandbox(
            records=args.records_per_day * args.days, seed=SEED, days=args.days, workdir=root / "sf"
        ) as sandbox:
            base_env = {
                k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
            }
            base_env.update(sandbox.env())
            print(
                f"sandbox: {args.records_per_day * args.days:,} Accounts on {args.days} days; "
                f"ranges of {args.per_run}; Dagster storage {args.storage}; load average {load[0]:.1f}",
                flush=True,
            )
            ranges, per_day = compare(
                [
                    ("ranges", chunked(keys, args.per_run), args.per_run),
                    ("per-day", chunked(per_day_keys, 1), 1),
                ],
                keys[0],
                sandbox,
                root,
                base_env,
                args.storage,
            )
            report(ranges, per_day, args.days)
        if args.rss_records:
            with SalesforceSandbox(
                records=args.rss_records, seed=SEED, days=30, workdir=root / "sf-rss"
            ) as sandbox:
                base_env.update(sandbox.env())
                month = day_keys(30)
                [big] = compare([("rss", [month], 30)], month[0], sandbox, root, base_env, args.storage)
                print(
                    f"one 30-day range of {args.rss_records:,} records: {big['seconds']:.1f} s, "
                    f"{big['api_calls']} API calls, peak RSS {big['peak_rss_mb']:.0f} MB, "
                    f"longest hold of the staging file {big['max_lock_s']:.3f} s"
                )
    end = os.getloadavg()
    print(f"load average before {load[0]:.1f}, after {end[0]:.1f}; {date.today().isoformat()}")


if __name__ == "__main__":
    main()
