"""The realtime lane on Change Data Capture: `realtime_changes` against the sandbox's Pub/Sub API."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from dagster import DagsterRunStatus, instance_for_test

from notion_sync.automation.realtime import REPLAYS_TAG, ObjectState, RealtimeCursor, describe_paths
from notion_sync.config import RealtimeConfig, parse_config
from notion_sync.notion.sync import page_salesforce_id
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.sandbox.sf_data import format_datetime
from notion_sync_tests.realtime_helpers import Ticker
from notion_sync_tests.sandbox_resources import salesforce_resource, sandbox_resources


@pytest.fixture
def salesforce(own_salesforce_sandbox) -> SalesforceResource:
    return salesforce_resource(own_salesforce_sandbox)


@pytest.fixture
def tick(salesforce):
    with instance_for_test() as instance:
        yield Ticker(instance, salesforce)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def used(sandbox: SalesforceSandbox) -> int:
    """API calls charged to the org's daily budget so far."""
    return sandbox.stats()["api_usage"]["used"]


def positioned(sandbox: SalesforceSandbox, record_id: str) -> str:
    """A cursor whose Account replay id is that of an edit made now (as a previous tick stored it)."""
    sandbox.update("Account", record_id, {"Phone": "+1 555 0199"})
    event = sandbox.bus._events[-1]
    state = ObjectState(replay=event.replay.to_bytes(8, "big").hex(), modstamp=format_datetime(event.time_ms))
    return RealtimeCursor(objects={"Account": state}).dump()


def state_of(cursor: str, name: str = "Account") -> ObjectState:
    return RealtimeCursor.parse(cursor).objects[name]


def test_the_first_event_gives_the_position_then_events_cost_no_api_call(own_salesforce_sandbox, tick):
    record_id = tick.some_id()
    # No position yet: the tick subscribes at LATEST and polls; an edit during its listen is an event.
    timer = threading.Timer(0.5, own_salesforce_sandbox.update, ("Account", record_id, {"Phone": "1"}))
    timer.start()
    first = tick(None)
    timer.join()
    assert state_of(first.cursor).replay  # positioned by the event
    (request,) = first.run_requests
    assert request.partition_key == today() and request.run_key.startswith("cdc:Account:")
    assert request.tags["notion_sync/lane"] == "realtime" and request.tags["dagster/priority"] == "10"

    before = used(own_salesforce_sandbox)
    own_salesforce_sandbox.update("Account", record_id, {"Phone": "2"})
    second = tick(first.cursor)
    assert [r.partition_key for r in second.run_requests] == [today()]
    quiet = tick(second.cursor)
    assert not quiet.run_requests and "Account [cdc]" in quiet.skip_message
    assert used(own_salesforce_sandbox) == before  # change events cost no API request


def test_an_edit_reaches_notion_through_change_events(tmp_path, notion_sandbox, own_salesforce_sandbox):
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    with instance_for_test() as instance:
        tick = Ticker(instance, resources["salesforce"], resources=resources)
        record_id = tick.some_id(3)
        cursor = positioned(own_salesforce_sandbox, tick.some_id(4))
        own_salesforce_sandbox.update("Account", record_id, {"Phone": "+1 555 0200"})
        before = used(own_salesforce_sandbox)
        changed = tick(cursor)
        assert used(own_salesforce_sandbox) == before
        assert [r.partition_key for r in changed.run_requests] == [today()]
        tick.launch(changed)
    (source_id,) = notion_sandbox.stats()["pages_by_data_source"]
    pages = {page_salesforce_id(page): page for page in notion_sandbox.pages(source_id)}
    assert pages[record_id]["properties"]["Phone"]["phone_number"] == "+1 555 0200"


def test_a_delete_event_trashes_the_page(tmp_path, notion_sandbox, own_salesforce_sandbox):
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    with instance_for_test() as instance:
        tick = Ticker(instance, resources["salesforce"], resources=resources)
        cursor = positioned(own_salesforce_sandbox, tick.some_id(4))
        record_id = own_salesforce_sandbox.create("Account", {"Name": "Deleted through CDC"})
        created = tick(cursor)
        tick.launch(created)
        own_salesforce_sandbox.delete("Account", record_id)
        deleted = tick(created.cursor)
        assert [r.partition_key for r in deleted.run_requests] == [today()]
        tick.launch(deleted)
    (source_id,) = notion_sandbox.stats()["pages_by_data_source"]
    pages = {page_salesforce_id(p): p for p in notion_sandbox.pages(source_id, include_trashed=True)}
    assert pages[record_id]["in_trash"] is True


