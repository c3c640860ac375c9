"""`schedule_<Object>` covers every day touched since its last successful tick, against both sandboxes.

The ticks are evaluated as the daemon evaluates them (`build_schedule_context`, `evaluate_tick`,
a persistent instance) and their run requests executed with the requests' partition keys and tags.
"""

from datetime import UTC, datetime

import pytest
import requests
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, build_schedule_context, instance_for_test
from dagster_shared.record import copy

from notion_sync.automation.lanes import lane_tags
from notion_sync.automation.schedules import SCHEDULED_AT_TAG, days_to_sync
from notion_sync.config import load_config
from notion_sync.definitions import build_definitions
from notion_sync.notion.sync import page_salesforce_id
from notion_sync_tests.sandbox_resources import sandbox_resources

SCHEDULE = "schedule_Opportunity"  # the example's `scheduled` object, hourly
LATE_EDIT = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)


def _tick(defs, instance: DagsterInstance, at: datetime):
    # `with`, as the daemon does: the context opens an instance of its own that only `with` closes.
    with build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()
    ) as context:
        return defs.resolve_schedule_def(SCHEDULE).evaluate_tick(context).run_requests


def _execute(defs, instance: DagsterInstance, run_requests) -> None:
    job = defs.resolve_job_def("sync_Opportunity")
    for request in run_requests:
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert result.success


def test_days_since_the_last_successful_tick():
    assert days_to_sync(None, datetime(2026, 11, 21, 0, 0, tzinfo=UTC), 600) == ["2026-11-21"]
    since = datetime(2026, 11, 18, 13, 0, tzinfo=UTC)
    assert days_to_sync(since, datetime(2026, 11, 20, 9, 0, tzinfo=UTC), 600) == [
        "2026-11-18",
        "2026-11-19",
        "2026-11-20",
    ]
    # 600 s back for a transaction that committed after the tick with an earlier SystemModstamp
    after_midnight, next_tick = (
        datetime(2026, 11, 21, 0, 5, tzinfo=UTC),
        datetime(2026, 11, 21, 1, 0, tzinfo=UTC),
    )
    assert days_to_sync(after_midnight, next_tick, 600) == ["2026-11-20", "2026-11-21"]
    assert days_to_sync(after_midnight, next_tick, 0) == ["2026-11-21"]


def test_a_tick_whose_run_failed_is_covered_again():
    defs = build_definitions(load_config())
    with instance_for_test() as instance:

        def record(tick: datetime, day: str, status: DagsterRunStatus) -> None:
            tags = {**lane_tags("scheduled"), SCHEDULED_AT_TAG: tick.isoformat(), "dagster/partition": day}
            instance.add_run(DagsterRun(job_name="sync_Opportunity", status=status, tags=tags))

        record(datetime(2026, 11, 19, 12, 0, tzinfo=UTC), "2026-11-19", DagsterRunStatus.SUCCESS)
        failed_tick = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
        record(failed_tick, "2026-11-19", DagsterRunStatus.FAILURE)
        record(failed_tick, "2026-11-20", DagsterRunStatus.SUCCESS)
        keys = [r.partition_key for r in _tick(defs, instance, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))]
        assert keys == ["2026-11-19", "2026-11-20"]  # from the 19th's noon tick, the last that succeeded
        record(failed_tick, "2026-11-19", DagsterRunStatus.SUCCESS)  # re-executed: the tick succeeded
        keys = [r.partition_key for r in _tick(defs, instance, datetime(2026, 11, 20, 7, 0, tzinfo=UTC))]
        assert keys == ["2026-11-20"]


def test_a_tick_waits_while_one_of_its_days_is_being_materialized(defs):
    tick = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    with instance_for_test() as instance:
        running = instance.create_run_for_job(
            defs.resolve_job_def("sync_Opportunity"),
            tags={"dagster/partition": "2026-11-20"},
            status=DagsterRunStatus.STARTED,
        )
        with build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        ) as context:
            waiting = defs.resolve_schedule_def(SCHEDULE).evaluate_tick(context)
        assert not waiting.run_requests
        assert waiting.skip_message == (
            "waiting for Opportunity partitions ['2026-11-20']: the next tick covers them"
        )
        instance.report_run_failed(running)
        assert [r.partition_key for r in _tick(defs, instance, tick)] == ["2026-11-20"]


@pytest.fixture
def defs(tmp_path, notion_sandbox, own_salesforce_sandbox):
    return copy(
        build_definitions(load_config()),
        resources=sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path),
    )


def test_a_change_at_23_30_reaches_notion_with_the_next_day_tick(
    defs, notion_sandbox, own_salesforce_sandbox
):
    with instance_for_test() as instance:
        # Opportunity's relation needs the Account database: Account is synced by its change sensor.
        account = defs.resolve_job_def("sync_Account")
        assert account.execute_in_process(instance=instance, partition_key="2026-11-20").success
        first = _tick(defs, instance, datetime(2026, 11, 20, 23, 0, tzinfo=UTC))
        assert [r.partition_key for r in first] == ["2026-11-20"]
        _execute(defs, instance, first)

        # A user edits an Opportunity at 23:30 UTC, after the day's last hourly run.
        own_salesforce_sandbox.data.clock = LATE_EDIT.timestamp
        sf = defs.resources["salesforce"].get_client().sf
        record_id = sf.query("SELECT Id FROM Opportunity ORDER BY Id LIMIT 1")["records"][0]["Id"]
        response = requests.post(
            f"{own_salesforce_sandbox.url}/_sandbox/records/Opportunity/{record_id}",
            json={"Name": "Signed at 23:30"},
            verify=str(own_salesforce_sandbox.ca_file),
            timeout=10,
        )
        response.raise_for_status()
        assert response.json()["SystemModstamp"] == "2026-11-20T23:30:00.000+0000"

        next_day = _tick(defs, instance, datetime(2026, 11, 21, 0, 0, tzinfo=UTC))
        assert [r.partition_key for r in next_day] == ["2026-11-20", "2026-11-21"]
        assert len({r.run_key for r in next_day}) == 2
        assert all(r.tags["notion_sync/lane"] == "scheduled" for r in next_day)
        _execute(defs, instance, next_day)

    with defs.resources["staging"].connect(read_only=True) as conn:
        staged = conn.execute(
            "SELECT Name, _partition FROM stg_opportunity WHERE Id = ?", [record_id]
        ).fetchall()
    assert [(name, day.isoformat()) for name, day in staged] == [("Signed at 23:30", "2026-11-20")]
    pages = [
        page
        for source_id in notion_sandbox.stats()["pages_by_data_source"]
        for page in notion_sandbox.pages(source_id)
        if page_salesforce_id(page) == record_id
    ]
    assert [page["properties"]["Name"]["title"][0]["plain_text"] for page in pages] == ["Signed at 23:30"]
