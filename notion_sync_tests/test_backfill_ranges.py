"""Backfills in ranges: a run takes up to `max_partitions_per_run` days, and every day is still
recorded, checked and retried on its own (notion_sync.ranges).

The first test goes through Dagster's own asset backfill logic (the daemon's `execute_backfill_iteration`,
runs launched in this process) against both sandboxes; the second fails a range on its 17th day
(Notion answers 429 to every page create from then on).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    RetryPolicy,
    build_sensor_context,
    define_asset_job,
    in_process_executor,
    instance_for_test,
)
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import PythonFileTarget
from dagster._daemon.backfill import execute_backfill_iteration

from notion_sync import staging
from notion_sync.automation import sensors
from notion_sync.automation.jobs import sync_job
from notion_sync.config import SyncConfig, parse_config
from notion_sync.notion import assets as notion_assets
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.checks import build_notion_checks
from notion_sync.notion.resource import NotionResource
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.salesforce.checks import build_salesforce_checks
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync_tests.sandbox_resources import salesforce_resource, sandbox_resources

DAYS = 60
END = datetime(2026, 11, 21, tzinfo=UTC)  # the sandbox data's default end
KEYS = [(END - timedelta(days=DAYS - n)).date().isoformat() for n in range(DAYS)]
PER_RUN = 25
OBJECTS = ("Account", "Contact")
CHECKS = {
    "salesforce": ("row_count_matches_salesforce", "id_unique"),
    "notion": ("failure_rate_below_1_percent",),
}


def config_data() -> dict:
    return {
        "defaults": {"start_date": KEYS[0], "max_partitions_per_run": PER_RUN},
        "objects": {
            "Account": {
                "notion": {"title": "Accounts"},
                "title_field": "Name",
                "fields": {"Name": "Name", "Industry": "Industry", "AnnualRevenue": "Annual Revenue"},
            },
            "Contact": {
                "notion": {"title": "Contacts"},
                "title_field": "Name",
                "fields": {"Name": "Name", "Email": "Email"},
                "relations": {"AccountId": "Account"},
            },
        },
    }


@pytest.fixture
def salesforce(tmp_path: Path) -> Iterator[SalesforceSandbox]:
    """60 days of 120 Accounts and 240 Contacts (about 2 and 4 a day); valid emails only."""
    with SalesforceSandbox(
        records=120, seed=11, days=DAYS, invalid_emails=False, workdir=tmp_path / "salesforce"
    ) as sandbox:
        yield sandbox


def salesforce_days(sandbox: SalesforceSandbox, object_name: str) -> tuple[Counter[str], Counter[str]]:
    """Records (deleted included) and live records per UTC day of SystemModstamp, read from Salesforce."""
    sf = salesforce_resource(sandbox).get_client().sf
    query = f"SELECT SystemModstamp, IsDeleted FROM {object_name}"
    total: Counter[str] = Counter()
    live: Counter[str] = Counter()
    for record in sf.query_all_iter(query, include_deleted=True):
        day = record["SystemModstamp"][:10]
        total[day] += 1
        live[day] += not record["IsDeleted"]
    return total, live


def statuses(instance: DagsterInstance, config: SyncConfig, system: str, name: str) -> dict[str, str]:
    partitions_def = daily_partitions(config.objects[name])
    found = instance.get_status_by_partition(AssetKey([system, name]), KEYS, partitions_def) or {}
    return {key: status.value if status else "MISSING" for key, status in found.items()}


def check_results(instance: DagsterInstance, run_ids: list[str]) -> dict[tuple[str, str, str], bool]:
    """(asset, check, partition) -> passed, over the runs' check evaluations."""
    results = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            key = (evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.partition)
            results[key] = evaluation.passed
    return results


