"""Every schedule and sensor of the example config, ticked as the daemon ticks them.

The daemon evaluates a schedule or sensor with a context that holds a persistent instance and the
code location's repository; here `build_schedule_context` / `build_sensor_context` with a real
instance (`instance_for_test`) and `evaluate_tick`, on the Dagster version the venv resolved. The
names are read from `defs`: a schedule or sensor added to the config or the code without a tick
test here fails `test_every_schedule_and_sensor_has_a_tick_test`.
"""

import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import requests
from dagster import (
    DagsterInstance,
    Definitions,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from dagster_shared.record import copy

from notion_sync.automation.lanes import LANE_TAG, PRIORITY_TAG
from notion_sync.config import load_config
from notion_sync.definitions import build_definitions
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync_tests.sandbox_resources import salesforce_resource, sandbox_resources

CONFIG = load_config()
REPO = build_definitions(CONFIG).get_repository_def()
SCHEDULES = sorted(s.name for s in REPO.schedule_defs)
SENSORS = sorted(s.name for s in REPO.sensor_defs)
TICK = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)


@dataclasses.dataclass
class Env:
    defs: Definitions
    instance: DagsterInstance
    salesforce: SalesforceSandbox
    notion: NotionSandbox

    def tick_schedule(self, name: str, at: datetime = TICK):
        # A schedule context opens its own instance from the ref; only `with` closes it (and restores
        # the context-local state Dagster sets for it), as the daemon does.
        with build_schedule_context(
            instance=self.instance, scheduled_execution_time=at, repository_def=self.defs.get_repository_def()
        ) as context:
            return self.defs.resolve_schedule_def(name).evaluate_tick(context)

    def tick_sensor(self, name: str, cursor: str | None = None):
        repo = self.defs.get_repository_def()
        context = build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            sensor_name=name,
            repository_name=repo.name,  # as the daemon's context: it names the code location's repository
            repository_def=repo,
            resources=self.defs.resources,
        )
        return self.defs.resolve_sensor_def(name).evaluate_tick(context)


@pytest.fixture
def env(tmp_path, notion_sandbox, own_salesforce_sandbox) -> Iterator[Env]:
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    defs = copy(build_definitions(CONFIG), resources=resources)
    with instance_for_test() as instance:
        yield Env(defs, instance, own_salesforce_sandbox, notion_sandbox)


def _object_schedule(env: Env, name: str) -> None:
    """A first tick (no scheduled run succeeded yet) syncs the tick's own day in the scheduled lane."""
    result = env.tick_schedule(name)
    (request,) = result.run_requests
    assert request.partition_key == "2026-11-20"
    assert request.tags[LANE_TAG] == "scheduled" and request.tags[PRIORITY_TAG] == "0"
    assert request.run_key and "2026-11-20" in request.run_key
    again = env.tick_schedule(name)
    assert [r.run_key for r in again.run_requests] == [request.run_key]  # same tick: same run key
    early = env.tick_schedule(name, datetime(2026, 9, 30, 12, 0, tzinfo=UTC))
    assert not early.run_requests
    assert early.skip_message == "2026-09-30T12:00:00+00:00 is before the first partition (2026-10-01)"


def _reconcile_schedule(env: Env, name: str) -> None:
    schedule = env.defs.resolve_schedule_def(name)
    assert schedule.job_name == "reconcile_" + name.removeprefix("reconcile_").removesuffix("_weekly")
    (request,) = env.tick_schedule(name).run_requests
    assert request.partition_key is None


def _formula_refresh_schedule(env: Env, name: str) -> None:
    """By default with the weekly reconcile (objects.<Object>.formula_refresh overrides the cron)."""
    schedule = env.defs.resolve_schedule_def(name)
    object_name = name.removeprefix("refresh_formulas_").removesuffix("_schedule")
    assert schedule.job_name == f"refresh_formulas_{object_name}"
    assert (
        schedule.cron_schedule
        == env.defs.resolve_schedule_def(f"reconcile_{object_name}_weekly").cron_schedule
    )
    (request,) = env.tick_schedule(name).run_requests
    assert request.partition_key is None


