"""Benchmark: Salesforce → DuckDB staging, the platform's path against the naive baseline.

    .venv/bin/python benchmarks/bench_salesforce_staging.py --records 100000
    .venv/bin/python benchmarks/bench_salesforce_staging.py --records 1000000 [--paths platform]

What it measures, in one run:

- the sandbox Salesforce server (HTTPS, its own subprocess) serves ``--records`` Accounts (65 queryable
  fields each, 40 custom text fields included), all with a SystemModstamp on one UTC day (``days=1``), so
  the whole volume is ONE daily partition: the worst case for one run's memory. Accounts only; the
  sandbox also creates Contacts and Opportunities, which are not read.
- platform: `dagster.materialize` of `salesforce/Account` for that partition (describe, COUNT(), Bulk
  API 2.0 queryAll, CSV pages spooled into DuckDB, one-transaction swap into `stg_account`);
- baseline: ``sf.query_all(SELECT <all fields> ...)`` → ``pandas.DataFrame`` → ``duckdb`` table.

Each path runs in its own child process, which reports its own peak RSS (``ru_maxrss``) and CPU
time, so neither pollutes the other's figures; the baseline child's address space is capped
(``--memory-cap-gb``, default 16) so that, past the cap, it fails with MemoryError rather than wake
the OOM killer.
It prints wall-clock records/second, peak RSS, client CPU and, for the platform, how long the
staging file's write lock was held, plus the machine's load average before and after.

The sandbox generates every record in Python (~50 us) and renders it (~25 us as CSV, ~45 us as
JSON), on the same 2 cores as the clients: uncached it serves only ~10,000-15,000 records/s and so
measures itself. Real Salesforce does not burn our CPU. So the sandbox runs with its render cache
(``SalesforceSandbox(render_cache=...)``, default ``~/.cache/notion-sync/sf-render``): before
timing, the exact queries of both paths (the platform's Bulk CSV, the baseline's REST JSON) are
rendered into it, one process per path (~75 s per path at 1,000,000, once; later runs reuse it),
and in the timed runs both paths are served from it at the cost of a file read. Each path's line
says how many records came from the cache during its run (all of them, or the run is not
comparable). ``--no-render-cache`` measures the old way.

Figures on 2 cores (2026-11-25, load average 0.5-0.8), sandbox served from a warm render cache:

    100,000   platform  2.2 s  45,071 rec/s   258 MB   CPU  2.8 s  file  31 MB  lock 0.6 s
              baseline  7.7 s  13,053 rec/s  1401 MB   CPU  8.0 s  file  25 MB  → 3.5x wall, 2.9x CPU
  1,000,000   platform 17.1 s  58,362 rec/s   275 MB   CPU 17.8 s  file 317 MB  lock 6.9 s
              baseline 101.7 s  9,836 rec/s 11112 MB   CPU 101.2 s file 241 MB  → 5.9x wall, 5.7x CPU

Five runs at 100,000 gave 3.3x-3.5x (4.9x once, against a slow baseline); at 1,000,000 the
baseline needs 11 GB (under an 8 GB cap it fails with MemoryError). Earlier the same day, before
the staging and spool files used 16,384-row row groups, the platform took 3.8 s (2.2x-2.8x) and
25.8 s (4.1x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notion_sync.sandbox.salesforce_server import SalesforceSandbox

PATHS = ("platform", "baseline")
DAY = "2026-11-20"  # the sandbox's last day before its default end, 2026-11-21T00:00:00Z
SEED = 7
API_VERSION = "59.0"  # simple-salesforce's default, which both paths use: REST JSON names it in URLs
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "notion-sync" / "sf-render"


def platform_query(describe_fields: list[dict]) -> str:
    """The Bulk 2.0 query the platform's extraction sends (the same calls as `_spool_bulk`)."""
    from notion_sync.partitions import partition_window
    from notion_sync.salesforce import soql
    from notion_sync.salesforce.extract import staging_columns

    names = [c.name for c in staging_columns(describe_fields)]
    return soql.select_query("Account", names, *partition_window(DAY), ordered=False)