def _replay(hex_id: str) -> int:
    return int(hex_id, 16)


def test_a_restart_mid_burst_of_500_edits_loses_none_and_launches_none_twice(
    own_salesforce_sandbox, salesforce
):
    sandbox = own_salesforce_sandbox
    config = RealtimeConfig(listen_seconds=1.0, events_per_tick=120)
    with instance_for_test() as instance:
        first = Ticker(instance, salesforce, config=config)
        ids = [first.some_id(n) for n in range(20)]
        cursor = positioned(sandbox, ids[0])
        start = sandbox.bus.latest

        def burst() -> None:
            for n in range(500):
                sandbox.update("Account", ids[n % len(ids)], {"Phone": f"+1 555 {n:04d}"})

        editing = threading.Thread(target=burst)
        editing.start()
        launched: dict[str, str] = {}  # run key -> the replay ids behind it
        for _ in range(2):
            result = first(cursor)
            launched |= {r.run_key: r.tags[REPLAYS_TAG] for r in result.run_requests}
            cursor = result.cursor
        # The process dies in the middle of a tick: what it read is never stored.
        lost = first(cursor)
        # A new process (new sensor, new gRPC channel) resumes from the stored cursor.
        second = Ticker(instance, salesforce, config=config)
        again = second(cursor)
        assert {r.run_key for r in lost.run_requests} <= {r.run_key for r in again.run_requests}
        launched |= {r.run_key: r.tags[REPLAYS_TAG] for r in again.run_requests}
        cursor = again.cursor
        editing.join()
        for _ in range(10):
            result = second(cursor)
            launched |= {r.run_key: r.tags[REPLAYS_TAG] for r in result.run_requests}
            cursor = result.cursor
            if not result.run_requests:
                break
    events = [e.replay for e in sandbox.bus._events if e.replay > start and e.entity == "Account"]
    assert len(events) == 500
    ranges = sorted(tuple(_replay(part) for part in replays.split("-")) for replays in launched.values())
    covering = {replay: [r for r in ranges if r[0] <= replay <= r[1]] for replay in events}
    assert all(len(found) == 1 for found in covering.values())  # every edit in exactly one run
    assert len(launched) == len(ranges) >= 5  # 120 events a tick at most: several runs


def test_an_expired_replay_id_falls_back_to_a_window_query(own_salesforce_sandbox, tick):
    sandbox = own_salesforce_sandbox
    cursor = positioned(sandbox, tick.some_id(5))
    changed_meanwhile = tick.some_id(6)
    sandbox.update("Account", changed_meanwhile, {"Phone": "+1 555 0300"})
    sandbox.advance_clock(73 * 3600)  # the subscriber was away longer than the 72-hour retention
    expired = tick(cursor)
    assert not expired.run_requests and "replay id expired" in expired.skip_message
    assert state_of(expired.cursor).replay is None
    before = used(sandbox)
    fallback = tick(expired.cursor)  # window query from the last known SystemModstamp, LATEST stream
    assert used(sandbox) == before + 1  # one Composite call
    (request,) = fallback.run_requests
    assert request.partition_key == today() and request.run_key.startswith("changes:Account:")
    assert state_of(fallback.cursor).poll  # polling until the first event gives a position
    timer = threading.Timer(0.5, sandbox.update, ("Account", changed_meanwhile, {"Phone": "x"}))
    timer.start()
    resumed = tick(fallback.cursor)
    timer.join()
    assert state_of(resumed.cursor).replay and state_of(resumed.cursor).poll is None


def test_gap_and_overflow_events_re_read_the_records_and_window(own_salesforce_sandbox, tick):
    sandbox = own_salesforce_sandbox
    cursor = positioned(sandbox, tick.some_id(7))
    old = [tick.some_id(10), tick.some_id(60)]  # base records: SystemModstamps days ago
    old_days = sorted({sandbox.get("Account", i)["SystemModstamp"][:10] for i in old})
    sandbox.bus.publish_gap("Account", old, "GAP_UPDATE")
    before = sandbox.stats()["requests"].get("queryAll", 0)
    gap = tick(cursor)
    assert sorted(r.partition_key for r in gap.run_requests) == old_days
    assert sandbox.stats()["requests"]["queryAll"] == before + 1  # the records read again
    sandbox.update("Account", tick.some_id(8), {"Phone": "+1 555 0400"})
    sandbox.bus.publish_overflow("Account")
    overflow = tick(gap.cursor)
    assert [r.partition_key for r in overflow.run_requests] == [today()]
    assert sandbox.stats()["requests"]["queryAll"] == before + 2  # the window since the commit


