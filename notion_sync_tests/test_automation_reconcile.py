"""Reconciliation against both sandboxes: a purged record's page is trashed, a lost page comes back."""

import re

import pytest
from dagster import (
    DagsterEventType,
    Definitions,
    instance_for_test,
    materialize,
)
from dagster_shared.record import copy

from notion_sync.automation.jobs import sync_job
from notion_sync.automation.reconcile import build_reconcile_check, build_reconcile_job, compare
from notion_sync.automation.sensors import build_resync_sensor
from notion_sync.config import load_config
from notion_sync.definitions import build_definitions
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.sync import page_salesforce_id
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync_tests.run_helpers import requests_after_success
from notion_sync_tests.sandbox_resources import sandbox_resources

CONFIG = load_config()
CONFIG = CONFIG.model_copy(update={"objects": {"Account": CONFIG.objects["Account"]}})
ACCOUNT = CONFIG.objects["Account"]
PARTITION = "2026-11-20"


def test_compare_finds_orphans_and_missing_records():
    live = {"001A": "2026-11-20T10:00:00.000+0000", "001B": "2026-11-21T00:00:00.000+0000"}
    differences = compare(live, [("001A", "page-a"), ("001Z", "page-z")])
    assert differences.orphaned == {"001Z": "page-z"}
    assert differences.missing == {"001B": "2026-11-21"}


@pytest.fixture
def defs(tmp_path, notion_sandbox, own_salesforce_sandbox) -> Definitions:
    """Account's assets, jobs and the resync sensor on the sandboxes."""
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    return Definitions(
        assets=[build_salesforce_asset(ACCOUNT), build_notion_asset(ACCOUNT, [])],
        asset_checks=[build_reconcile_check(ACCOUNT)],
        jobs=[sync_job(ACCOUNT), build_reconcile_job(ACCOUNT)],
        sensors=[build_resync_sensor(CONFIG)],
        resources=resources,
    )


def _evaluated_checks(result) -> list[str]:
    return [evaluation.check_name for evaluation in result.get_asset_check_evaluations()]


def _fault_like_messages(instance, result) -> list[str]:
    """Messages of a run's event log that read as a fault (Dagster's own and ours)."""
    pattern = re.compile(r"did not yield|expected outputs|error|fail", re.IGNORECASE)
    events = instance.all_logs(result.run_id)
    return [
        e.message
        for e in events
        # the check `failure_rate_below_1_percent` is named in Dagster's step messages: a name, not a fault
        if pattern.search(e.message.replace("failure_rate_below_1_percent", "")) and not _check_passed(e)
    ]


def _check_passed(entry) -> bool:
    """`Asset check 'failure_rate_below_1_percent' ... passed.` names a failure rate, not a fault."""
    event = entry.dagster_event
    return (
        event is not None
        and event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and event.event_specific_data.passed
    )


def _query_requests(sandbox) -> int:
    return sum(sandbox.stats()["requests_by_route"].get("POST /v1/data_sources/{id}/query", {}).values())


def test_reconciliation_runs_only_in_its_job(defs, notion_sandbox):
    """It reads every Id and page of the object: a partition's sync, or a materialization of
    notion/<Object> with all its checks (the UI's default), must not run it."""
    with instance_for_test() as instance:
        synced = defs.resolve_job_def("sync_Account").execute_in_process(
            instance=instance, partition_key=PARTITION
        )
        assert synced.success and "reconciled_with_salesforce" not in _evaluated_checks(synced)
        assert _fault_like_messages(instance, synced) == []
        queries = _query_requests(notion_sandbox)
        adhoc = materialize(
            [
                build_salesforce_asset(ACCOUNT),
                build_notion_asset(ACCOUNT, []),
                build_reconcile_check(ACCOUNT),
            ],
            partition_key=PARTITION,
            resources=defs.resources,
            instance=instance,
        )
        assert adhoc.success and "reconciled_with_salesforce" not in _evaluated_checks(adhoc)
        assert _fault_like_messages(instance, adhoc) == []
        assert _query_requests(notion_sandbox) == queries  # not a page of the data source was read
        reconciled = defs.resolve_job_def("reconcile_Account").execute_in_process(instance=instance)
        assert _evaluated_checks(reconciled) == ["reconciled_with_salesforce"]


def test_reconcile_trashes_orphans_and_requeues_missing(defs, notion_sandbox, own_salesforce_sandbox):
    with instance_for_test() as instance:
        assert (
            defs.resolve_job_def("sync_Account")
            .execute_in_process(instance=instance, partition_key=PARTITION)
            .success
        )
        (source_id,) = notion_sandbox.stats()["pages_by_data_source"]
        pages = {page_salesforce_id(page): page["id"] for page in notion_sandbox.pages(source_id)}
        purged, lost = sorted(pages)[:2]
        own_salesforce_sandbox.delete("Account", purged, hard=True)  # gone from queryAll too
        with defs.resources["notion"].get_client() as client:
            client.update_page(pages[lost], in_trash=True)  # someone deleted the page in Notion

        result = defs.resolve_job_def("reconcile_Account").execute_in_process(instance=instance)
        assert result.success
        (evaluation,) = result.get_asset_check_evaluations()
        assert evaluation.check_name == "reconciled_with_salesforce" and evaluation.passed is False
        metadata = {key: value.value for key, value in evaluation.metadata.items()}
        assert metadata["orphaned_pages"] == 1 and metadata["trashed_pages"] == 1
        assert metadata["missing_pages"] == 1 and metadata["missing_sample"] == [lost]
        assert metadata["resync_partitions"] == [PARTITION]
        trashed = {
            page_salesforce_id(p)
            for p in notion_sandbox.pages(source_id, include_trashed=True)
            if p["in_trash"]
        }
        assert purged in trashed
        with defs.resources["staging"].connect(read_only=True) as conn:
            states = conn.execute(
                "SELECT sf_id, in_trash FROM sync_state WHERE sf_id IN (?, ?)", [purged, lost]
            ).fetchall()
        assert states == [(purged, True)]  # the lost page's state is forgotten: its next sync recreates it

        sensor = build_resync_sensor(CONFIG)
        (request,) = requests_after_success(sensor, instance, result)
        assert request.partition_key == PARTITION and request.job_name == "sync_Account"
        assert request.tags["notion_sync/lane"] == "backfill"

        assert (
            defs.resolve_job_def("sync_Account")
            .execute_in_process(instance=instance, partition_key=PARTITION, tags=request.tags)
            .success
        )
        again = defs.resolve_job_def("reconcile_Account").execute_in_process(instance=instance)
        (clean,) = again.get_asset_check_evaluations()
        assert clean.passed is True and clean.metadata["orphaned_pages"].value == 0
    live = {page_salesforce_id(page) for page in notion_sandbox.pages(source_id)}
    assert lost in live and purged not in live
    assert live == set(pages) - {purged}
    assert notion_sandbox.stats()["duplicates_total"] == 0


def test_a_sync_run_of_the_whole_project_logs_no_fault(tmp_path, notion_sandbox, own_salesforce_sandbox):
    """The project's own Definitions: every check of Contact's assets (reconciliation, formula
    refresh, row counts, failure rate) runs with its sync, and none may log anything fault-like."""
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    project = copy(build_definitions(load_config()), resources=resources)
    with instance_for_test() as instance:
        for job in ("sync_Account", "sync_Contact"):  # parents first
            synced = project.resolve_job_def(job).execute_in_process(
                instance=instance, partition_key=PARTITION
            )
            assert synced.success
            assert _fault_like_messages(instance, synced) == []