def baseline_query(describe_fields: list[dict]) -> str:
    """What a plain simple-salesforce user writes: every non-compound field of the day."""
    from notion_sync.partitions import partition_window
    from notion_sync.salesforce.soql import window_filter

    fields = [f["name"] for f in describe_fields if f["type"] not in ("address", "location")]
    return f"SELECT {', '.join(fields)} FROM Account WHERE {window_filter(*partition_window(DAY))}"


def _sandbox(records: int, workdir: Path, cache: Path | None) -> SalesforceSandbox:
    from notion_sync.sandbox.salesforce_server import SalesforceSandbox

    return SalesforceSandbox(records=records, seed=SEED, workdir=workdir, days=1, render_cache=cache)


def warm(path: str, records: int, workdir: str, cache: str) -> tuple[str, int, float]:
    """Render what ``path`` will read into the sandbox's render cache (no HTTP); run before timing."""
    from notion_sync.sandbox.sf_data import describe_sobject

    began = time.perf_counter()
    sandbox = _sandbox(records, Path(workdir), Path(cache))
    fields = describe_sobject(sandbox.data.sobjects["Account"], API_VERSION)["fields"]
    if path == "platform":
        blocks = sandbox.warm(platform_query(fields), bulk=True)
    else:
        blocks = sandbox.warm(baseline_query(fields), bulk=False, version=API_VERSION)
    return path, blocks, time.perf_counter() - began


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}  # KiB on Linux


def _salesforce_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("SALESFORCE_")}


def run_platform(workdir: Path) -> dict:
    from dagster import materialize

    from notion_sync.config import ObjectConfig
    from notion_sync.salesforce import SalesforceResource, build_salesforce_asset
    from notion_sync.staging import StagingResource, connect

    obj = ObjectConfig(name="Account", title_field="Name", start_date=date(2026, 10, 1))
    db = workdir / "platform.duckdb"
    began = time.perf_counter()
    result = materialize(
        [build_salesforce_asset(obj)],
        partition_key=DAY,
        resources={"salesforce": SalesforceResource.from_env(), "staging": StagingResource(path=str(db))},
    )
    seconds = time.perf_counter() - began
    with connect(db, read_only=True) as conn:
        rows = conn.execute("SELECT count(*) FROM stg_account").fetchone()[0]
    metadata = result.asset_materializations_for_node(result.all_node_events[0].node_name)[0].metadata
    return {
        "rows": rows,
        "seconds": seconds,
        "method": metadata["method"].value,
        "lock_s": metadata["staging_lock_s"].value,
        "file_mb": db.stat().st_size / 2**20,
    }


def run_baseline(workdir: Path) -> dict:
    import duckdb
    import pandas
    from simple_salesforce import Salesforce

    env = _salesforce_env()
    os.environ["REQUESTS_CA_BUNDLE"] = env["SALESFORCE_CA_BUNDLE"]  # what a plain requests user sets
    began = time.perf_counter()
    sf = Salesforce(
        instance_url=env["SALESFORCE_INSTANCE_URL"],
        session_id=env["SALESFORCE_SESSION_ID"],
        version=API_VERSION,
    )
    query = baseline_query(sf.Account.describe()["fields"])
    records = sf.query_all(query, include_deleted=True)["records"]
    frame = pandas.DataFrame(records).drop(columns="attributes")
    db = workdir / "baseline.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.register("frame", frame)
        conn.execute("CREATE TABLE stg_account AS SELECT * FROM frame")
        rows = conn.execute("SELECT count(*) FROM stg_account").fetchone()[0]
    return {
        "rows": rows,
        "seconds": time.perf_counter() - began,
        "method": "query_all → pandas",
        "file_mb": db.stat().st_size / 2**20,
    }


