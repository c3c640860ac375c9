"""`notion-sync status` on data written by a real sync against both sandboxes, checked against the
sandbox Notion server's own counters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from dagster import instance_for_test, materialize
from test_notion_sync import CONFIG as SYNC_CONFIG
from test_notion_sync import TYPES, account, make_env

from notion_sync import staging
from notion_sync.cli import main
from notion_sync.config import load_config
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.sync import sync_days
from notion_sync.resources import build_resources
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.status import load_report
from notion_sync.status_html import count_chart

CONFIG = load_config(Path(__file__).resolve().parents[1] / "notion_sync.yaml")

PARTITION = "2026-11-20"
OTHER_PARTITION = "2026-11-18"
OBJECTS = ("Account", "Contact")
INJECTED_429S = 3
INJECTED_500S = 2
INJECTED_400S = 1


class Synced(NamedTuple):
    path: Path
    requests: dict[str, int]  # the run metadata's `requests` of each notion/<Object>


def _assets(names: tuple[str, ...]) -> list:
    objects = [CONFIG.objects[name] for name in names]
    return [build_salesforce_asset(obj) for obj in objects] + [build_notion_asset(obj, []) for obj in objects]


@pytest.fixture
def synced(
    notion_sandbox: NotionSandbox,
    salesforce_sandbox: SalesforceSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Synced:
    """One partition of Account and Contact synced by the real assets and resources (from the env)."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)  # would override the sandbox's CA file
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    duckdb_file = tmp_path / "staging.duckdb"
    env = {
        **salesforce_sandbox.env(),
        **notion_sandbox.env(),
        "NOTION_SYNC_DUCKDB": str(duckdb_file),
        "NOTION_RATE_LIMIT_PATH": str(tmp_path / "limiter.sqlite"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Faults the report must count, on the first Account page writes in this order: 429s (retried
    # after Retry-After), 5xx (retried), then a 400 (a permanent failure of one record).
    for status, count in ((429, INJECTED_429S), (500, INJECTED_500S), (400, INJECTED_400S)):
        notion_sandbox.inject(status=status, count=count, path_prefix="/v1/pages", method="POST")
    with instance_for_test() as instance:
        result = materialize(
            _assets(OBJECTS), partition_key=PARTITION, resources=build_resources(), instance=instance
        )
    assert result.success
    requests = {
        event.asset_key.path[-1]: event.materialization.metadata["requests"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[0] == "notion"
    }
    return Synced(duckdb_file, requests)


def test_report_matches_the_sandbox(synced: Synced, notion_sandbox: NotionSandbox) -> None:
    stats = notion_sandbox.stats()
    report = load_report(synced.path, limit_rps=3 * notion_sandbox.speed)
    with staging.connect(synced.path, read_only=True) as conn:
        staged = {
            name: conn.execute(
                f"SELECT count(*) FROM stg_{name.lower()} WHERE NOT IsDeleted AND _partition = ?::DATE",
                [PARTITION],
            ).fetchone()[0]
            for name in OBJECTS
        }
        failed = dict(
            conn.execute(
                "SELECT object, count(*) FROM sync_log WHERE status = 'permanent_error' GROUP BY object"
            ).fetchall()
        )
        [pending] = conn.execute("SELECT count(*) FROM pending_relations WHERE object = 'Contact'").fetchone()

    rows = {p.object: p for p in report.partitions}
    assert set(rows) == set(OBJECTS) and {p.partition for p in report.partitions} == {PARTITION}
    assert failed["Account"] == INJECTED_400S
    for name in OBJECTS:
        assert rows[name].synced + rows[name].failed == staged[name]
        assert rows[name].failed == failed.get(name, 0)
    assert {(p.status, p.runs) for p in report.partitions} == {("succeeded", 1)}
    # Contacts whose Account is staged under another day (or failed) wait for its page.
    assert (rows["Account"].pending, rows["Contact"].pending) == (0, pending) and pending > 0

    total = report.usage[0]
    assert total.scope == "all" and total.requests == stats["requests_total"]
    assert total.rate_limited == stats["rate_limited"] == INJECTED_429S
    # The run metadata's requests are the partition's; the database set-up calls of the runs are apart.
    assert {p.object: p.requests for p in report.partitions} == synced.requests
    assert sum(p.requests + p.setup_requests for p in report.partitions) == total.requests
    assert all(p.setup_requests > 0 for p in report.partitions)  # each created its database
    assert sum(p.rate_limited for p in report.partitions) == INJECTED_429S
    assert report.http_statuses == {int(k): v for k, v in stats["requests_by_status"].items()}
    assert report.http_statuses[500] == INJECTED_500S
    assert {u.scope for u in report.usage[1:]} == set(OBJECTS)
    assert sum(u.requests for u in report.usage[1:]) == total.requests
    assert total.p95_ms >= total.p50_ms > 0 and total.per_minute > 0 and total.peak_per_minute > 0
    for usage in report.usage:  # an average over the minutes with calls is never above the busiest
        assert usage.per_minute <= usage.peak_per_minute, usage
    assert sum(b.requests for b in report.timeline) == total.requests

    assert [(f.object, f.status, f.count) for f in report.failures if f.object == "Account"] == [
        ("Account", "permanent_error", INJECTED_400S)
    ]


def test_cli_text_and_html(synced: Synced, notion_sandbox: NotionSandbox, tmp_path: Path, capsys) -> None:
    html_file = tmp_path / "status.html"
    assert main(["status", "--html", str(html_file)]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^Account\s+{PARTITION}\s+\d+\s+{INJECTED_400S}\s+0\s+0\s+succeeded", text, re.M)
    assert re.search(rf"^all\s+{notion_sandbox.stats()['requests_total']}\s", text, re.MULTILINE)

    html = html_file.read_text()
    assert html.count("<svg") == 4 and "<script" not in html
    # nothing fetched: opens offline (references inside the file, "#id", are fine)
    assert not re.search(r"""(src|href)="(?!#)|url\((?!#)|@import|<!DOCTYPE svg""", html)
    assert "Request rate against the limit" in html and "429 rate_limited answers" in html
    for series in ("p50", "p95"):  # one unbroken line per latency series, whatever the idle buckets
        [path] = re.findall(rf'<g id="series-{series}">\s*<path d="([^"]*)"', html)
        assert path.count("M") == 1 and path.count("L") >= 1
    assert "Failed partitions" in html and "Skipped records" in html

    assert main(["status", "--object", "Contact", "--since", "1"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^Contact\s+{PARTITION}", text, re.MULTILINE) and not re.search("^Account", text, re.M)


def test_missing_file_and_empty_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    missing = tmp_path / "nothing.duckdb"
    monkeypatch.setenv("NOTION_SYNC_DUCKDB", str(missing))
    assert main(["status"]) == 1
    assert "no staging database at" in capsys.readouterr().err and not missing.exists()

    with staging.connect(missing) as conn:
        conn.execute("CREATE TABLE stg_account (Id VARCHAR)")
    assert main(["status"]) == 0
    assert "holds no Notion sync yet" in capsys.readouterr().err


def _materialize(names: tuple[str, ...], partition: str):
    with instance_for_test() as instance:
        return materialize(
            _assets(names),
            partition_key=partition,
            resources=build_resources(),
            instance=instance,
            raise_on_error=False,
        )


def _day_with_deleted(sandbox: SalesforceSandbox, name: str, count: int) -> str:
    """The latest day holding a record of ``name`` deleted in Salesforce (never synced: skipped)."""
    records = (sandbox.data.generate(name, index) for index in range(count))
    return max(record["SystemModstamp"][:10] for record in records if record["IsDeleted"])


def test_failed_partition_and_skipped_records_show_why(
    synced: Synced, salesforce_sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A partition whose run failed before syncing a record (a wrong token: 401) is listed as failed
    with the error; records skipped (deleted in Salesforce before their first sync) say why."""
    deleted_day = _day_with_deleted(salesforce_sandbox, "Contact", salesforce_sandbox.data.counts["Contact"])
    assert _materialize(("Contact",), deleted_day).success
    monkeypatch.setenv("NOTION_TOKEN", "ntn_wrong_token")
    assert not _materialize(("Account",), OTHER_PARTITION).success

    report = load_report(synced.path)
    [failed] = [p for p in report.partitions if p.partition == OTHER_PARTITION]
    assert (failed.object, failed.status, failed.synced) == ("Account", "failed", 0)
    assert "401" in failed.error and "unauthorized" in failed.error
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^Account\s+{OTHER_PARTITION}\s+0\s+0\s+0\s+0\s+failed", text, re.M)
    failed_section = text.split("Failed partitions")[1]
    assert re.search(rf"^Account\s+{OTHER_PARTITION}\s+.*401.*unauthorized", failed_section, re.M)

    with staging.connect(synced.path, read_only=True) as conn:
        skipped = conn.execute(
            "SELECT count(*) FROM sync_log WHERE status = 'skipped' AND object = ? AND \"partition\" = ?",
            ["Contact", deleted_day],
        ).fetchone()[0]
    [contact] = [p for p in report.partitions if (p.object, p.partition) == ("Contact", deleted_day)]
    assert contact.skipped == skipped > 0
    assert [(s.object, s.error_code, s.count) for s in report.skips] == [
        ("Contact", "deleted_before_sync", skipped)
    ]
    assert "deleted in Salesforce" in report.skips[0].example
    assert "deleted_before_sync" in text.split("Skipped records")[1]


def _tick_labels(svg: str, axis: str) -> list[str]:
    """The tick labels matplotlib wrote as text (svg.fonttype none) for ``axis`` ('x' or 'y')."""
    return re.findall(rf'<g id="{axis}tick_\d+">.*?<text[^>]*>([^<]*)</text>', svg, re.S)


def test_zero_counts_chart_has_integer_axis_from_zero() -> None:
    """With no 429 at all the axis reads 0 to 1 in integers (the hand-drawn chart read 1.1e-09 to 0)."""
    start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    times = [start + timedelta(seconds=10 * i) for i in range(12)]
    svg = count_chart("429 rate_limited answers", times, {"429s": [0] * len(times)}, "429s")
    assert _tick_labels(svg, "y") == ["0", "1"]
    svg = count_chart("429 rate_limited answers", times, {"429s": [0, 3, 0, 7] + [0] * 8}, "429s")
    labels = _tick_labels(svg, "y")
    assert labels[0] == "0" and all(label.isdigit() for label in labels) and int(labels[-1]) >= 7


def test_a_run_of_several_days_counts_each_days_requests_once(notion_sandbox: NotionSandbox, tmp_path: Path):
    """A backfill range syncs several days in one run: each day counts the requests of its own batch
    (as its report does), the run's database set-up counts once, on its first day."""
    env = make_env(notion_sandbox, tmp_path)
    days = ["2026-11-18", "2026-11-19", "2026-11-20"]
    for n, day in enumerate(days):
        env.stage("Account", [account(10 * n + i) for i in range(1, 4)], partition=day)
    reports = list(
        sync_days(
            env.resource, env.connect, SYNC_CONFIG.objects["Account"], TYPES["Account"], days, "range-run"
        )
    )
    report = load_report(env.db)
    rows = {p.partition: p for p in report.partitions}
    assert {day: rows[day].requests for day in days} == {r.partition: r.requests for r in reports}
    assert [rows[day].setup_requests > 0 for day in days] == [True, False, False]
    assert sum(p.requests + p.setup_requests for p in report.partitions) == report.usage[0].requests
