"""The upsert engine against the sandbox Notion server, over real sockets.

Rows are staged by writing small `stg_<object>` tables directly; the sandbox runs 50x faster than
Notion and the client's limiter is scaled to match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from notion_sync import staging
from notion_sync.config import SALESFORCE_ID_PROPERTY, parse_config
from notion_sync.notion import state
from notion_sync.notion.resource import NotionResource
from notion_sync.notion.schema import SchemaError
from notion_sync.notion.sync import SyncIncomplete, SyncReport, run_sync
from notion_sync.sandbox.notion_server import NotionSandbox

PARTITION = "2026-11-20"
MODSTAMP = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONFIG = parse_config(
    {
        "defaults": {"start_date": "2026-10-01"},
        "objects": {
            "Account": {
                "notion": {"title": "Accounts"},
                "title_field": "Name",
                "fields": {
                    "Name": "Name",
                    "Website": "Website",
                    "Description": "Description",
                    "Regions__c": "Regions",
                    "AnnualRevenue": "Annual Revenue",
                    "Active__c": "Active",
                    "Rating_Score__c": "Rating Score",
                    "LastModifiedDate": "Last Modified",
                },
            },
            "Contact": {
                "notion": {"title": "Contacts"},
                "title_field": "Name",
                "fields": {"Name": "Name", "Email": "Email", "Birthdate": "Birthdate"},
                "relations": {"AccountId": "Account"},
            },
        },
    }
)
TYPES = {
    "Account": {
        "Id": "id",
        "SystemModstamp": "datetime",
        "IsDeleted": "boolean",
        "Name": "string",
        "Website": "url",
        "Description": "textarea",
        "Regions__c": "multipicklist",
        "AnnualRevenue": "currency",
        "Active__c": "boolean",
        "Rating_Score__c": "percent",
        "LastModifiedDate": "datetime",
    },
    "Contact": {
        "Id": "id",
        "SystemModstamp": "datetime",
        "IsDeleted": "boolean",
        "Name": "string",
        "Email": "email",
        "Birthdate": "date",
        "AccountId": "reference",
    },
}
DUCKDB_TYPES = {
    "id": "VARCHAR",
    "datetime": "TIMESTAMPTZ",
    "boolean": "BOOLEAN",
    "string": "VARCHAR",
    "url": "VARCHAR",
    "textarea": "VARCHAR",
    "multipicklist": "VARCHAR",
    "currency": "DOUBLE",
    "percent": "DOUBLE",
    "email": "VARCHAR",
    "date": "DATE",
    "reference": "VARCHAR",
}


def account(n: int, **values: Any) -> dict[str, Any]:
    return {
        "Id": f"001{n:015d}",
        "Name": f"Account {n}",
        "Website": f"https://a{n}.example.com",
        "AnnualRevenue": 1000.0 * n,
        "Active__c": n % 2 == 0,
        "Regions__c": "EMEA;APAC",
        "LastModifiedDate": MODSTAMP,
        **values,
    }


def contact(n: int, account_n: int | None, **values: Any) -> dict[str, Any]:
    return {
        "Id": f"003{n:015d}",
        "Name": f"Contact {n}",
        "Email": f"c{n}@example.com",
        "AccountId": f"001{account_n:015d}" if account_n is not None else None,
        **values,
    }


@dataclass
class Env:
    sandbox: NotionSandbox
    db: Path
    resource: NotionResource

    def connect(self, **kwargs: Any) -> Any:
        return staging.connect(self.db, **kwargs)

    def stage(self, name: str, rows: list[dict[str, Any]], partition: str = PARTITION) -> None:
        """Replace the partition of stg_<name> with ``rows`` (Salesforce fields, typed as staging does)."""
        columns = [staging.Column(f, DUCKDB_TYPES[t]) for f, t in TYPES[name].items()]
        table = CONFIG.objects[name].staging_table
        with self.connect() as conn:
            staging.ensure_table(conn, table, columns)
            conn.execute(f"DELETE FROM {table} WHERE _partition = ?::DATE", [partition])
            names = [c.name for c in columns]
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(names)}, _partition, _staged_at) "
                f"VALUES ({', '.join('?' * len(names))}, ?::DATE, now())",
                [
                    [{"SystemModstamp": MODSTAMP, "IsDeleted": False, **row}.get(n) for n in names]
                    + [partition]
                    for row in rows
                ],
            )

    def sync(self, name: str, partition: str = PARTITION) -> SyncReport:
        return run_sync(
            self.resource, self.connect, CONFIG.objects[name], TYPES[name], partition, uuid.uuid4().hex
        )

    def data_source(self, name: str) -> str:
        with self.connect() as conn:
            return state.load_target(conn, name)[1]

    def pages(self, name: str, include_trashed: bool = False) -> dict[str, dict]:
        """Pages of the object's data source by Salesforce Id."""
        pages = self.sandbox.pages(self.data_source(name), include_trashed)
        return {
            page["properties"][SALESFORCE_ID_PROPERTY]["rich_text"][0]["plain_text"]: page for page in pages
        }

    def page_requests(self) -> dict[str, int]:
        """Requests per page route since the last reset (429 answers included)."""
        routes = self.sandbox.stats()["requests_by_route"]
        return {route: sum(codes.values()) for route, codes in routes.items() if "/v1/pages" in route}

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, list(params)).fetchall()