def _child(path: str, workdir: Path, memory_cap_gb: float) -> None:
    if path == "baseline":  # it grows with the volume: fail with MemoryError rather than wake the OOM killer
        cap = int(memory_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    figures = (run_platform if path == "platform" else run_baseline)(workdir)
    print(json.dumps({**figures, **_usage()}))


def _start_sandbox(
    records: int, workdir: Path, cache: Path | None
) -> tuple[subprocess.Popen, dict[str, str]]:
    """The sandbox server in its own process; it prints its environment as one JSON line."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\nfrom bench_salesforce_staging import _sandbox\n"
        f"sb = _sandbox({records}, Path({str(workdir)!r}), {f'Path({str(cache)!r})' if cache else None})\n"
        "sb.start()\n"
        "print(json.dumps(sb.env()), flush=True)\n"
        "sys.stdin.read()\n"
        "sb.stop()\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    return server, json.loads(server.stdout.readline())


def _sandbox_stats(env: dict[str, str], method: str) -> dict:
    import requests

    url = f"{env['SALESFORCE_INSTANCE_URL']}/_sandbox/stats"
    return requests.request(method, url, verify=env["SALESFORCE_CA_BUNDLE"], timeout=30).json()


def _measure(path: str, env: dict[str, str], workdir: Path, memory_cap_gb: float) -> dict | None:
    _sandbox_stats(env, "DELETE")
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            path,
            "--workdir",
            str(workdir),
            "--memory-cap-gb",
            str(memory_cap_gb),
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    if out.returncode:
        print(f"{path}: failed (exit {out.returncode}); see its traceback above", flush=True)
        return None
    cache = _sandbox_stats(env, "GET")["render_cache"] or {}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "cache": cache}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="Accounts in the one partition")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="which paths to run")
    parser.add_argument("--memory-cap-gb", type=float, default=16.0, help="address-space cap of the baseline")
    parser.add_argument(
        "--render-cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="the sandbox's render cache (kept between runs; warmed before timing)",
    )
    parser.add_argument(
        "--no-render-cache",
        action="store_true",
        help="generate every record on the fly, in the timed runs (the sandbox bounds both)",
    )
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.workdir, args.memory_cap_gb)
        return
    cache = None if args.no_render_cache else args.render_cache
    with tempfile.TemporaryDirectory(prefix="bench-sf-") as tmp:
        workdir = Path(tmp)
        if cache is not None:  # one process per path: the two renderings fill in parallel
            with ProcessPoolExecutor(max_workers=len(args.paths)) as pool:
                jobs = [
                    pool.submit(warm, path, args.records, str(workdir / path), str(cache))
                    for path in args.paths
                ]
                for path, blocks, seconds in (job.result() for job in jobs):
                    print(
                        f"render cache for {path}: {blocks} blocks rendered in {seconds:.1f} s "
                        f"({cache}; not timed)",
                        flush=True,
                    )
        server, env = _start_sandbox(args.records, workdir, cache)
        try:
            print(
                f"{datetime.now(UTC):%H:%M:%S} sandbox: {args.records:,} Accounts on {DAY}; "
                f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                flush=True,
            )
            measured = {path: _measure(path, env, workdir, args.memory_cap_gb) for path in args.paths}
            results = {path: figures for path, figures in measured.items() if figures}
        finally:
            server.stdin.close()
            server.wait(timeout=60)
    for path, r in results.items():
        lock = f"  staging lock {r['lock_s']:.1f} s" if "lock_s" in r else ""
        print(
            f"{path:9s} {r['method']:20s} rows {r['rows']:>9,}  {r['seconds']:7.1f} s  "
            f"{r['rows'] / r['seconds']:>9,.0f} records/s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
            f"client CPU {r['cpu_s']:6.1f} s ({r['rows'] / r['cpu_s']:,.0f} records/CPU-s)  "
            f"file {r['file_mb']:,.0f} MB{lock}"
        )
        if r["cache"]:
            print(
                f"{'':9s} sandbox render cache during the run: {r['cache'].get('records_cached', 0):,} "
                f"records served from it, {r['cache'].get('records_rendered', 0):,} rendered afresh, "
                f"{r['cache'].get('blocks_written', 0)} blocks written"
            )
    if len(results) == 2:
        base, ours = results["baseline"], results["platform"]
        print(
            f"speed-up: wall {base['seconds'] / ours['seconds']:.1f}x, "
            f"client CPU {base['cpu_s'] / ours['cpu_s']:.1f}x, "
            f"peak RSS {base['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x less"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
