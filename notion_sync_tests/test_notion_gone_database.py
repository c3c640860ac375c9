"""A Notion database the platform relies on is gone: a new, empty Notion workspace behind an old
staging file (a second `make demo` before it started clean), a database deleted or moved to the
trash, or one no longer shared with the integration. Against the sandbox Notion server."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from dagster import Definitions, instance_for_test
from test_notion_sync import CONFIG, PARTITION, TYPES, Env, account, contact, data_sources_titled, make_env

from notion_sync.automation.jobs import sync_job
from notion_sync.automation.sensors import build_resync_sensor
from notion_sync.config import parse_config
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.client import NotionClient
from notion_sync.notion.schema import SchemaError
from notion_sync.notion.sync import run_sync
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync_tests.run_helpers import requests_after_success
from notion_sync_tests.sandbox_resources import sandbox_resources

OTHER = "2026-11-19"


def fresh_notion() -> NotionSandbox:
    return NotionSandbox(speed=50, rps=3, burst=10, latency_ms=0)


@pytest.fixture
def env(notion_sandbox: NotionSandbox, tmp_path: Path) -> Env:
    return make_env(notion_sandbox, tmp_path)


def target(env: Env) -> str:
    [(database_id,)] = env.query("SELECT database_id FROM notion_targets WHERE object = 'Account'")
    return database_id


def trash(env: Env, database_id: str) -> None:
    """What moving the database to the trash in Notion does."""
    NotionClient(env.sandbox.token, base_url=env.sandbox.url).request(
        "PATCH", f"/v1/databases/{database_id}", json={"in_trash": True}
    )


def test_an_empty_notion_behind_old_state_gets_a_new_database_and_every_record(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env.stage("Account", [account(1), account(2)])
    env.stage("Account", [account(3)], partition=OTHER)
    env.sync("Account", OTHER)
    env.sync("Account")
    old = target(env)
    with fresh_notion() as notion:  # the old staging file, a new empty Notion
        again = make_env(notion, tmp_path)
        with caplog.at_level(logging.WARNING):
            report = again.sync("Account")
        assert report.totals["created"] == 2 and report.resync_partitions == [OTHER]
        assert f"Account: the Notion database {old} that notion-sync created" in caplog.text
        assert (
            "was not found (404 object_not_found)" in caplog.text and "syncing Account again" in caplog.text
        )
        assert target(again) != old and len(again.pages("Account")) == 2
        report = again.sync("Account", OTHER)  # what the resync sensor launches
        assert report.totals["created"] == 1 and report.resync_partitions == []
        assert len(again.pages("Account")) == 3 and len(data_sources_titled(again, "Accounts")) == 1
        assert again.sandbox.stats()["duplicates_total"] == 0


def test_a_trashed_created_database_is_replaced(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.stage("Account", [account(1), account(2)])
    env.sync("Account")
    old = target(env)
    trash(env, old)
    with caplog.at_level(logging.WARNING):
        report = env.sync("Account")
    assert (
        f"the Notion database {old} that notion-sync created for Account is in Notion's trash" in caplog.text
    )
    assert report.totals["created"] == 2 and target(env) != old
    assert len(env.pages("Account")) == 2
    report = env.sync("Account")  # the new database is kept
    assert report.totals["unchanged"] == 2 and report.resync_partitions == []


def configured(database_id: str):
    config = parse_config(
        {
            "defaults": {"start_date": "2026-10-01"},
            "objects": {
                "Account": {
                    "notion": {"database_id": database_id},
                    "title_field": "Name",
                    "fields": {"Name": "Name"},
                }
            },
        }
    )
    return config.objects["Account"]


def test_a_configured_database_not_found_names_the_key_and_both_causes(env: Env) -> None:
    env.stage("Account", [account(1)])
    missing = str(uuid.uuid4())
    with pytest.raises(SchemaError) as raised:
        run_sync(env.resource, env.connect, configured(missing), TYPES["Account"], PARTITION, "r1")
    message = str(raised.value)
    assert message.startswith(
        f"objects.Account.notion.database_id: the Notion database {missing} was not found"
    )
    assert "deleted" in message and "not shared with the integration" in message
    assert "POST /v1/databases" not in env.sandbox.stats()["requests_by_route"]  # none created instead


def test_a_configured_database_in_the_trash_is_named_and_not_replaced(env: Env) -> None:
    client = NotionClient(env.sandbox.token, base_url=env.sandbox.url)
    database = client.create_database(env.sandbox.parent_page_id, "Existing", {"Name": {"title": {}}})
    obj = configured(database["id"])
    env.stage("Account", [account(1)])
    run_sync(env.resource, env.connect, obj, TYPES["Account"], PARTITION, "r1")
    trash(env, database["id"])
    with pytest.raises(SchemaError, match=r"objects.Account.notion.database_id: .* is in Notion's trash"):
        run_sync(env.resource, env.connect, obj, TYPES["Account"], PARTITION, "r2")
    assert target(env) == database["id"]
    assert env.sandbox.stats()["requests_by_route"]["POST /v1/databases"] == {"200": 1}  # the test's own


def test_the_resync_sensor_launches_the_partitions_synced_into_the_gone_database(
    tmp_path: Path, own_salesforce_sandbox, notion_sandbox: NotionSandbox
) -> None:
    account = CONFIG.objects["Account"]
    assets = [build_salesforce_asset(account), build_notion_asset(account, [])]

    def defs(notion: NotionSandbox) -> Definitions:
        resources = sandbox_resources(own_salesforce_sandbox, notion, tmp_path)
        return Definitions(assets=assets, jobs=[sync_job(account)], resources=resources)

    config = CONFIG.model_copy(update={"objects": {"Account": account}})
    with instance_for_test() as instance:
        for partition in (OTHER, PARTITION):
            assert (
                defs(notion_sandbox)
                .resolve_job_def("sync_Account")
                .execute_in_process(instance=instance, partition_key=partition)
                .success
            )
        with fresh_notion() as notion:
            result = (
                defs(notion)
                .resolve_job_def("sync_Account")
                .execute_in_process(instance=instance, partition_key=PARTITION)
            )
            assert result.success
            [materialization] = [
                event.materialization
                for event in result.get_asset_materialization_events()
                if event.asset_key.path[0] == "notion"
            ]
            assert materialization.metadata["resync_partitions"].value == [OTHER]
            assert any(  # the warning is in the run's event log, where the UI shows it
                entry.level == logging.WARNING and "created for Account" in entry.user_message
                for entry in instance.all_logs(result.run_id)
            )
            sensor = build_resync_sensor(config)
            [request] = requests_after_success(sensor, instance, result)
            assert (request.job_name, request.partition_key) == ("sync_Account", OTHER)
            assert request.tags["notion_sync/lane"] == "backfill"


def test_a_relation_to_a_replaced_database_is_repointed_and_its_pages_written_again(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.stage("Account", [account(1), account(2)])
    env.stage("Account", [account(3)], partition=OTHER)
    env.stage("Contact", [contact(1, 1), contact(2, 2)])
    env.stage("Contact", [contact(3, 3)], partition=OTHER)
    for partition in (OTHER, PARTITION):
        env.sync("Account", partition)
        env.sync("Contact", partition)
    trash(env, target(env))
    env.sync("Account")  # re-provisions Account: a new data source and new pages
    new_accounts = env.data_source("Account")
    with caplog.at_level(logging.WARNING):
        report = env.sync("Contact")
    assert (
        "Contact: the Notion relation 'Account' pointed to data source" in caplog.text
        and f"pointing it now to {new_accounts}, the data source of Account" in caplog.text
    )
    assert report.totals["updated"] == 2 and report.resync_partitions == [OTHER]
    relation = NotionClient(env.sandbox.token, base_url=env.sandbox.url).retrieve_data_source(
        env.data_source("Contact")
    )["properties"]["Account"]["relation"]
    assert relation["data_source_id"] == new_accounts
    env.sync("Account", OTHER)  # what the resync sensor launches, in either order
    assert env.sync("Contact", OTHER).totals["updated"] == 1
    accounts, contacts = env.pages("Account"), env.pages("Contact")
    assert {sf_id: page["properties"]["Account"]["relation"] for sf_id, page in contacts.items()} == {
        f"003{n:015d}": [{"id": accounts[f"001{n:015d}"]["id"]}] for n in (1, 2, 3)
    }
    assert env.sync("Contact").totals["unchanged"] == 2  # repaired once
