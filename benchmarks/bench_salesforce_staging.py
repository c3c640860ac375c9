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
(``--memory-cap-gb``) so at 1,000,000 it fails with MemoryError rather than wake the OOM killer.
It prints wall-clock records/second, peak RSS, client CPU and, for the platform, how long the
staging file's write lock was held. The sandbox generates every record on the fly in one Python
process, so at ~10,000 records/s it bounds the wall clock of both paths; client CPU shows the
cost of each path itself.

Figures on 2 cores, quiet machine (2026-11-25):

    100,000   platform  9.6 s  10,399 rec/s  277 MB   CPU  4.7 s  lock 1.9 s
              baseline 17.3 s   5,773 rec/s 1385 MB   CPU  8.4 s
  1,000,000   platform 71.5 s  13,981 rec/s  295 MB   CPU 27.4 s  lock 8.4 s
              baseline 164.7 s  6,072 rec/s 10818 MB  CPU 77.9 s
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
from datetime import UTC, date, datetime
from pathlib import Path

PATHS = ("platform", "baseline")
DAY = "2026-11-20"  # the sandbox's last day before its default end, 2026-11-21T00:00:00Z


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
    return {"rows": rows, "seconds": seconds, "method": metadata["method"].value,
            "lock_s": metadata["staging_lock_s"].value}


def run_baseline(workdir: Path) -> dict:
    import duckdb
    import pandas
    from simple_salesforce import Salesforce

    from notion_sync.partitions import partition_window
    from notion_sync.salesforce.soql import window_filter

    env = _salesforce_env()
    os.environ["REQUESTS_CA_BUNDLE"] = env["SALESFORCE_CA_BUNDLE"]  # what a plain requests user sets
    began = time.perf_counter()
    sf = Salesforce(instance_url=env["SALESFORCE_INSTANCE_URL"], session_id=env["SALESFORCE_SESSION_ID"])
    fields = [f["name"] for f in sf.Account.describe()["fields"] if f["type"] not in ("address", "location")]
    query = f"SELECT {', '.join(fields)} FROM Account WHERE {window_filter(*partition_window(DAY))}"
    records = sf.query_all(query, include_deleted=True)["records"]
    frame = pandas.DataFrame(records).drop(columns="attributes")
    with duckdb.connect(str(workdir / "baseline.duckdb")) as conn:
        conn.register("frame", frame)
        conn.execute("CREATE TABLE stg_account AS SELECT * FROM frame")
        rows = conn.execute("SELECT count(*) FROM stg_account").fetchone()[0]
    return {"rows": rows, "seconds": time.perf_counter() - began, "method": "query_all → pandas"}


def _child(path: str, workdir: Path, memory_cap_gb: float) -> None:
    if path == "baseline":  # it grows with the volume: fail with MemoryError rather than wake the OOM killer
        cap = int(memory_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    figures = (run_platform if path == "platform" else run_baseline)(workdir)
    print(json.dumps({**figures, **_usage()}))


def _start_sandbox(records: int, workdir: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """The sandbox server in its own process; it prints its environment as one JSON line."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\nfrom notion_sync.sandbox.salesforce_server import SalesforceSandbox\n"
        f"sb = SalesforceSandbox(records={records}, seed=7, workdir=Path({str(workdir)!r}), days=1)\n"
        "sb.start()\n"
        "print(json.dumps(sb.env()), flush=True)\n"
        "sys.stdin.read()\n"
        "sb.stop()\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    return server, json.loads(server.stdout.readline())


def _measure(path: str, env: dict[str, str], workdir: Path, memory_cap_gb: float) -> dict | None:
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, "--workdir", str(workdir), "--memory-cap-gb",
         str(memory_cap_gb)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, text=True,
    )
    if out.returncode:
        print(f"{path}: failed (exit {out.returncode}); see its traceback above", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="Accounts in the one partition")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="which paths to run")
    parser.add_argument("--memory-cap-gb", type=float, default=8.0, help="address-space cap of the baseline")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.workdir, args.memory_cap_gb)
        return
    with tempfile.TemporaryDirectory(prefix="bench-sf-") as tmp:
        workdir = Path(tmp)
        server, env = _start_sandbox(args.records, workdir)
        try:
            print(f"{datetime.now(UTC):%H:%M:%S} sandbox: {args.records:,} Accounts on {DAY}", flush=True)
            measured = {path: _measure(path, env, workdir, args.memory_cap_gb) for path in args.paths}
            results = {path: figures for path, figures in measured.items() if figures}
        finally:
            server.stdin.close()
            server.wait(timeout=60)
    for path, r in results.items():
        lock = f"  staging lock {r['lock_s']:.1f} s" if "lock_s" in r else ""
        print(f"{path:9s} {r['method']:20s} rows {r['rows']:>9,}  {r['seconds']:7.1f} s  "
              f"{r['rows'] / r['seconds']:>9,.0f} records/s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
              f"client CPU {r['cpu_s']:6.1f} s ({r['rows'] / r['cpu_s']:,.0f} records/CPU-s){lock}")
    if len(results) == 2:
        base, ours = results["baseline"], results["platform"]
        print(f"speed-up: wall {base['seconds'] / ours['seconds']:.1f}x, "
              f"client CPU {base['cpu_s'] / ours['cpu_s']:.1f}x")


if __name__ == "__main__":
    main()