def staged_per_day(staging_path: str, table: str) -> Counter[str]:
    from notion_sync import staging

    with staging.connect(staging_path, read_only=True) as conn:
        rows = conn.execute(f"SELECT _partition, count(*) FROM {table} GROUP BY _partition").fetchall()
    return Counter({day.isoformat(): count for day, count in rows})


@pytest.fixture
def sandbox_env(
    salesforce: SalesforceSandbox, notion_sandbox: NotionSandbox, tmp_path: Path, monkeypatch
) -> SyncConfig:
    """The environment of a deployment pointed at both sandboxes with the 60-day config."""
    config_file = tmp_path / "sync.yaml"
    config_file.write_text(yaml.safe_dump(config_data()))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)  # would override the sandbox's CA file
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    for name, value in {
        **salesforce.env(),
        **notion_sandbox.env(),
        "NOTION_SYNC_CONFIG": str(config_file),
        "NOTION_SYNC_DUCKDB": str(tmp_path / "staging.duckdb"),
        "NOTION_RATE_LIMIT_PATH": str(tmp_path / "limiter.sqlite"),
    }.items():
        monkeypatch.setenv(name, value)
    return parse_config(config_data())


@pytest.mark.timeout(600)
def test_backfill_of_60_days_runs_in_ranges_and_reports_every_day(
    sandbox_env: SyncConfig, salesforce: SalesforceSandbox, tmp_path: Path
) -> None:
    config = sandbox_env
    # The project's Definitions, loaded as a code location the way `dagster dev` loads it.
    definitions_file = tmp_path / f"defs_{uuid.uuid4().hex}.py"
    definitions_file.write_text(
        "from notion_sync.config import load_config\n"
        "from notion_sync.definitions import build_definitions\n"
        "defs = build_definitions(load_config())\n"
    )
    overrides = {
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "run_launcher": {
            "module": "dagster._core.launcher.sync_in_memory_run_launcher",
            "class": "SyncInMemoryRunLauncher",
        },
    }
    salesforce.reset_stats()
    with (
        instance_for_test(overrides=overrides) as instance,
        create_test_daemon_workspace_context(
            PythonFileTarget(
                python_file=str(definitions_file),
                attribute="defs",
                working_directory=str(tmp_path),
                location_name="notion_sync",
            ),
            instance,
        ) as workspace,
    ):
        asset_keys = [AssetKey([system, name]) for name in OBJECTS for system in ("salesforce", "notion")]
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="years",
            asset_graph=workspace.create_request_context().asset_graph,
            partition_names=KEYS,
            asset_selection=asset_keys,
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        for _ in range(6):  # each iteration launches the runs whose parents are done; they run at once
            list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
            if instance.get_backfill("years").status != BulkActionStatus.REQUESTED:
                break
        assert instance.get_backfill("years").status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs()
        assert 0 < len(runs) <= 2 * math.ceil(DAYS / PER_RUN), len(runs)
        ranges = sorted(
            (run.tags[ASSET_PARTITION_RANGE_START_TAG], run.tags[ASSET_PARTITION_RANGE_END_TAG])
            for run in runs
        )
        assert {start for start, _ in ranges} >= {KEYS[0], KEYS[PER_RUN], KEYS[2 * PER_RUN]}, ranges

        for name in OBJECTS:
            for system in ("salesforce", "notion"):
                assert set(statuses(instance, config, system, name).values()) == {"MATERIALIZED"}, (
                    system,
                    name,
                )
            total, _ = salesforce_days(salesforce, name)
            staged = staged_per_day(str(tmp_path / "staging.duckdb"), config.objects[name].staging_table)
            assert staged == total and sum(staged.values()) >= 2 * DAYS, name
            # Each day's materialization carries that day's own figures.
            metadata = {
                record.asset_materialization.partition: record.asset_materialization.metadata
                for record in instance.fetch_materializations(
                    AssetKey(["salesforce", name]), limit=1000
                ).records
            }
            assert {day: metadata[day]["rows"].value for day in KEYS} == {day: total[day] for day in KEYS}

        checks = check_results(instance, [run.run_id for run in runs])
        for name in OBJECTS:
            for system, check_names in CHECKS.items():
                for check_name in check_names:
                    days = {
                        day
                        for (asset, check, day) in checks
                        if (asset, check) == (f"{system}/{name}", check_name)
                    }
                    assert days == set(KEYS), (system, name, check_name)
        assert all(checks.values()), [key for key, passed in checks.items() if not passed]

    # One describe, one COUNT and one query (REST at this volume) per range and object, plus the
    # checks' per-day COUNTs: far from three calls a day.
    requests = salesforce.stats()["requests"]
    print(f"{len(runs)} runs for {DAYS} days of {len(OBJECTS)} objects; Salesforce requests: {requests}")


