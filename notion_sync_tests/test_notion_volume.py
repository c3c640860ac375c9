"""Full reads of data sources past Notion's 10,000-result query cap, against the sandbox with the
real cap: the client, the state rebuild and the weekly reconciliation find every page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from dagster import AssetMaterialization, Definitions, instance_for_test

from notion_sync.automation.modstamps import modstamp_day
from notion_sync.automation.names import object_asset_keys
from notion_sync.automation.reconcile import _live_records, build_reconcile_check, build_reconcile_job
from notion_sync.config import SALESFORCE_ID_PROPERTY
from notion_sync.notion import state
from notion_sync.notion.client import IncompleteResultsError, NotionClient
from notion_sync.notion.properties import page_properties, property_specs, rich_text
from notion_sync.notion.sync import PageCopy, rebuild_state, survivor
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.notion_store import QUERY_RESULT_CAP
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync_tests.sandbox_resources import sandbox_resources
from notion_sync_tests.test_automation_reconcile import ACCOUNT
from notion_sync_tests.test_notion_sync import CONFIG, TYPES, account, assert_no_duplicates, make_env

PAGES = 25_000
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SCHEMA = {"Name": {"title": {}}, SALESFORCE_ID_PROPERTY: {"rich_text": {}}}


def _source(client: NotionClient, sandbox: NotionSandbox, title: str) -> tuple[str, str]:
    database = client.create_database(sandbox.parent_page_id, title, SCHEMA)
    return database["id"], database["data_sources"][0]["id"]


def _row(sf_id: str) -> dict:
    return {
        "Name": {"title": rich_text(f"Record {sf_id}")},
        SALESFORCE_ID_PROPERTY: {"rich_text": rich_text(sf_id)},
    }


def _query_requests(sandbox: NotionSandbox) -> int:
    return sum(sandbox.stats()["requests_by_route"].get("POST /v1/data_sources/{id}/query", {}).values())


def test_all_pages_reads_past_the_cap_and_one_query_says_it_was_cut(notion_sandbox: NotionSandbox) -> None:
    client = NotionClient(notion_sandbox.token, base_url=notion_sandbox.url)
    notion_sandbox.set_rate(rps=10_000, burst=10_000)
    _, source = _source(client, notion_sandbox, "Big")
    ids = notion_sandbox.seed_pages(source, (_row(f"{n:018d}") for n in range(PAGES)))
    notion_sandbox.reset_stats()
    pages = [page["id"] for page in client.all_pages(source)]
    assert len(pages) == PAGES and set(pages) == set(ids)
    assert _query_requests(notion_sandbox) <= PAGES // 100 + 5  # a few pages of overlap per window
    with pytest.raises(IncompleteResultsError, match="query_result_limit_reached"):
        list(client.query_data_source(source))


def test_a_minute_holding_more_than_a_query_fails_loudly(notion_sandbox: NotionSandbox) -> None:
    client = NotionClient(notion_sandbox.token, base_url=notion_sandbox.url)
    notion_sandbox.set_rate(rps=10_000, burst=10_000)
    _, source = _source(client, notion_sandbox, "Crowded")
    rows = (_row(f"{n:018d}") for n in range(QUERY_RESULT_CAP + 50))
    notion_sandbox.seed_pages(source, rows, per_minute=QUERY_RESULT_CAP + 50)
    with pytest.raises(IncompleteResultsError, match="alone are more than one query returns"):
        list(client.all_pages(source))


def test_state_rebuild_of_25000_pages_creates_nothing(notion_sandbox: NotionSandbox, tmp_path: Path) -> None:
    env = make_env(notion_sandbox, tmp_path)
    env.stage("Account", [account(1)])
    env.sync("Account")
    specs = property_specs(CONFIG.objects["Account"], TYPES["Account"])
    seeded = (page_properties(specs, account(n), {}) for n in range(2, PAGES + 1))
    notion_sandbox.seed_pages(env.data_source("Account"), seeded)
    with env.connect() as conn:
        conn.execute("DELETE FROM sync_state")  # lost: the next sync rebuilds it from Notion
    env.stage("Account", [account(n) for n in range(PAGES - 99, PAGES + 1)])  # pages past the first 10,000
    report = env.sync("Account")
    assert (report.totals["created"], report.totals["unchanged"]) == (0, 100)
    assert env.query("SELECT count(*), count(DISTINCT page_id) FROM sync_state") == [(PAGES, PAGES)]
    assert notion_sandbox.stats()["pages_by_data_source"][env.data_source("Account")]["trashed"] == 0
    assert_no_duplicates(env)


@pytest.fixture
def big_salesforce(tmp_path: Path) -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(records=PAGES, seed=7, workdir=tmp_path / "salesforce") as sandbox:
        yield sandbox


def test_reconcile_of_25000_pages_finds_every_page(
    notion_sandbox: NotionSandbox, big_salesforce: SalesforceSandbox, tmp_path: Path
) -> None:
    resources = sandbox_resources(big_salesforce, notion_sandbox, tmp_path)
    live = _live_records(resources["salesforce"], "Account")
    assert len(live) > 2 * QUERY_RESULT_CAP
    with resources["notion"].get_client() as client:
        database_id, source = _source(client, notion_sandbox, "Salesforce Account")
    with resources["staging"].connect() as conn:
        state.ensure_tables(conn)
        state.save_target(conn, "Account", database_id, source)
    seeded = requests.post(
        f"{notion_sandbox.url}/_sandbox/seed",
        json={"data_source_id": source, "pages": [_row(sf_id) for sf_id in live]},
        timeout=120,
    )
    assert len(seeded.json()["ids"]) == len(live)
    defs = Definitions(
        asset_checks=[build_reconcile_check(ACCOUNT)],
        jobs=[build_reconcile_job(ACCOUNT)],
        resources=resources,
    )
    notion_key = object_asset_keys("Account")[1]
    with instance_for_test() as instance:
        for day in sorted({modstamp_day(stamp).isoformat() for stamp in live.values()}):  # all synced
            instance.report_runless_asset_event(AssetMaterialization(notion_key, partition=day))
        notion_sandbox.reset_stats()
        result = defs.resolve_job_def("reconcile_Account").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    metadata = {key: value.value for key, value in evaluation.metadata.items()}
    assert metadata["salesforce_records"] == len(live)
    assert (metadata["orphaned_pages"], metadata["missing_pages"], metadata["not_synced_yet"]) == (0, 0, 0)
    assert metadata["resync_partitions"] == [] and evaluation.passed
    assert notion_sandbox.stats()["pages_by_data_source"][source] == {
        "title": "Salesforce Account",
        "pages": len(live),
        "trashed": 0,
    }
    assert notion_sandbox.stats()["duplicates_total"] == 0


def test_ambiguous_database_create_with_a_60s_search_lag_leaves_one_database(
    notion_sandbox: NotionSandbox, tmp_path: Path
) -> None:
    env = make_env(notion_sandbox, tmp_path)
    notion_sandbox.set_search_lag(60)  # virtual seconds, longer than the lookups after a create wait
    env.stage("Account", [account(1)])
    notion_sandbox.inject(status=502, method="POST", path_prefix="/v1/databases", apply_write=True)
    assert env.sync("Account").totals["created"] == 1
    with env.connect() as conn:
        conn.execute("DELETE FROM notion_targets")  # and once more with nothing recorded
    assert env.sync("Account").totals["unchanged"] == 1
    routes = notion_sandbox.stats()["requests_by_route"]
    assert routes["POST /v1/databases"] == {"502": 1}
    titled = [s for s in notion_sandbox.stats()["pages_by_data_source"].values() if s["title"] == "Accounts"]
    assert titled == [{"title": "Accounts", "pages": 1, "trashed": 0}]


def _copies_in_one_minute(env, records: int, copies: int) -> dict[str, list[str]]:
    """Accounts 2.. ``records`` + 1 with ``copies`` pages each, all created in one minute (what old
    creates with an unknown outcome left); returns the page ids per Salesforce Id."""
    env.stage("Account", [account(1)])
    env.sync("Account")  # the database
    specs = property_specs(CONFIG.objects["Account"], TYPES["Account"])
    rows = [page_properties(specs, account(n), {}) for n in range(2, records + 2) for _ in range(copies)]
    ids = env.sandbox.seed_pages(env.data_source("Account"), rows, start=START, per_minute=len(rows))
    pages: dict[str, list[str]] = {}
    for index, page_id in enumerate(ids):
        pages.setdefault(account(2 + index // copies)["Id"], []).append(page_id)
    env.stage("Account", [account(n) for n in range(1, records + 2)])
    return pages


def test_duplicates_keep_the_lowest_page_id_not_the_first_read(
    notion_sandbox: NotionSandbox, tmp_path: Path
) -> None:
    """Copies created in one minute: the survivor must not depend on the order Notion lists them in."""
    env = make_env(notion_sandbox, tmp_path)
    copies = _copies_in_one_minute(env, 20, 3)
    with env.connect() as conn:
        conn.execute("DELETE FROM sync_state")  # lost: the rebuild sees three pages per record
    assert env.sync("Account").totals["unchanged"] == 21
    assert_no_duplicates(env)
    live = {sf_id: page["id"] for sf_id, page in env.pages("Account").items() if sf_id in copies}
    assert live == {sf_id: min(ids) for sf_id, ids in copies.items()}
    assert dict(env.query("SELECT sf_id, page_id FROM sync_state WHERE sf_id <> ?", account(1)["Id"])) == live


def test_duplicates_keep_the_page_sync_state_holds(notion_sandbox: NotionSandbox, tmp_path: Path) -> None:
    env = make_env(notion_sandbox, tmp_path)
    copies = _copies_in_one_minute(env, 4, 2)
    held = dict(sorted((sf_id, max(ids)) for sf_id, ids in copies.items())[:2])  # two records keep a state
    with env.connect() as conn:
        conn.execute("DELETE FROM sync_state")
        rows = list(held.items())
        conn.executemany("INSERT INTO sync_state VALUES ('Account', ?, ?, NULL, now(), false)", rows)
    writer = state.StateWriter(env.connect, "run", "Account")
    specs = property_specs(CONFIG.objects["Account"], TYPES["Account"])
    with env.resource.get_client() as client:
        assert rebuild_state(client, writer, env.data_source("Account"), specs, trash_duplicates=False) == 5
    recorded = dict(env.query("SELECT sf_id, page_id FROM sync_state WHERE sf_id <> ?", account(1)["Id"]))
    assert recorded == {sf_id: held.get(sf_id, min(ids)) for sf_id, ids in copies.items()}


def test_survivor_prefers_the_held_page_then_a_related_one_then_the_oldest_lowest_id() -> None:
    a, b, c = (PageCopy(page_id, "2026-11-02T09:00:00.000Z", "") for page_id in ("a", "b", "c"))
    older = PageCopy("z", "2026-11-02T08:59:00.000Z", "")
    assert survivor([c, b, a]) == survivor([a, b, c]) == a  # one minute: the lowest id, in any order
    assert survivor([a, older]) == older
    assert survivor([a, b, older], referenced={"b"}) == b
    assert survivor([a, b, older], recorded="c", referenced={"b"}) == b  # held page not among them
    assert survivor([a, b, c, older], recorded="c", referenced={"b"}) == c
