"""Salesforce API calls, seconds and peak RSS of reading one window, against the sandbox.

    PYTHONPATH=. python benchmarks/bench_composite_read.py RECORDS DAYS BULK_THRESHOLD

Reads the last DAYS days of a sandbox holding RECORDS Accounts spread over them (65 fields), one
extraction of the whole range, in a fresh process; prints calls (sandbox `api_usage`), seconds and
the process's peak RSS. Run it on another checkout's PYTHONPATH to compare code versions.
"""

import logging
import resource
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from notion_sync.config import ObjectConfig
from notion_sync.salesforce.extract import stage_days
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.staging import StagingResource
from notion_sync_tests.sandbox_resources import salesforce_resource


def main(records: int, days: int, threshold: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, SalesforceSandbox(records, workdir=Path(tmp), days=days) as sf:
        end = date(2026, 11, 21)
        keys = [(end - timedelta(days=days - i)).isoformat() for i in range(days)]
        obj = ObjectConfig(
            name="Account", title_field="Name", start_date=date(2026, 1, 1), bulk_threshold=threshold
        )
        client = salesforce_resource(sf).get_client()
        staging = StagingResource(path=f"{tmp}/s.duckdb")
        used = sf.stats()["api_usage"]["used"]
        began = time.monotonic()
        results = list(stage_days(client, staging, obj, keys, log=logging.getLogger("bench")))
        seconds = time.monotonic() - began
        calls = sf.stats()["api_usage"]["used"] - used
        rows = sum(r.rows for _, r in results)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"records={records} days={days} method={results[0][1].method} rows={rows} calls={calls} "
        f"(describe included) seconds={seconds:.2f} peak_rss={rss:.0f} MB"
    )


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:4]))