def range_definitions(config: SyncConfig, resources: dict) -> Definitions:
    obj = config.objects["Account"]
    return Definitions(
        assets=[build_salesforce_asset(obj), build_notion_asset(obj, [])],
        asset_checks=[*build_salesforce_checks(obj), *build_notion_checks(obj)],
        jobs=[sync_job(obj)],
        resources=resources,
        executor=in_process_executor,
    )


def range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


@pytest.mark.timeout(600)
def test_range_failing_on_day_17_is_retried_from_day_17(
    salesforce: SalesforceSandbox, notion_sandbox: NotionSandbox, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    # The step's own retries (RetryPolicy) without their 30 s delay: they must resume at day 17 too.
    monkeypatch.setattr(notion_assets, "SYNC_RETRY_POLICY", RetryPolicy(max_retries=2))
    config = parse_config(config_data())
    resources = sandbox_resources(salesforce, notion_sandbox, tmp_path)
    resources["notion"] = NotionResource(**{**resources["notion"].model_dump(), "max_retries": 1})
    job = range_definitions(config, resources).resolve_job_def("sync_Account")
    days = KEYS[:30]
    _, live = salesforce_days(salesforce, "Account")
    # Every page create from the 17th day on is refused (429) until the faults are cleared.
    notion_sandbox.inject(
        status=429,
        retry_after=1,
        count=100_000,
        path_prefix="/v1/pages",
        method="POST",
        after=sum(live[day] for day in days[:16]),
    )
    assert live[days[16]] > 0
    with instance_for_test() as instance:
        failed = job.execute_in_process(
            instance=instance,
            tags=range_tags(days[0], days[-1]),
            raise_on_error=False,
        )
        assert not failed.success
        # Three attempts of the Notion step, each stopped by day 17: the first synced days 1-16, the
        # retries resumed at day 17 instead of redoing them (one materialization each).
        synced = Counter(
            event.partition
            for event in failed.get_asset_materialization_events()
            if event.asset_key == AssetKey(["notion", "Account"])
        )
        assert synced == Counter(days[:16])
        assert len([e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == 2
        notion = statuses(instance, config, "notion", "Account")
        assert [notion[day] for day in days] == ["MATERIALIZED"] * 16 + ["FAILED"] * 14
        assert {statuses(instance, config, "salesforce", "Account")[day] for day in days} == {"MATERIALIZED"}

        # The retry sensor asks for exactly the days left.
        notion_sandbox.clear_faults()
        monkeypatch.setattr(sensors, "clock", lambda: time.time() + 3_600)  # past every backoff
        sensor = sensors.build_retry_sensor(config)
        result = sensor(
            build_sensor_context(instance=instance, definitions=range_definitions(config, resources))
        )
        assert sorted(request.partition_key for request in result.run_requests) == days[16:]

        # Re-executed (the run page's "Re-execute from failure", or Dagster's run_retries): the run
        # resumes at day 17, and only days 17-30 are written.
        notion_sandbox.reset_stats()
        parent = instance.get_run_by_id(failed.run_id)
        rerun = instance.create_run_for_job(
            job_def=job,
            tags=parent.tags,
            parent_run_id=parent.run_id,
            root_run_id=parent.run_id,
            asset_selection=frozenset([AssetKey(["notion", "Account"])]),
        )
        retried = execute_run(InMemoryJob(job), rerun, instance)
        assert retried.success
        creates = notion_sandbox.stats()["requests_by_route"]["POST /v1/pages"]
        assert creates == {"200": sum(live[day] for day in days[16:])}
        # One log line for the range's days (each day's figures are in its materialization).
        summaries = [
            entry.user_message
            for entry in instance.all_logs(rerun.run_id)
            if entry.dagster_event is None and "requests (" in entry.user_message
        ]
        assert len(summaries) == 1 and summaries[0].startswith(f"Account {days[16]}..{days[-1]} (14 days): ")
        assert {statuses(instance, config, "notion", "Account")[day] for day in days} == {"MATERIALIZED"}
        resumed = {
            record.asset_materialization.partition: record.asset_materialization.metadata
            for record in instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(["notion", "Account"]), asset_partitions=days),
                limit=100,
            ).records
            if record.run_id == rerun.run_id
        }
        assert {day for day, metadata in resumed.items() if "resumed_from_run" in metadata} == set(days[:16])
        assert set(resumed) == set(days)
        evaluations = {
            (
                entry.dagster_event.event_specific_data.check_name,
                entry.dagster_event.event_specific_data.partition,
            )
            for entry in instance.all_logs(rerun.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
            if entry.dagster_event.event_specific_data.passed
        }
        assert {day for _, day in evaluations} == set(days)


@pytest.mark.timeout(300)
def test_a_range_checks_row_counts_per_day_with_one_salesforce_call(
    salesforce: SalesforceSandbox, notion_sandbox: NotionSandbox, tmp_path: Path, monkeypatch
) -> None:
    """The row-count check of a 30-day range asks Salesforce once (counts grouped by UTC day), not
    once a day, and still fails exactly the day whose staged rows disagree."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    config = parse_config(config_data())
    obj = config.objects["Account"]
    resources = sandbox_resources(salesforce, notion_sandbox, tmp_path)
    key = AssetKey(["salesforce", "Account"])
    defs = Definitions(
        assets=[build_salesforce_asset(obj)],
        asset_checks=build_salesforce_checks(obj),
        jobs=[
            define_asset_job(
                "stage", selection=AssetSelection.assets(key), partitions_def=daily_partitions(obj)
            ),
            define_asset_job(
                "check", selection=AssetSelection.checks_for_assets(key), partitions_def=daily_partitions(obj)
            ),
        ],
        resources=resources,
        executor=in_process_executor,
    )
    days = KEYS[:30]
    total, _ = salesforce_days(salesforce, "Account")
    with instance_for_test() as instance:
        staged = defs.resolve_job_def("stage").execute_in_process(
            instance=instance, tags=range_tags(days[0], days[-1])
        )
        assert staged.success
        broken = next(day for day in days[5:] if total[day] > 0)
        with staging.connect(tmp_path / "staging.duckdb") as conn:
            conn.execute(
                f"DELETE FROM {obj.staging_table} WHERE Id = (SELECT min(Id) FROM "
                f"{obj.staging_table} WHERE _partition = ?)",
                [broken],
            )
        used = salesforce.stats()["api_usage"]["used"]
        checked = defs.resolve_job_def("check").execute_in_process(
            instance=instance, tags=range_tags(days[0], days[-1]), raise_on_error=False
        )
        calls = salesforce.stats()["api_usage"]["used"] - used
        results = check_results(instance, [checked.run_id])
    row_count = {
        day: passed for (_, check, day), passed in results.items() if check == "row_count_matches_salesforce"
    }
    assert set(row_count) == set(days)
    assert [day for day, passed in row_count.items() if not passed] == [broken]
    assert calls == 1, calls  # the describe is the staging run's, kept an hour; one grouped COUNT