def make_env(sandbox: NotionSandbox, tmp_path: Path, workers: int = 4) -> Env:
    resource = NotionResource(
        token=sandbox.token,
        base_url=sandbox.url,
        parent_page_id=sandbox.parent_page_id,
        time_scale=sandbox.speed,
        limiter_path=str(tmp_path / "limiter.sqlite"),
        workers=workers,
    )
    return Env(sandbox, tmp_path / "staging.duckdb", resource)


@pytest.fixture
def env(notion_sandbox: NotionSandbox, tmp_path: Path) -> Env:
    return make_env(notion_sandbox, tmp_path)


def assert_no_duplicates(env: Env) -> None:
    assert env.sandbox.stats()["duplicates_total"] == 0


def test_field_types_and_limits(env: Env) -> None:
    long_text = "word " * 1000  # 5,000 characters
    regions = ";".join(f"Region {i}" for i in range(130))
    env.stage(
        "Account",
        [
            account(1, Description=long_text, Regions__c=regions, Rating_Score__c=42.0),
            account(2, Website=None, Description=None),
        ],
    )
    report = env.sync("Account")
    assert report.totals["created"] == 2 and report.totals["failed"] == 0
    props = env.pages("Account")["001000000000000001"]["properties"]
    chunks = [part["plain_text"] for part in props["Description"]["rich_text"]]
    assert [len(c) for c in chunks] == [2000, 2000, 1000] and "".join(chunks) == long_text
    assert len(props["Regions"]["multi_select"]) == 100
    assert props["Rating Score"]["number"] == pytest.approx(0.42)
    assert props["Annual Revenue"]["number"] == 1000.0
    assert props["Name"]["title"][0]["plain_text"] == "Account 1"
    assert props["Last Modified"]["date"]["start"].startswith("2026-11-20T12:00:00")
    schema = env.sandbox.store.get_source(env.data_source("Account"), "2025-09-03")["properties"]
    assert schema["Annual Revenue"]["number"]["format"] == "dollar"
    assert schema["Website"]["type"] == "url" and schema["Regions"]["type"] == "multi_select"
    assert env.pages("Account")["001000000000000002"]["properties"]["Website"]["url"] is None


def test_relations_resolve_locally_and_pending_ones_fill_in(env: Env) -> None:
    env.stage("Account", [account(1)])
    env.sync("Account")
    env.stage("Contact", [contact(1, 1), contact(2, 2)])  # Account 2 is not synced yet
    env.sandbox.reset_stats()
    env.sync("Contact")
    assert env.page_requests() == {"POST /v1/pages": 2}  # the lookup of Account 1 cost nothing
    accounts, contacts = env.pages("Account"), env.pages("Contact")
    assert contacts["003000000000000001"]["properties"]["Account"]["relation"] == [
        {"id": accounts["001000000000000001"]["id"]}
    ]
    assert contacts["003000000000000002"]["properties"]["Account"]["relation"] == []
    assert env.query("SELECT sf_id, parent_sf_id FROM pending_relations") == [
        ("003000000000000002", "001000000000000002")
    ]

    env.stage("Account", [account(2)], partition="2026-11-21")
    report = env.sync("Account", "2026-11-21")  # the parent arrives and fills the pending relation
    assert report.relations_filled == 1
    account2 = env.pages("Account")["001000000000000002"]["id"]
    assert env.pages("Contact")["003000000000000002"]["properties"]["Account"]["relation"] == [
        {"id": account2}
    ]
    assert env.query("SELECT count(*) FROM pending_relations") == [(0,)]
    env.sandbox.reset_stats()
    env.sync("Contact")  # the filled-in relation does not look like a change
    assert env.page_requests() == {}


