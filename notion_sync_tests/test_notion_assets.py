"""`notion/<Object>` end to end: the real Salesforce and Notion assets, both sandboxes, a real instance."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, AssetSelection, Definitions, define_asset_job, instance_for_test, materialize

from notion_sync import staging
from notion_sync.automation.lanes import lane_tags
from notion_sync.config import load_config
from notion_sync.notion import state
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.checks import build_notion_checks, failure_check_result
from notion_sync.notion.rate_limit import SqliteRateLimiter, bucket_key
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.status import load_report
from notion_sync_tests.sandbox_resources import sandbox_resources

PARTITION = "2026-11-20"
CONFIG = load_config(Path(__file__).resolve().parents[1] / "notion_sync.yaml")


@pytest.fixture
def resources(notion_sandbox: NotionSandbox, salesforce_sandbox, tmp_path: Path, monkeypatch) -> dict:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)  # would override the sandbox's CA file
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return sandbox_resources(salesforce_sandbox, notion_sandbox, tmp_path)


def assets_for(*names: str) -> list:
    defs = []
    for name in names:
        obj = CONFIG.objects[name]
        defs += [
            build_salesforce_asset(obj),
            build_notion_asset(obj, CONFIG.parents_of(name)),
            *build_notion_checks(obj),
        ]
    return defs


def notion_metadata(result, name: str) -> dict:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(["notion", name])
    ]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_materialize_salesforce_then_notion(resources: dict, notion_sandbox: NotionSandbox) -> None:
    with instance_for_test() as instance:
        result = materialize(
            assets_for("Account", "Contact"), partition_key=PARTITION, resources=resources, instance=instance
        )
        assert result.success
        account, contact = notion_metadata(result, "Account"), notion_metadata(result, "Contact")
        with staging.connect(resources["staging"].path) as conn:
            staged = {
                name: conn.execute(
                    f"SELECT count(*) FROM stg_{name.lower()} WHERE NOT IsDeleted AND _partition = ?::DATE",
                    [PARTITION],
                ).fetchone()[0]
                for name in ("Account", "Contact")
            }
            bad = conn.execute(
                "SELECT count(*) FROM sync_log WHERE object = 'Contact' AND status = 'permanent_error'"
            ).fetchone()[0]
            targets = {name: state.load_target(conn, name)[1] for name in ("Account", "Contact")}
        assert staged["Account"] > 0 and staged["Contact"] > 0
        assert account["created"] == staged["Account"] and account["failed"] == 0
        assert contact["created"] + contact["failed"] == staged["Contact"] and contact["failed"] == bad
        assert len(notion_sandbox.pages(targets["Account"])) == staged["Account"]
        assert len(notion_sandbox.pages(targets["Contact"])) == contact["created"]
        assert notion_sandbox.stats()["duplicates_total"] == 0
        assert account["requests"] >= staged["Account"] and account["data_source_id"] == targets["Account"]
        assert account["latency_p95_ms"] >= account["latency_p50_ms"] > 0
        assert account["limiter_priority"] is False  # no lane tag: not the realtime lane

        checks = {
            (e.asset_check_key.asset_key.path[-1], e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }
        assert checks["Account", "failure_rate_below_1_percent"] is True
        assert checks["Contact", "failure_rate_below_1_percent"] is (bad / staged["Contact"] <= 0.01)

        notion_sandbox.reset_stats()
        notion = resources["notion"]
        bucket = SqliteRateLimiter(notion.limiter_path, bucket_key(notion.token), rate=3.0)
        before = bucket._read()
        assert before.issued > 0 and before.priority_issued == 0
        again = materialize(  # as the change sensor launches it: its requests go first in the limiter
            assets_for("Account"),
            partition_key=PARTITION,
            resources=resources,
            instance=instance,
            tags=lane_tags("realtime"),
        )
        assert notion_metadata(again, "Account")["unchanged"] == staged["Account"]
        assert notion_metadata(again, "Account")["limiter_priority"] is True
        after = bucket._read()
        assert after.priority_issued > 0 and after.issued == before.issued
        routes = notion_sandbox.stats()["requests_by_route"]
        assert not [route for route in routes if "/v1/pages" in route]  # nothing changed: no page request


def test_failure_check_threshold() -> None:
    batch = {"run_id": "r", "status": "succeeded", "error_summary": None, "processed": 200, "failed": 2}
    assert failure_check_result(batch).passed
    assert not failure_check_result({**batch, "failed": 3}).passed
    assert not failure_check_result(None).passed


def _notion_alone(resources: dict, instance, partition: str):
    """`notion/Account` selected alone, as the UI lets one do, with its checks."""
    return materialize(
        assets_for("Account"),
        selection=AssetSelection.assets(AssetKey(["notion", "Account"])),
        partition_key=partition,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def test_notion_for_a_day_never_staged_fails(resources: dict) -> None:
    """A day whose salesforce/<Object> was never materialized must not look synced (0 records, green)."""
    never_staged, empty_day = "2026-11-19", "2026-10-05"  # the sandbox has no records before 2026-10-22
    with instance_for_test() as instance:
        both = AssetSelection.assets(AssetKey(["salesforce", "Account"]), AssetKey(["notion", "Account"]))
        for day in (PARTITION, empty_day):
            staged = materialize(
                assets_for("Account"),
                selection=both,
                partition_key=day,
                resources=resources,
                instance=instance,
            )
            assert staged.success

        alone = _notion_alone(resources, instance, never_staged)
        assert not alone.success
        (failure,) = [e for e in alone.all_events if e.is_step_failure]
        message = failure.step_failure_data.user_failure_data.description
        assert message == (
            "salesforce/Account was never staged for 2026-11-19: materialize salesforce/Account for "
            "2026-11-19 first, or both assets in one run (the sync_Account job does)"
        )
        report = load_report(resources["staging"].path, object_name="Account")
        assert never_staged not in {p.partition for p in report.partitions}
        assert {PARTITION, empty_day} <= {p.partition for p in report.partitions}

        # Staged with 0 records is a legitimate day: it syncs (nothing) and passes its checks.
        empty = _notion_alone(resources, instance, empty_day)
        assert empty.success and notion_metadata(empty, "Account")["records"] == 0
        assert all(e.passed for e in empty.get_asset_check_evaluations())

        # The check flags a day that was never staged, e.g. one synced "green" before this rule.
        job = define_asset_job(
            "checks_only",
            selection=AssetSelection.checks_for_assets(AssetKey(["notion", "Account"])),
            partitions_def=daily_partitions(CONFIG.objects["Account"]),
        )
        defs = Definitions(assets=assets_for("Account"), jobs=[job], resources=resources)
        # The partition as a tag: Dagster 1.13 validates `partition_key` against the selected assets'
        # partitions, and a checks-only selection has no asset.
        check = defs.resolve_job_def("checks_only").execute_in_process(
            instance=instance, tags={"dagster/partition": never_staged}
        )
        evaluations = {e.check_name: e for e in check.get_asset_check_evaluations()}
        assert evaluations["salesforce_day_staged"].passed is False
        assert (
            "materialize salesforce/Account for 2026-11-19"
            in evaluations["salesforce_day_staged"].description
        )
