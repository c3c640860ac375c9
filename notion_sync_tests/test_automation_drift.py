"""Pages edited by hand in Notion: the weekly reconciliation finds them and syncs them again (or
only reports them), against both sandboxes."""

import pytest
from dagster import Definitions, instance_for_test

from notion_sync.automation import check_jobs, reconcile
from notion_sync.automation.jobs import sync_job
from notion_sync.automation.reconcile import build_reconcile_check, build_reconcile_job
from notion_sync.automation.sensors import build_resync_sensor
from notion_sync.notion.sync import page_salesforce_id
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.status import load_report, render_text
from notion_sync_tests.run_helpers import requests_after_success
from notion_sync_tests.sandbox_resources import sandbox_resources
from notion_sync_tests.test_automation_reconcile import ACCOUNT, CONFIG, PARTITION


def _defs(obj, salesforce, notion, workdir) -> Definitions:
    from notion_sync.notion.assets import build_notion_asset

    return Definitions(
        assets=[build_salesforce_asset(obj), build_notion_asset(obj, [])],
        asset_checks=[build_reconcile_check(obj)],
        jobs=[sync_job(obj), build_reconcile_job(obj)],
        resources=sandbox_resources(salesforce, notion, workdir),
    )


@pytest.fixture
def fresh_checks(monkeypatch):
    """The reconcile check and job are cached per object name: build them again for another config."""
    monkeypatch.setattr(reconcile, "_RECONCILE_CHECKS", {})
    monkeypatch.setattr(check_jobs, "_CHECK_JOBS", {})


def _title(page: dict) -> str:
    return "".join(part["plain_text"] for part in page["properties"]["Name"]["title"])


def _edit_by_hand(defs: Definitions, notion_sandbox) -> tuple[str, str, str]:
    """Rename one synced page through the Notion API, as a person would; (sf_id, page id, old title)."""
    (source_id,) = notion_sandbox.stats()["pages_by_data_source"]
    page = sorted(notion_sandbox.pages(source_id), key=page_salesforce_id)[0]
    with defs.resources["notion"].get_client() as client:
        client.update_page(
            page["id"], properties={"Name": {"title": [{"text": {"content": "Renamed by hand"}}]}}
        )
    return page_salesforce_id(page), page["id"], _title(page)


def _reconcile(defs: Definitions, instance) -> tuple[dict, object]:
    result = defs.resolve_job_def("reconcile_Account").execute_in_process(instance=instance)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    return {key: value.value for key, value in evaluation.metadata.items()}, result


def test_a_page_edited_by_hand_is_synced_again(
    tmp_path, notion_sandbox, own_salesforce_sandbox, fresh_checks
) -> None:
    defs = _defs(ACCOUNT, own_salesforce_sandbox, notion_sandbox, tmp_path)
    with instance_for_test() as instance:
        assert (
            defs.resolve_job_def("sync_Account")
            .execute_in_process(instance=instance, partition_key=PARTITION)
            .success
        )
        sf_id, page_id, title = _edit_by_hand(defs, notion_sandbox)

        metadata, result = _reconcile(defs, instance)
        assert (metadata["drifted_pages"], metadata["drifted_sample"], metadata["drift"]) == (
            1,
            [sf_id],
            "resync",
        )
        assert metadata["resync_partitions"] == [PARTITION] and metadata["orphaned_pages"] == 0
        report = load_report(tmp_path / "staging.duckdb")  # what `notion-sync status` shows
        assert [(r.object, r.drifted, r.drift) for r in report.reconciliations] == [("Account", 1, "resync")]
        assert "Reconciliations" in render_text(report)

        sensor = build_resync_sensor(CONFIG)
        (request,) = requests_after_success(sensor, instance, result)
        assert request.partition_key == PARTITION
        notion_sandbox.reset_stats()
        synced = defs.resolve_job_def("sync_Account").execute_in_process(
            instance=instance, partition_key=PARTITION, tags=request.tags
        )
        assert synced.success
        assert notion_sandbox.stats()["requests_by_route"]["PATCH /v1/pages/{id}"] == {
            "200": 1
        }  # that page only
        assert _title(defs.resources["notion"].get_client().retrieve_page(page_id)) == title

        metadata, _ = _reconcile(defs, instance)
        assert metadata["drifted_pages"] == 0 and metadata["resync_partitions"] == []


def test_drift_report_only_counts_the_edited_page(
    tmp_path, notion_sandbox, own_salesforce_sandbox, fresh_checks
) -> None:
    reporting = ACCOUNT.model_copy(update={"drift": "report"})
    defs = _defs(reporting, own_salesforce_sandbox, notion_sandbox, tmp_path)
    with instance_for_test() as instance:
        assert (
            defs.resolve_job_def("sync_Account")
            .execute_in_process(instance=instance, partition_key=PARTITION)
            .success
        )
        sf_id, page_id, _ = _edit_by_hand(defs, notion_sandbox)
        metadata, _ = _reconcile(defs, instance)
        assert (metadata["drifted_pages"], metadata["drifted_sample"], metadata["drift"]) == (
            1,
            [sf_id],
            "report",
        )
        assert metadata["resync_partitions"] == []
        with defs.resources["staging"].connect(read_only=True) as conn:
            (held,) = conn.execute("SELECT content_hash FROM sync_state WHERE sf_id = ?", [sf_id]).fetchone()
        assert held is not None  # not marked for a rewrite
        assert _title(defs.resources["notion"].get_client().retrieve_page(page_id)) == "Renamed by hand"
        text = render_text(load_report(tmp_path / "staging.duckdb"))
        assert "Reconciliations" in text and "report" in text