def test_deleted_records_are_trashed_and_kept_in_state(env: Env) -> None:
    env.stage("Account", [account(1), account(2)])
    env.sync("Account")
    env.stage("Account", [account(1), account(2, IsDeleted=True)])
    env.sandbox.reset_stats()
    report = env.sync("Account")
    assert report.totals["archived"] == 1 and report.totals["unchanged"] == 1
    assert env.page_requests() == {"PATCH /v1/pages/{id}": 1}
    assert set(env.pages("Account")) == {"001000000000000001"}
    assert "001000000000000002" in env.pages("Account", include_trashed=True)
    assert env.query("SELECT in_trash FROM sync_state WHERE sf_id = ?", "001000000000000002") == [(True,)]


def test_unchanged_costs_nothing_and_changes_cost_one_patch_each(env: Env) -> None:
    rows = [account(n) for n in range(1, 21)]
    env.stage("Account", rows)
    env.sync("Account")
    env.sandbox.reset_stats()
    report = env.sync("Account")
    assert report.totals["unchanged"] == 20 and report.requests == 0
    assert env.page_requests() == {}

    rows[3]["Name"], rows[7]["AnnualRevenue"] = "Renamed", 1.5
    env.stage("Account", rows)
    env.sandbox.reset_stats()
    report = env.sync("Account")
    assert report.totals["updated"] == 2 and report.totals["unchanged"] == 18
    assert env.page_requests() == {"PATCH /v1/pages/{id}": 2}
    # sync_log holds what a run did; the unchanged records are counted in sync_batches only
    assert env.query("SELECT action, count(*) FROM sync_log GROUP BY action ORDER BY action") == [
        ("created", 20),
        ("updated", 2),
    ]
    assert env.query("SELECT unchanged FROM sync_batches ORDER BY started_at") == [(0,), (20,), (18,)]
    assert (
        env.pages("Account")["001000000000000004"]["properties"]["Name"]["title"][0]["plain_text"]
        == "Renamed"
    )


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(
            lambda s: s.inject(status=429, count=15, retry_after=1, path_prefix="/v1/pages"), id="429-storm"
        ),
        pytest.param(lambda s: s.inject(status=500, count=6, path_prefix="/v1/pages"), id="5xx"),
        pytest.param(
            lambda s: s.inject(status=529, count=6, retry_after=1, path_prefix="/v1/pages"), id="529"
        ),
        pytest.param(
            lambda s: s.inject(status=502, count=5, method="POST", path_prefix="/v1/pages", apply_write=True),
            id="create-applied-then-502",
        ),
        pytest.param(
            lambda s: s.inject_timeout(
                count=3, seconds=0.5, method="POST", path_prefix="/v1/pages", apply_write=True
            ),
            id="timeout-after-create",
        ),
        pytest.param(
            lambda s: (
                s.set_query_lag(2.5),  # a new page shows up in queries 2.5 s after its creation
                s.inject(status=502, count=5, method="POST", path_prefix="/v1/pages", apply_write=True),
            ),
            id="create-applied-then-502-query-lag",
        ),
        pytest.param(lambda s: s.inject_timeout(count=2, seconds=0.5, method="PATCH"), id="timeout-update"),
    ],
)
def test_faults_leave_exactly_one_page_per_record(
    notion_sandbox: NotionSandbox, tmp_path: Path, inject
) -> None:
    env = make_env(notion_sandbox, tmp_path)
    env.resource = env.resource.model_copy(update={"read_timeout": 0.2})
    rows = [account(n) for n in range(1, 31)]
    env.stage("Account", rows[:10])
    env.sync("Account")  # some pages exist so updates are exercised too
    rows[0]["Name"] = rows[1]["Name"] = "changed"
    env.stage("Account", rows)
    inject(env.sandbox)
    try:
        env.sync("Account")
    except SyncIncomplete:  # a record out of in-run retries: the asset's RetryPolicy runs it again
        env.sync("Account")
    assert len(env.pages("Account")) == 30
    assert_no_duplicates(env)
    created = env.query("SELECT sf_id, count(*) FROM sync_log WHERE action = 'created' GROUP BY sf_id")
    assert len(created) == 30 and {n for _, n in created} == {1}
    updated = env.query("SELECT DISTINCT sf_id FROM sync_log WHERE action = 'updated'")
    assert sorted(updated) == [("001000000000000001",), ("001000000000000002",)]