FIVE = parse_config(
    {
        "defaults": {"start_date": "2026-10-01", "mode": "realtime"},
        "objects": {
            "Account": {"title_field": "Name"},
            "Contact": {"title_field": "LastName"},
            "Opportunity": {"title_field": "Name"},
            "Lead": {"title_field": "LastName"},
            "Case": {"title_field": "Subject"},
        },
    }
).objects


def test_objects_without_cdc_are_polled_five_to_one_composite_call(tmp_path):
    with (
        SalesforceSandbox(records=50, workdir=tmp_path / "sf", extra_objects=("Lead", "Case")) as sandbox,
        instance_for_test() as instance,
    ):
        tick = Ticker(instance, salesforce_resource(sandbox), objects=list(FIVE.values()))
        before = sandbox.stats()
        first = tick(None)  # Account and Contact: change events; the other three: not selected for CDC
        after = sandbox.stats()
        assert after["api_usage"]["used"] == before["api_usage"]["used"] + 1  # one call for five polls
        assert after["requests"]["composite:queryAll"] == 5
        paths = dict(line.split(": ", 1) for line in describe_paths(first.cursor))
        assert paths["Account"].startswith("change events (/data/AccountChangeEvent), no position yet")
        for name in ("Opportunity", "Lead", "Case"):
            assert paths[name].startswith("polling (Composite API, five objects a call)")
            assert "NOT_FOUND" in paths[name] and f"{name} [polling" in first.skip_message
        lead = tick.some_id(2, "Lead")
        sandbox.update("Lead", lead, {"Status": "Working - Contacted"})
        used_before = sandbox.stats()["api_usage"]["used"]
        second = tick(first.cursor)
        assert sandbox.stats()["api_usage"]["used"] == used_before + 1
        (request,) = second.run_requests
        assert request.job_name == "sync_Lead" and request.run_key.startswith("changes:Lead:")
        assert request.partition_key == today()


def test_a_spent_delivery_allocation_moves_the_object_to_polling(own_salesforce_sandbox, tick):
    sandbox = own_salesforce_sandbox
    cursor = positioned(sandbox, tick.some_id(5))
    sandbox.set_delivery_allocation(0)
    sandbox.update("Account", tick.some_id(6), {"Phone": "+1 555 0500"})
    spent = tick(cursor)
    state = state_of(spent.cursor)
    assert state.path == "polling" and "exceeded the event delivery limit" in state.reason
    polled = tick(spent.cursor)  # from the last processed change: nothing is lost
    assert [r.partition_key for r in polled.run_requests] == [today()]
    assert polled.run_requests[0].run_key.startswith("changes:Account:")


def test_changes_of_a_day_being_materialized_wait_for_that_run_in_one_launch(own_salesforce_sandbox, tick):
    sandbox = own_salesforce_sandbox
    cursor = positioned(sandbox, tick.some_id(5))
    running = tick.instance.create_run_for_job(
        tick.defs.resolve_job_def("sync_Account"),
        tags={"dagster/partition": today()},
        status=DagsterRunStatus.STARTED,
    )
    sandbox.update("Account", tick.some_id(6), {"Phone": "+1 555 0600"})
    first = tick(cursor)
    assert not first.run_requests and [p.day for p in RealtimeCursor.parse(first.cursor).pending] == [today()]
    sandbox.update("Account", tick.some_id(7), {"Phone": "+1 555 0601"})
    second = tick(first.cursor)
    assert not second.run_requests and len(RealtimeCursor.parse(second.cursor).pending) == 1
    tick.instance.report_run_failed(running)
    (request,) = tick(second.cursor).run_requests
    first_replay, last_replay = (int(part, 16) for part in request.tags[REPLAYS_TAG].split("-"))
    events = [e.replay for e in sandbox.bus._events[-2:]]
    assert first_replay == events[0] and last_replay == events[1]  # both edits, one run
