"""Polling (the path of realtime objects without change events) against the sandbox over HTTPS."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from dagster import DagsterRunStatus, RunRequest, instance_for_test

from notion_sync.automation.changes import ChangeCursor
from notion_sync.automation.modstamps import touched_days
from notion_sync.automation.realtime import RealtimeCursor
from notion_sync.notion.sync import page_salesforce_id
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync_tests.realtime_helpers import POLLING, Ticker
from notion_sync_tests.sandbox_resources import sandbox_resources


@pytest.fixture
def salesforce(own_salesforce_sandbox) -> SalesforceResource:
    env = own_salesforce_sandbox.env()
    return SalesforceResource(
        instance_url=env["SALESFORCE_INSTANCE_URL"],
        session_id=env["SALESFORCE_SESSION_ID"],
        ca_bundle=env["SALESFORCE_CA_BUNDLE"],
    )


def polled(cursor: str) -> ChangeCursor:
    return ChangeCursor.parse(RealtimeCursor.parse(cursor).objects["Account"].poll)


def test_touched_days_span_oldest_to_newest():
    assert touched_days("2026-11-20T23:59:59.999+0000", "2026-11-22T00:00:00.000+0000") == [
        "2026-11-20",
        "2026-11-21",
        "2026-11-22",
    ]
    assert touched_days("2026-11-20T01:00:00.000+0000", "2026-11-20T02:00:00.000+0000") == ["2026-11-20"]


@pytest.fixture
def tick(salesforce):
    with instance_for_test() as instance:
        yield Ticker(instance, salesforce, config=POLLING)


def test_launches_only_when_something_changed(own_salesforce_sandbox, tick):
    assert tick.sensor.minimum_interval_seconds == 15 and tick.sensor.job_name == "sync_Account"
    first = tick(None)
    assert not first.run_requests and first.cursor  # starts at the newest modstamp, launches nothing
    quiet = tick(first.cursor)  # its first getDeleted call
    assert not quiet.run_requests and polled(quiet.cursor).seen == polled(first.cursor).seen
    before = own_salesforce_sandbox.stats()
    assert not tick(quiet.cursor).run_requests
    after = own_salesforce_sandbox.stats()
    # one Composite call per quiet tick: the window query, and getDeleted once a minute
    assert after["api_usage"]["used"] - before["api_usage"]["used"] == 1
    assert after["requests"]["composite"] - before["requests"]["composite"] == 1
    assert after["requests"]["composite:queryAll"] - before["requests"]["composite:queryAll"] == 1

    record_id = tick.some_id()
    own_salesforce_sandbox.update("Account", record_id, {"Phone": "+1 555 0100"})
    changed = tick(first.cursor)
    today = datetime.now(UTC).date().isoformat()
    (request,) = changed.run_requests
    assert request.partition_key == today
    assert request.tags["notion_sync/lane"] == "realtime" and request.tags["dagster/priority"] == "10"
    assert polled(changed.cursor).newest > polled(first.cursor).newest

    assert not tick(changed.cursor).run_requests
    own_salesforce_sandbox.delete("Account", record_id)  # deletions count (queryAll)
    deleted = tick(changed.cursor)
    assert [r.partition_key for r in deleted.run_requests] == [today]
    assert deleted.run_requests[0].run_key != request.run_key


def test_waits_while_the_partition_is_being_materialized(own_salesforce_sandbox, tick):
    today = datetime.now(UTC).date().isoformat()
    start = tick(None).cursor
    own_salesforce_sandbox.update("Account", tick.some_id(), {"Phone": "+1 555 0101"})
    running = tick.instance.create_run_for_job(
        tick.defs.resolve_job_def("sync_Account"),
        tags={"dagster/partition": today},
        status=DagsterRunStatus.STARTED,
    )
    waiting = tick(start)
    assert not waiting.run_requests  # the launch waits in the cursor
    assert [launch.day for launch in RealtimeCursor.parse(waiting.cursor).pending] == [today]
    assert not tick(waiting.cursor).run_requests
    tick.instance.report_run_failed(running)
    (launched,) = tick(waiting.cursor).run_requests
    assert launched.partition_key == today


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def test_a_late_commit_within_the_lookback_is_launched_once(own_salesforce_sandbox, tick):
    start = tick(None).cursor
    read_first, committed_late = tick.some_id(0), tick.some_id(1)
    own_salesforce_sandbox.update("Account", read_first, {"Phone": "+1 555 0102"})
    changed = tick(start)
    (first,) = changed.run_requests
    # A transaction that wrote a minute ago commits now: its SystemModstamp is older than the change
    # the sensor has already read.
    late_stamp = _stamp(datetime.now(UTC) - timedelta(minutes=1))
    own_salesforce_sandbox.update("Account", committed_late, {"Phone": "+1 555 0103"}, modstamp=late_stamp)
    late = tick(changed.cursor)
    assert [r.partition_key for r in late.run_requests] == [late_stamp[:10]]
    assert late.run_requests[0].run_key != first.run_key
    assert not tick(late.cursor).run_requests  # the same change is not launched twice
    own_salesforce_sandbox.update("Account", committed_late, {"Phone": "+1 555 0104"})
    assert len(tick(late.cursor).run_requests) == 1  # a later change of the same record is new


def test_a_late_commit_reaches_staging_and_notion(tmp_path, notion_sandbox, own_salesforce_sandbox):
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    with instance_for_test() as instance:
        tick = Ticker(instance, resources["salesforce"], config=POLLING, resources=resources)
        launch = tick.launch
        cursor = tick(None).cursor
        read_first, committed_late = tick.some_id(0), tick.some_id(1)
        own_salesforce_sandbox.update("Account", read_first, {"Phone": "+1 555 0105"})
        changed = tick(cursor)
        launch(changed)
        late_stamp = _stamp(datetime.now(UTC) - timedelta(minutes=1))
        own_salesforce_sandbox.update(
            "Account", committed_late, {"Phone": "+1 555 0106"}, modstamp=late_stamp
        )
        late = tick(changed.cursor)
        assert len(late.run_requests) == 1
        launch(late)
        assert not tick(late.cursor).run_requests
    with resources["staging"].connect(read_only=True) as conn:
        staged = conn.execute("SELECT Phone FROM stg_account WHERE Id = ?", [committed_late]).fetchall()
    assert staged == [("+1 555 0106",)]
    (source_id,) = notion_sandbox.stats()["pages_by_data_source"]
    pages = {page_salesforce_id(page): page for page in notion_sandbox.pages(source_id)}
    assert pages[committed_late]["properties"]["Phone"]["phone_number"] == "+1 555 0106"


def test_a_hard_deleted_record_is_trashed_by_the_next_incremental_pass(
    tmp_path, notion_sandbox, own_salesforce_sandbox
):
    """Purged records are invisible to queryAll: getDeleted finds them, not the weekly reconcile."""
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    with instance_for_test() as instance:
        tick = Ticker(instance, resources["salesforce"], config=POLLING, resources=resources)
        tick.launch(SimpleNamespace(run_requests=[RunRequest(partition_key="2026-11-20")]))
        (source_id,) = notion_sandbox.stats()["pages_by_data_source"]
        purged = sorted(page_salesforce_id(page) for page in notion_sandbox.pages(source_id))[0]
        cursor = tick(None).cursor
        purged_at = _stamp(datetime.now(UTC) - timedelta(minutes=2))
        own_salesforce_sandbox.delete("Account", purged, hard=True, modstamp=purged_at)
        deleted = tick(cursor)
        assert [r.partition_key for r in deleted.run_requests] == [purged_at[:10]]
        tick.launch(deleted)
        assert not tick(deleted.cursor).run_requests  # launched once
    with resources["staging"].connect(read_only=True) as conn:
        staged = conn.execute(
            "SELECT IsDeleted, _partition::VARCHAR FROM stg_account WHERE Id = ?", [purged]
        ).fetchall()
    assert staged == [(True, purged_at[:10])]
    pages = {page_salesforce_id(p): p for p in notion_sandbox.pages(source_id, include_trashed=True)}
    assert pages[purged]["in_trash"] is True