def test_transient_failures_fail_the_run_after_recording_progress(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 11)])
    env.resource = env.resource.model_copy(update={"max_retries": 0})
    env.sandbox.inject(status=429, count=3, method="POST", path_prefix="/v1/pages")
    with pytest.raises(SyncIncomplete, match="transiently"):
        env.sync("Account")
    assert env.query("SELECT status, failed, created FROM sync_batches") == [("failed", 3, 7)]
    env.resource = env.resource.model_copy(update={"max_retries": 6})
    report = env.sync("Account")
    assert report.totals["created"] == 3 and report.totals["unchanged"] == 7
    assert len(env.pages("Account")) == 10
    assert_no_duplicates(env)


def test_bad_record_is_logged_and_skipped(env: Env) -> None:
    env.stage("Account", [account(1)])
    env.sync("Account")
    env.stage("Contact", [contact(1, 1), contact(2, 1, Email="not-an-email"), contact(3, 1)])
    report = env.sync("Contact")  # a permanent failure does not fail the run
    assert report.totals["created"] == 2 and report.totals["failed"] == 1
    assert set(env.pages("Contact")) == {"003000000000000001", "003000000000000003"}
    [(action, status, code, message)] = env.query(
        "SELECT action, status, error_code, error_message FROM sync_log WHERE sf_id = ?", "003000000000000002"
    )
    assert (action, status, code) == ("failed", "permanent_error", "validation_error")
    assert "email" in message


def test_lost_state_is_rebuilt_without_duplicates_or_rewrites(env: Env) -> None:
    """Pages that already show their staged values cost nothing after a rebuild; changed ones one PATCH."""
    accounts = [
        account(n, Description=f"Notes on account {n}. " * 150, Rating_Score__c=12.5, LastModifiedDate=None)
        if n % 3 == 0
        else account(n)
        for n in range(1, 151)
    ]
    env.stage("Account", accounts)
    env.sync("Account")
    with env.connect() as conn:
        conn.execute("DELETE FROM sync_state")
    accounts[4] = account(5, Name="Renamed after the state was lost")
    env.stage("Account", [*accounts, account(151)])
    env.sandbox.reset_stats()
    report = env.sync("Account")
    routes = env.sandbox.stats()["requests_by_route"]
    assert sum(routes["POST /v1/data_sources/{id}/query"].values()) == 2  # 150 pages, 100 a request
    assert env.page_requests() == {"POST /v1/pages": 1, "PATCH /v1/pages/{id}": 1}
    assert (report.totals["created"], report.totals["updated"], report.totals["unchanged"]) == (1, 1, 149)
    assert env.pages("Account")["001000000000000005"]["properties"]["Name"]["title"][0]["plain_text"] == (
        "Renamed after the state was lost"
    )
    assert len(env.pages("Account")) == 151
    assert_no_duplicates(env)


def test_lost_state_of_related_records_is_rebuilt_without_rewrites(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 4)])
    env.sync("Account")
    env.stage("Contact", [contact(n, n % 4 or None, Birthdate=date(1990, 1, n)) for n in range(1, 9)])
    env.sync("Contact")
    with env.connect() as conn:
        conn.execute("DELETE FROM sync_state")
    env.sandbox.reset_stats()
    assert env.sync("Account").totals["unchanged"] == 3
    # Contact 4 and 8 have no Account; Contact 5 now points at another one.
    env.stage(
        "Contact",
        [contact(n, 3 if n == 5 else n % 4 or None, Birthdate=date(1990, 1, n)) for n in range(1, 9)],
    )
    report = env.sync("Contact")
    assert (report.totals["updated"], report.totals["unchanged"]) == (1, 7)
    assert env.page_requests() == {"PATCH /v1/pages/{id}": 1}
    assert_no_duplicates(env)


