"""`notion-sync status` on data written by a real sync against both sandboxes, checked against the
sandbox Notion server's own counters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dagster import instance_for_test, materialize

from notion_sync import staging
from notion_sync.cli import main
from notion_sync.config import load_config
from notion_sync.notion.assets import build_notion_asset
from notion_sync.resources import build_resources
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.status import load_report

PARTITION = "2026-11-20"
OBJECTS = ("Account", "Contact")
INJECTED_429S = 3
INJECTED_500S = 2
INJECTED_400S = 1


@pytest.fixture
def synced(
    notion_sandbox: NotionSandbox,
    salesforce_sandbox: SalesforceSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
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
    config = load_config(Path(__file__).resolve().parents[1] / "notion_sync.yaml")
    objects = [config.objects[name] for name in OBJECTS]
    assets = [build_salesforce_asset(obj) for obj in objects] + [
        build_notion_asset(obj, []) for obj in objects
    ]
    with instance_for_test() as instance:
        result = materialize(assets, partition_key=PARTITION, resources=build_resources(), instance=instance)
    assert result.success
    return duckdb_file


def test_report_matches_the_sandbox(synced: Path, notion_sandbox: NotionSandbox) -> None:
    stats = notion_sandbox.stats()
    report = load_report(synced, limit_rps=3 * notion_sandbox.speed)
    with staging.connect(synced, read_only=True) as conn:
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
    assert sum(p.requests for p in report.partitions) <= total.requests  # set-up calls belong to no batch
    assert sum(p.rate_limited for p in report.partitions) == INJECTED_429S
    assert report.http_statuses == {int(k): v for k, v in stats["requests_by_status"].items()}
    assert report.http_statuses[500] == INJECTED_500S
    assert {u.scope for u in report.usage[1:]} == set(OBJECTS)
    assert sum(u.requests for u in report.usage[1:]) == total.requests
    assert total.p95_ms >= total.p50_ms > 0 and total.per_minute > 0 and total.peak_per_minute > 0
    assert sum(b.requests for b in report.timeline) == total.requests

    assert [(f.object, f.status, f.count) for f in report.failures if f.object == "Account"] == [
        ("Account", "permanent_error", INJECTED_400S)
    ]


def test_cli_text_and_html(synced: Path, notion_sandbox: NotionSandbox, tmp_path: Path, capsys) -> None:
    html_file = tmp_path / "status.html"
    assert main(["status", "--html", str(html_file)]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^Account\s+{PARTITION}\s+\d+\s+{INJECTED_400S}\s+0\s+0\s+succeeded", text, re.M)
    assert re.search(rf"^all\s+{notion_sandbox.stats()['requests_total']}\s", text, re.MULTILINE)

    html = html_file.read_text()
    assert html.count("<svg") == 4 and "<script" not in html
    assert not re.search(r"""(src|href)=|url\(|@import""", html)  # nothing fetched: opens offline
    assert "Request rate against the limit" in html and "429 rate_limited answers" in html

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
