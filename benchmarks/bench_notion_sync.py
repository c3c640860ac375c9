"""Benchmark: writing records to Notion at the rate limit, the platform's client against the naive SDK loop.

    .venv/bin/python benchmarks/bench_notion_sync.py                       # 10,000 records at speed 20
    .venv/bin/python benchmarks/bench_notion_sync.py --records 2000 --speed 50 --baseline-records 100

What it measures, in one run, against the sandbox Notion server at Notion's real limit (3 requests/s
per connection, burst 10) with 250 +- 100 ms latency per request:

- platform: `NotionClient` + the shared SQLite `RateLimiter` (adaptive: slow start at 50 %, grows to
  the configured 3 rps) + `run_pipelined` (``--workers`` in flight). It provisions a data source,
  then for every generated record: create the page (an `AmbiguousWriteError` is resolved by a lookup
  on ``Salesforce Id`` before creating again). Then an incremental pass changes ``--update-share`` of
  the records: unchanged content (same hash) costs 0 requests, a changed record one PATCH. The
  sandbox runs ``--speed`` times faster than real time and the client divides its waits by the same
  factor (``time_scale``), so every figure below is in *virtual* (Notion) seconds.
  This drives the client directly over generated records; it does not go through the Dagster
  assets, DuckDB staging or sync_state of `notion_sync.notion.sync`.
- baseline: the official ``notion-client`` SDK (3.1, its built-in retries: 2 per request, honouring
  Retry-After) creating pages in a plain loop. Its waits are real seconds and cannot be scaled, so
  it runs against a second sandbox at speed 1 on a smaller sample (``--baseline-records``); its rates
  and 429 share are comparable, its wall time is extrapolated linearly to ``--records``.

Printed: achieved requests/second as a share of the limit, the share of 429 answers, requests per
record, wall time against the ideal (records / rate), failures, duplicates, peak RSS. Targets for
the platform: >= 97 % of the limit, < 0.5 % 429s, wall <= 1.03 x ideal, 0 duplicates.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import psutil

from notion_sync.notion.client import NotionClient
from notion_sync.notion.errors import AmbiguousWriteError
from notion_sync.notion.pipeline import run_pipelined
from notion_sync.notion.rate_limit import SqliteRateLimiter, bucket_key
from notion_sync.sandbox.notion_server import NotionSandbox

RATE = 3.0  # Notion's documented average per connection
BURST = 10  # the sandbox's (Notion allows "some bursts")
SF_ID = "Salesforce Id"
SCHEMA = {
    "Name": {"title": {}},
    SF_ID: {"rich_text": {}},
    "Amount": {"number": {"format": "dollar"}},
    "Stage": {"select": {}},
}


def records(n: int, version: int = 0, changed_every: int = 0) -> list[dict]:
    """Deterministic Opportunity-like records; with `changed_every`, every k-th record changes."""
    out = []
    for i in range(n):
        bump = version if changed_every and i % changed_every == 0 else 0
        out.append(
            {
                "Id": f"006{i:012d}AAA",
                "Name": f"Opportunity {i}",
                "Amount": float(1000 + i + bump),
                "StageName": ("Prospecting", "Negotiation", "Closed Won")[i % 3],
            }
        )
    return out


def properties(rec: dict) -> dict:
    return {
        "Name": {"title": [{"text": {"content": rec["Name"]}}]},
        SF_ID: {"rich_text": [{"text": {"content": rec["Id"]}}]},
        "Amount": {"number": rec["Amount"]},
        "Stage": {"select": {"name": rec["StageName"]}},
    }


def content_hash(rec: dict) -> str:
    return hashlib.sha256(repr(sorted(rec.items())).encode()).hexdigest()


def _figures(label: str, stats: dict, n: int, wall_real: float, speed: float, failures: int) -> dict:
    total = stats["requests_total"]
    virtual_wall = wall_real * speed
    ideal = n / RATE
    row = {
        "label": label,
        "records": n,
        "requests": total,
        "share_of_limit": stats["achieved_rps_virtual"] / RATE,
        "share_429": stats["rate_limited"] / total if total else 0.0,
        "requests_per_record": total / n if n else 0.0,
        "wall_virtual_s": virtual_wall,
        "ideal_s": ideal,
        "wall_vs_ideal": virtual_wall / ideal if ideal else 0.0,
        "failures": failures,
        "duplicates": stats["duplicates_total"],
    }
    print(
        f"{label:<34} {n:>6} records  {total:>6} requests  "
        f"{row['share_of_limit']:7.1%} of limit  {row['share_429']:6.2%} 429s  "
        f"{row['requests_per_record']:.3f} req/record  wall {virtual_wall:8.0f}s vs ideal {ideal:6.0f}s "
        f"= {row['wall_vs_ideal']:.3f}x  failures {failures}  duplicates {row['duplicates']}",
        flush=True,
    )
    return row


def run_platform(args: argparse.Namespace, workdir: Path) -> list[dict]:
    with NotionSandbox(
        speed=args.speed, rps=RATE, burst=BURST, latency_ms=args.latency_ms, latency_jitter_ms=args.jitter_ms
    ) as sandbox:
        limiter = SqliteRateLimiter(
            workdir / "bucket.sqlite", bucket_key(sandbox.token), RATE, burst=2, time_scale=args.speed
        )
        client = NotionClient(
            sandbox.token,
            base_url=sandbox.url,
            limiter=limiter,
            time_scale=args.speed,
            pool_size=args.workers + 2,
        )
        ds_id = client.create_database(sandbox.parent_page_id, "Opportunities", SCHEMA)["data_sources"][0][
            "id"
        ]
        pages: dict[str, str] = {}
        hashes: dict[str, str] = {}

        def create(rec: dict) -> str:
            for _ in range(3):
                try:
                    return client.create_page(ds_id, properties(rec))["id"]
                except AmbiguousWriteError:  # look up before creating again: never a duplicate
                    found = client.find_pages_by_property(ds_id, SF_ID, rec["Id"])
                    if found:
                        return found[0]["id"]
            raise RuntimeError(f"{rec['Id']}: create stayed ambiguous")

        def upsert(rec: dict) -> str | None:
            digest = content_hash(rec)
            if hashes.get(rec["Id"]) == digest:
                return None  # unchanged: 0 requests
            page_id = pages.get(rec["Id"])
            if page_id is None:
                page_id = create(rec)
            else:
                client.update_page(page_id, properties=properties(rec))
            return page_id

        rows = []
        for label, batch in (
            ("platform: initial sync", records(args.records)),
            (
                f"platform: incremental ({args.update_share:.0%} changed)",
                records(args.records, version=1, changed_every=max(1, round(1 / args.update_share))),
            ),
        ):
            sandbox.reset_stats()
            failures = 0
            started = time.monotonic()
            for rec, result in run_pipelined(batch, upsert, workers=args.workers):
                if isinstance(result, BaseException):
                    failures += 1
                    print(f"  {rec['Id']}: {result}", file=sys.stderr)
                elif result is not None:
                    pages[rec["Id"]] = result
                    hashes[rec["Id"]] = content_hash(rec)
            wall = time.monotonic() - started
            stats = sandbox.stats()
            if label.startswith("platform: incremental"):
                # Only the changed records cost requests: judge the rate over them, the records over all.
                changed = stats["requests_total"]
                print(
                    f"  ({changed} changed records written, {args.records - changed} skipped by content hash)"
                )
            rows.append(_figures(label, stats, len(batch), wall, args.speed, failures))
        client.close()
        return rows


def run_baseline(args: argparse.Namespace) -> dict:
    import logging

    from notion_client import Client

    with NotionSandbox(
        speed=1.0, rps=RATE, burst=BURST, latency_ms=args.latency_ms, latency_jitter_ms=args.jitter_ms
    ) as sandbox:
        # Default retries (2, Retry-After honoured); its one-warning-per-429 log is counted below instead.
        sdk = Client(auth=sandbox.token, base_url=sandbox.url, log_level=logging.ERROR)
        db = sdk.databases.create(
            parent={"type": "page_id", "page_id": sandbox.parent_page_id},
            title=[{"type": "text", "text": {"content": "Opportunities"}}],
            initial_data_source={"properties": SCHEMA},
        )
        ds_id = db["data_sources"][0]["id"]
        sandbox.reset_stats()
        failures = 0
        started = time.monotonic()
        for rec in records(args.baseline_records):
            try:
                sdk.pages.create(
                    parent={"type": "data_source_id", "data_source_id": ds_id}, properties=properties(rec)
                )
            except Exception as exc:  # the naive loop logs and moves on
                failures += 1
                if failures <= 3:
                    print(f"  baseline {rec['Id']}: {type(exc).__name__}: {exc}", file=sys.stderr)
        wall = time.monotonic() - started
        stats = sandbox.stats()
        row = _figures("baseline: notion-client SDK loop", stats, args.baseline_records, wall, 1.0, failures)
        # The server's initial burst (10 free requests) is spent once: extrapolate the rest.
        scale = (args.records - BURST) / max(1, args.baseline_records - BURST)
        print(
            f"  extrapolated to {args.records} records (burst spent once): wall {wall * scale:,.0f}s "
            f"vs ideal {args.records / RATE:,.0f}s, ~{stats['rate_limited'] * scale:,.0f} 429 answers, "
            f"~{failures * scale:,.0f} records failed after the SDK's retries",
            flush=True,
        )
        return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--speed", type=float, default=20.0, help="sandbox speed factor = client time_scale")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=250.0, help="virtual ms per request")
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--update-share", type=float, default=0.05)
    parser.add_argument("--baseline-records", type=int, default=300, help="0 skips the baseline")
    args = parser.parse_args(argv)
    print(
        f"limit {RATE:g} rps (burst {BURST}), latency {args.latency_ms:g}+-{args.jitter_ms:g} ms, "
        f"platform at speed {args.speed:g} with {args.workers} workers",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_platform(args, Path(tmp))
    if args.baseline_records:
        run_baseline(args)
    peak = psutil.Process().memory_info().rss / 2**20
    print(f"rss at end {peak:.0f} MiB")
    initial = rows[0]
    ok = (
        initial["share_of_limit"] >= 0.97
        and initial["share_429"] < 0.005
        and initial["wall_vs_ideal"] <= 1.03
        and initial["duplicates"] == 0
    )
    verdict = "met" if ok else "MISSED"
    print(f"platform targets (>=97% of limit, <0.5% 429s, wall <=1.03x ideal, 0 duplicates): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
