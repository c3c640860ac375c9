"""Benchmark: reading and planning one big staged partition for Notion, against the naive read.

    .venv/bin/python benchmarks/bench_notion_plan.py --records 100000

A partition of ``--records`` sandbox Accounts (one UTC day) is staged by the platform's own
extraction, then each path runs in its own child process (its own peak RSS):

- platform: `survey_partition` + `read_partition` (chunks of 5,000 rows by Id, only Id, IsDeleted
  and the synced columns, a short DuckDB connection each) + `plan` per chunk, as `sync_partition`
  does before any Notion request (sync_state empty: every record is a create);
- baseline: ``SELECT *`` of the partition fetched into one list of dicts, then `plan` over all of it
  (what the sync did before 2026-11-25).

No Notion request is sent: at ~3 requests/s the requests take hours; this measures what the
process holds in memory and the CPU it spends deciding what to send.

Figures on 2 cores (2026-11-25), the example config's 14 Account fields (97,989 live records of
100,000; the rest are deleted in Salesforce and need no write while they have no page):

    100,000  platform   8.8 s   251 MB peak RSS
             baseline  10.5 s  1412 MB peak RSS
    300,000  platform  27.2 s   256 MB peak RSS   (baseline not run: ~4 GB)

Both paths use today's `plan`; the plan of before 2026-11-25 (two payloads per record, UTF-16 text
split character by character) took 16.1 s for the same 100,000 records.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from functools import partial
from pathlib import Path

DAY = "2026-11-20"


def stage(records: int, db: Path) -> None:
    from notion_sync.config import ObjectConfig
    from notion_sync.salesforce import SalesforceResource
    from notion_sync.salesforce.extract import stage_partition
    from notion_sync.sandbox.salesforce_server import SalesforceSandbox
    from notion_sync.staging import StagingResource

    obj = ObjectConfig(name="Account", title_field="Name", start_date=date(2026, 10, 1))
    with SalesforceSandbox(records=records, seed=7, workdir=db.parent / "sf", days=1) as sandbox:
        client = SalesforceResource(
            instance_url=sandbox.url, session_id=sandbox.session_id, ca_bundle=str(sandbox.ca_file)
        ).get_client()
        stage_partition(client, StagingResource(path=str(db)), obj, DAY, log=logging.getLogger("bench"))


def _specs():
    from notion_sync.config import load_config
    from notion_sync.notion.properties import property_specs
    from notion_sync.sandbox.sf_data import SalesforceData, describe_sobject

    obj = load_config(Path(__file__).resolve().parents[1] / "notion_sync.yaml").objects["Account"]
    fields = describe_sobject(SalesforceData(10, 7).sobjects["Account"], "62.0")["fields"]
    return obj, property_specs(obj, {f["name"]: f["type"] for f in fields})


def run(path: str, db: Path) -> dict:
    from notion_sync import staging
    from notion_sync.notion import state, sync

    obj, specs = _specs()
    connect = partial(staging.connect, db)
    with connect() as conn:
        state.ensure_tables(conn)
    began = time.perf_counter()
    planned = 0
    if path == "platform":
        survey = sync.survey_partition(connect, obj, specs, DAY)
        for chunk in sync.read_partition(connect, obj, specs, DAY, survey.columns, sync.READ_CHUNK):
            planned += len(sync.plan(specs, chunk, verify_new=False)[0])
    else:
        with connect() as conn:
            cursor = conn.execute(
                f"SELECT * FROM {obj.staging_table} WHERE _partition = ?::DATE ORDER BY Id", [DAY]
            )
            columns = [d[0] for d in cursor.description]
            rows = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
        planned = len(sync.plan(specs, sync.PartitionData(rows, {}, {}), verify_new=False)[0])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": time.perf_counter() - began, "planned": planned, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--paths", nargs="+", choices=["platform", "baseline"], default=["platform", "baseline"]
    )
    parser.add_argument("--child", choices=["platform", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.db)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        db = Path(tmp) / "staging.duckdb"
        began = time.perf_counter()
        stage(args.records, db)
        print(f"staged {args.records:,} Accounts in {time.perf_counter() - began:.1f} s (not timed below)")
        for path in args.paths:
            out = subprocess.run(
                [sys.executable, __file__, "--child", path, "--db", str(db)],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
                env=os.environ,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{path:9s} {r['planned']:>9,} writes planned  {r['seconds']:6.1f} s  "
                f"peak RSS {r['peak_rss_mb']:6.0f} MB"
            )


if __name__ == "__main__":
    main()