def _realtime_sensor(env: Env, name: str) -> None:
    """The first tick polls (recording the newest modstamps) and subscribes at LATEST; an edit (admin
    API) during the next tick's listen arrives as a change event and launches the edit's day."""
    first = env.tick_sensor(name)
    assert not first.run_requests and "started at" in first.skip_message
    assert "Account [cdc]" in first.skip_message and "Contact [cdc]" in first.skip_message
    record_id = _any_record_id(env.salesforce, "Account")
    edited: list[str] = []

    def edit() -> None:
        response = requests.post(
            f"{env.salesforce.url}/_sandbox/records/Account/{record_id}",
            json={"Description": "edited by the tick test"},
            verify=str(env.salesforce.ca_file),
            timeout=10,
        )
        edited.append(response.json()["SystemModstamp"][:10])

    timer = threading.Timer(1.0, edit)
    timer.start()
    second = env.tick_sensor(name, first.cursor)
    timer.join()
    assert edited and edited[0] in {r.partition_key for r in second.run_requests}
    assert all(r.tags[LANE_TAG] == "realtime" and r.job_name == "sync_Account" for r in second.run_requests)


def _any_record_id(sandbox: SalesforceSandbox, object_name: str) -> str:
    sf = salesforce_resource(sandbox).get_client().sf
    return sf.query(f"SELECT Id FROM {object_name} ORDER BY Id LIMIT 1")["records"][0]["Id"]


def _retry_sensor(env: Env, name: str) -> None:
    result = env.tick_sensor(name)
    assert not result.run_requests
    assert result.skip_message == "0 failed partitions, none due for a retry (0 alerts)"


def _health_sensor(env: Env, name: str) -> None:
    result = env.tick_sensor(name)
    assert not result.run_requests
    assert result.skip_message.startswith("0/0 runs failed") and "active alerts: none" in result.skip_message


def _failed_run_id(env: Env) -> str:
    """A sync run that fails as launched from a shell: Salesforce refuses the session."""
    bad = {**env.defs.resources, "salesforce": salesforce_resource(env.salesforce, session_id="expired")}
    job = copy(env.defs, resources=bad).resolve_job_def("sync_Account")
    result = job.execute_in_process(instance=env.instance, partition_key="2026-11-20", raise_on_error=False)
    assert not result.success
    return result.run_id


def _run_failure_sensor(env: Env, name: str) -> None:
    """Every failed run is answered, also one launched outside the daemon (no code location origin)."""
    first = env.tick_sensor(name)
    assert first.skip_message.startswith("Initiating")
    run_id = _failed_run_id(env)
    second = env.tick_sensor(name, first.cursor)
    assert [reaction.dagster_run.run_id for reaction in second.dagster_run_reactions] == [run_id]


def _resync_sensor(env: Env, name: str) -> None:
    """A reconciliation that found a lost page asks for its partition again (backfill lane)."""
    first = env.tick_sensor(name)
    assert first.skip_message.startswith("Initiating")
    partition = "2026-11-20"
    synced = env.defs.resolve_job_def("sync_Account").execute_in_process(
        instance=env.instance, partition_key=partition
    )
    assert synced.success
    with env.defs.resources["notion"].get_client() as client:
        (source_id,) = env.notion.stats()["pages_by_data_source"]
        client.update_page(env.notion.pages(source_id)[0]["id"], in_trash=True)  # deleted by someone
    assert env.defs.resolve_job_def("reconcile_Account").execute_in_process(instance=env.instance).success
    tick = env.tick_sensor(name, first.cursor)
    (request,) = tick.run_requests
    assert request.job_name == "sync_Account" and request.partition_key == partition
    assert request.tags[LANE_TAG] == "backfill"


TICK_TESTS: dict[str, Callable[[Env, str], None]] = {
    "schedule_": _object_schedule,
    "reconcile_resync": _resync_sensor,
    "reconcile_": _reconcile_schedule,
    "refresh_formulas_": _formula_refresh_schedule,
    "realtime_changes": _realtime_sensor,
    "notion_sync_retry": _retry_sensor,
    "notion_sync_health": _health_sensor,
    "notion_sync_run_failure_alert": _run_failure_sensor,
}


def _tick_test(name: str) -> Callable[[Env, str], None] | None:
    return next((test for prefix, test in TICK_TESTS.items() if name.startswith(prefix)), None)


def test_every_schedule_and_sensor_has_a_tick_test():
    assert "schedule_Opportunity" in SCHEDULES  # the example's `scheduled` object
    assert [name for name in SCHEDULES + SENSORS if _tick_test(name) is None] == []


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_tick(env, name):
    _tick_test(name)(env, name)


@pytest.mark.parametrize("name", SENSORS)
def test_sensor_tick(env, name):
    _tick_test(name)(env, name)