def test_a_partition_bigger_than_a_read_chunk_is_synced_whole(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notion_sync.notion import sync

    monkeypatch.setattr(sync, "READ_CHUNK", 7)
    env.stage("Account", [account(n) for n in range(1, 4)])
    env.sync("Account")
    contacts = [contact(n, n % 5 or None) for n in range(1, 24)]  # 4 chunks; Accounts 1-3 exist, 4 not
    env.stage("Contact", [*contacts, contact(99, 1, IsDeleted=True)])
    report = env.sync("Contact")
    assert report.records == 24
    assert (report.totals["created"], report.totals["skipped"]) == (23, 1)
    pages, accounts = env.pages("Contact"), env.pages("Account")
    assert sorted(pages) == sorted(c["Id"] for c in contacts)
    linked = {sf_id: page["properties"]["Account"]["relation"] for sf_id, page in pages.items()}
    assert linked["003000000000000006"] == [{"id": accounts["001000000000000001"]["id"]}]
    assert linked["003000000000000004"] == []  # Account 4 is not synced: pending
    assert env.query("SELECT count(*) FROM pending_relations")[0][0] == 4  # Contacts 4, 9, 14, 19
    assert env.sync("Contact").totals["unchanged"] == 23
    monkeypatch.setattr(sync, "READ_CHUNK", 3)  # the pending relations are read in two chunks too
    env.stage("Account", [account(4)], partition="2026-11-21")
    assert env.sync("Account", "2026-11-21").relations_filled == 4
    account_4 = env.pages("Account")["001000000000000004"]["id"]
    pages = env.pages("Contact")
    for n in (4, 9, 14, 19):
        assert pages[f"003{n:015d}"]["properties"]["Account"]["relation"] == [{"id": account_4}]
    assert env.query("SELECT count(*) FROM pending_relations")[0][0] == 0
    assert_no_duplicates(env)


def test_history_older_than_history_days_is_pruned_after_a_sync(env: Env) -> None:
    env.stage("Account", [account(1)])
    env.sync("Account")
    with env.connect() as conn:
        for table in ("sync_log", "api_usage"):
            for name, age in (("Account", 91), ("Account", 89), ("Contact", 91)):
                conn.execute(
                    f'INSERT INTO {table} (object, "at") VALUES (?, now() - ?::INTEGER * INTERVAL 1 DAY)',
                    [name, age],
                )
    env.stage("Account", [account(1, Name="Renamed")])
    env.sync("Account")
    for table in ("sync_log", "api_usage"):
        ages = env.query(
            f"SELECT object, date_diff('day', \"at\", now()) FROM {table} WHERE run_id IS NULL ORDER BY ALL"
        )
        assert ages == [("Account", 89), ("Contact", 91)], table  # only Account's rows past 90 days go
    assert env.query("SELECT count(*) FROM sync_log WHERE action = 'updated'") == [(1,)]


def test_exception_mid_partition_then_rerun_completes(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from notion_sync.notion import sync

    env.stage("Account", [account(n) for n in range(1, 41)])
    real, calls = sync.perform, []

    def crash_after_15(*args: Any) -> str:
        calls.append(1)
        if len(calls) > 15:
            raise RuntimeError("worker died")
        return real(*args)

    monkeypatch.setattr(sync, "perform", crash_after_15)
    with pytest.raises(RuntimeError, match="worker died"):
        env.sync("Account")
    monkeypatch.setattr(sync, "perform", real)
    assert env.query("SELECT status FROM sync_batches") == [("failed",)]
    report = env.sync("Account")
    assert report.totals["processed"] == 40
    assert len(env.pages("Account")) == 40
    assert_no_duplicates(env)


def test_pages_created_but_not_recorded_are_looked_up(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from notion_sync.notion import sync

    env.stage("Account", [account(n) for n in range(1000, 1200)], partition="2026-11-19")
    env.sync("Account", "2026-11-19")  # 200 known pages: a lookup per unmapped record beats paging them
    env.stage("Account", [account(n) for n in range(1, 7)])
    real, calls = sync.perform, []

    def lose_results_after_4(*args: Any) -> str:
        page_id = real(*args)
        calls.append(page_id)
        if len(calls) > 4:
            raise RuntimeError("crashed after the write, before recording it")
        return page_id

    monkeypatch.setattr(sync, "perform", lose_results_after_4)
    with pytest.raises(RuntimeError, match="crashed"):
        env.sync("Account")
    monkeypatch.setattr(sync, "perform", real)
    assert len(env.pages("Account")) == 206  # every page exists, 2 of them unknown to sync_state
    env.sandbox.reset_stats()
    report = env.sync("Account")
    routes = env.sandbox.stats()["requests_by_route"]
    assert sum(routes["POST /v1/data_sources/{id}/query"].values()) == 2  # one lookup each
    assert "POST /v1/pages" not in routes
    # found and brought up to date; logged as created, as the crashed run never recorded them
    assert report.totals["created"] == 2 and report.totals["unchanged"] == 4
    assert len(env.pages("Account")) == 206
    assert_no_duplicates(env)


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from test_notion_sync import child_sync
child_sync(json.loads(sys.argv[1]))
"""


def child_sync(args: dict[str, Any]) -> None:
    """Entry point of the killed subprocess: a plain sync of Account against the given sandbox."""
    resource = NotionResource(**args["resource"])
    run_sync(
        resource,
        partial(staging.connect, args["db"]),
        CONFIG.objects["Account"],
        TYPES["Account"],
        PARTITION,
        "killed-run",
    )


def test_killed_sync_resumes_without_duplicates(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 61)])
    env.sandbox.set_speed(5)  # slow enough to kill it half way
    resource = env.resource.model_copy(update={"time_scale": 5.0})
    args = {"db": str(env.db), "resource": resource.model_dump()}
    code = CHILD.format(tests=str(Path(__file__).parent))
    child = subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        if sum(s["pages"] for s in env.sandbox.stats()["pages_by_data_source"].values()) >= 25:
            child.kill()
            break
        time.sleep(0.02)
    child.wait()
    assert child.returncode != 0, "the sync finished before it could be killed"
    env.sandbox.set_speed(50)
    report = env.sync("Account")
    assert report.totals["processed"] == 60
    assert len(env.pages("Account")) == 60
    assert_no_duplicates(env)


def test_database_is_created_once(env: Env) -> None:
    env.stage("Account", [account(1)])
    env.sync("Account")
    env.sync("Account")
    routes = env.sandbox.stats()["requests_by_route"]
    assert routes["POST /v1/databases"] == {"200": 1}
    assert len(env.query("SELECT * FROM notion_targets")) == 1


def data_sources_titled(env: Env, title: str) -> list[str]:
    """Ids of the live data sources titled ``title`` (one per database created by the sync)."""
    return [ds for ds, s in env.sandbox.stats()["pages_by_data_source"].items() if s["title"] == title]


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(
            lambda s: s.inject(status=502, method="POST", path_prefix="/v1/databases", apply_write=True),
            id="created-then-502",
        ),
        pytest.param(
            lambda s: s.inject_timeout(
                seconds=0.5, method="POST", path_prefix="/v1/databases", apply_write=True
            ),
            id="created-then-timeout",
        ),
    ],
)
def test_ambiguous_database_create_finds_the_database(env: Env, inject) -> None:
    env.resource = env.resource.model_copy(update={"read_timeout": 0.2})
    env.stage("Account", [account(1)])
    inject(env.sandbox)
    report = env.sync("Account")  # the create's outcome is unknown: the search finds the database
    assert report.totals["created"] == 1
    [source] = data_sources_titled(env, "Accounts")
    assert env.data_source("Account") == source
    sent = "SELECT count(*) FROM api_usage WHERE method = 'POST' AND endpoint = '/v1/databases'"
    assert env.query(sent) == [(1,)]  # never sent twice (the sandbox counts a stalled one late)
    env.sync("Account")
    assert data_sources_titled(env, "Accounts") == [source]
    assert_no_duplicates(env)


def test_unapplied_database_create_fails_the_run_then_creates_once(env: Env) -> None:
    from notion_sync.notion.errors import AmbiguousWriteError

    env.stage("Account", [account(1)])
    env.sandbox.inject(status=500, method="POST", path_prefix="/v1/databases")
    with pytest.raises(AmbiguousWriteError, match="not created again in this run"):
        env.sync("Account")  # nothing found after the search settled: no second create in this run
    assert data_sources_titled(env, "Accounts") == []
    assert env.query("SELECT count(*) FROM notion_targets") == [(0,)]
    env.sync("Account")  # the retry searches again, finds nothing and creates
    assert len(data_sources_titled(env, "Accounts")) == 1
    assert env.sandbox.stats()["requests_by_route"]["POST /v1/databases"] == {"500": 1, "200": 1}
    assert len(env.pages("Account")) == 1


def test_lost_target_finds_the_database_instead_of_creating_another(env: Env) -> None:
    env.stage("Account", [account(1), account(2)])
    env.sync("Account")
    [target] = env.query("SELECT database_id, data_source_id FROM notion_targets")
    with env.connect() as conn:
        conn.execute("DELETE FROM notion_targets")  # or a crash between the create and recording it
    env.sandbox.reset_stats()
    report = env.sync("Account")
    assert "POST /v1/databases" not in env.sandbox.stats()["requests_by_route"]
    assert env.query("SELECT database_id, data_source_id FROM notion_targets") == [target]
    assert report.totals["unchanged"] == 2
    assert len(data_sources_titled(env, "Accounts")) == 1
    assert len(env.pages("Account")) == 2
    assert_no_duplicates(env)


def test_databases_without_the_marker_are_not_adopted(env: Env) -> None:
    from notion_sync.notion.client import NotionClient

    client = NotionClient(env.sandbox.token, base_url=env.sandbox.url)
    title = {"Name": {"title": {}}}
    foreign = client.create_database(env.sandbox.parent_page_id, "Accounts", title)  # the user's own
    other_object = client.create_database(
        env.sandbox.parent_page_id, "Accounts", title, "synced by notion-sync [notion-sync:Contact]"
    )
    env.stage("Account", [account(1)])
    env.sync("Account")
    database_id = env.query("SELECT database_id FROM notion_targets")[0][0]
    assert database_id not in (foreign["id"], other_object["id"])
    assert len(data_sources_titled(env, "Accounts")) == 3


def test_missing_parent_page_is_named(env: Env) -> None:
    env.resource = env.resource.model_copy(update={"parent_page_id": None})
    env.stage("Account", [account(1)])
    with pytest.raises(SchemaError, match="NOTION_PARENT_PAGE_ID"):
        env.sync("Account")


def test_configured_database_gets_missing_properties_and_clashes_are_named(env: Env) -> None:
    from notion_sync.notion.client import NotionClient

    client = NotionClient(env.sandbox.token, base_url=env.sandbox.url)
    database = client.create_database(
        env.sandbox.parent_page_id, "Existing", {"Title": {"title": {}}, "Website": {"rich_text": {}}}
    )
    config = parse_config(
        {
            "defaults": {"start_date": "2026-10-01"},
            "objects": {
                "Account": {
                    "notion": {"database_id": database["id"]},
                    "title_field": "Name",
                    "fields": {"Name": "Name", "Website": "Website", "AnnualRevenue": "Revenue"},
                }
            },
        }
    )
    obj = config.objects["Account"]
    env.stage("Account", [account(1)])
    with pytest.raises(SchemaError, match=r"Account: Notion property 'Website' is rich_text, expected url"):
        run_sync(env.resource, env.connect, obj, TYPES["Account"], PARTITION, "r1")
    client.update_data_source(database["data_sources"][0]["id"], {"Website": None})
    run_sync(env.resource, env.connect, obj, TYPES["Account"], PARTITION, "r2")
    schema = client.retrieve_data_source(database["data_sources"][0]["id"])["properties"]
    assert {name: prop["type"] for name, prop in schema.items()} == {
        "Name": "title",
        "Website": "url",
        "Revenue": "number",
        SALESFORCE_ID_PROPERTY: "rich_text",
    }
