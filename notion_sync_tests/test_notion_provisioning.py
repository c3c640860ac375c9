"""Creating an object's Notion database when runs race, against the sandbox Notion server.

The first runs of a never-synced object may start together (a backfill launches several
partitions at once): one run creates the database under a claim in DuckDB, the others wait for
it to be recorded. Search cannot tell them apart, so without the claim two databases appear.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from test_notion_sync import CONFIG, TYPES, Env, data_sources_titled, make_env

from notion_sync import staging
from notion_sync.notion import state
from notion_sync.notion.client import NotionClient
from notion_sync.notion.errors import AmbiguousWriteError
from notion_sync.notion.properties import property_specs
from notion_sync.notion.resource import NotionResource
from notion_sync.notion.schema import ProvisioningTimeout, database_marker, ensure_data_source
from notion_sync.sandbox.notion_server import NotionSandbox

ACCOUNT = CONFIG.objects["Account"]
SPECS = property_specs(ACCOUNT, TYPES["Account"])
FAST = {"claim_poll_s": 0.02}  # waiters look every ~20 ms instead of ~0.5 s


@pytest.fixture
def env(notion_sandbox: NotionSandbox, tmp_path: Path) -> Env:
    return make_env(notion_sandbox, tmp_path)


def provision(resource: NotionResource, connect: Callable[..., Any], run_id: str, **bounds: Any) -> str:
    """One run's provisioning of Account, with its own client (as a separate run has)."""
    with resource.get_client() as client:
        return ensure_data_source(
            client, connect, ACCOUNT, SPECS, resource.parent_page_id, run_id=run_id, **bounds
        ).data_source_id


def claims(env: Env) -> list[tuple]:
    return env.query("SELECT object, run_id FROM notion_target_claims")


def put_claim(env: Env, run_id: str, age: timedelta) -> None:
    """A claim as a run that is still creating (or crashed while creating) the database leaves it."""
    with env.connect() as conn:
        state.ensure_tables(conn)
        conn.execute("INSERT INTO notion_target_claims VALUES ('Account', ?, ?)", [run_id, state.now() - age])


def assert_one_database(env: Env, data_source_ids: list[str]) -> None:
    [source] = data_sources_titled(env, "Accounts")
    assert set(data_source_ids) == {source}
    assert env.sandbox.stats()["requests_by_route"]["POST /v1/databases"] == {"200": 1}
    assert env.query("SELECT data_source_id FROM notion_targets WHERE object = 'Account'") == [(source,)]
    assert claims(env) == []


def slow_requests(env: Env, seconds: float) -> None:
    """Every request takes about ``seconds`` (real; the sandbox divides latency by its speed)."""
    env.sandbox.set_latency(seconds * 1000 * env.sandbox.speed, jitter_ms=seconds * 250 * env.sandbox.speed)


def open_limiter(env: Env) -> None:
    """Create the rate limiter's SQLite file before a race, as any run but the very first finds it.

    Clients opening a fresh one at once can fail to switch it to WAL ('database is locked').
    """
    env.resource.get_client().close()


def open_staging(env: Env) -> None:
    """Create the DuckDB file before processes race, as the Salesforce extraction did in production.

    A process opening a file another one is creating can find it 'not a valid DuckDB database file'.
    """
    with env.connect():
        pass


def race(calls: list[Callable[[], str]]) -> list[str]:
    """Run ``calls`` in threads released together; their results, re-raising the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as error:  # re-raised in the test's thread
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def test_concurrent_first_runs_create_one_database(env: Env) -> None:
    slow_requests(env, 0.05)  # search and create take a while: the race window
    open_limiter(env)
    calls = [partial(provision, env.resource, env.connect, f"run-{i}", **FAST) for i in range(6)]
    assert_one_database(env, race(calls))


def provision_in_child(args: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """Entry point of a spawned process: one run's provisioning once every racer is ready."""
    resource = NotionResource(**args["resource"])
    ready.put(args["run_id"])
    go.wait(60)
    try:
        result = provision(resource, partial(staging.connect, args["db"]), args["run_id"], **FAST)
    except BaseException as error:
        result = f"error: {error!r}\n{traceback.format_exc()}"
    results.put((args["run_id"], result))


def test_concurrent_processes_and_threads_create_one_database(env: Env) -> None:
    slow_requests(env, 0.2)  # wider: a process may first wait ~100 ms for the DuckDB file lock
    open_limiter(env)
    open_staging(env)
    spawn = multiprocessing.get_context("spawn")
    ready, results, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    children = [
        spawn.Process(
            target=provision_in_child,
            args=({"db": str(env.db), "resource": env.resource.model_dump(), "run_id": f"process-{i}"},),
            kwargs={"ready": ready, "go": go, "results": results},
        )
        for i in range(2)
    ]
    for child in children:
        child.start()
    try:
        for _ in children:
            ready.get(timeout=60)
        threads = [partial(provision, env.resource, env.connect, f"thread-{i}", **FAST) for i in range(2)]
        go.set()
        in_threads = race(threads)
        in_children = dict(results.get(timeout=60) for _ in children)
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    assert sorted(in_children) == ["process-0", "process-1"]
    assert_one_database(env, [*in_threads, *in_children.values()])


@pytest.mark.parametrize("created", [False, True], ids=["crashed-before-create", "crashed-after-create"])
def test_stale_claim_is_taken_over_and_the_crashed_runs_database_found(env: Env, created: bool) -> None:
    put_claim(env, "crashed-run", age=timedelta(seconds=5))
    if created:  # the crashed run got as far as creating the database, not as recording it
        client = NotionClient(env.sandbox.token, base_url=env.sandbox.url)
        orphan = client.create_database(
            env.sandbox.parent_page_id,
            "Accounts",
            {"Name": {"title": {}}},
            f"created by a run that crashed {database_marker('Account')}",
        )
    started = time.monotonic()
    source = provision(env.resource, env.connect, "taker", claim_stale_s=2, **FAST)
    assert time.monotonic() - started < 5  # taken over at once: the claim is older than the bound
    assert_one_database(env, [source])
    if created:
        assert source == orphan["data_sources"][0]["id"]


def test_waiters_time_out_naming_the_object_and_the_holders_run(env: Env) -> None:
    put_claim(env, "stuck-run", age=timedelta(0))
    started = time.monotonic()
    with pytest.raises(ProvisioningTimeout, match=r"^Account: run stuck-run has been creating") as raised:
        provision(env.resource, env.connect, "waiter", claim_wait_s=0.5, claim_stale_s=60, **FAST)
    assert 0.5 <= time.monotonic() - started < 5
    assert "the Notion database of Account" in str(raised.value)
    assert "POST /v1/databases" not in env.sandbox.stats()["requests_by_route"]
    assert claims(env) == [("Account", "stuck-run")]  # left to its holder (or to go stale)


def test_waiter_uses_the_database_the_holder_records(env: Env) -> None:
    put_claim(env, "holder", age=timedelta(0))
    waiter = threading.Thread(
        target=lambda: found.append(provision(env.resource, env.connect, "waiter", **FAST)), daemon=True
    )
    found: list[str] = []
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and found == []  # waiting, not creating
    client = NotionClient(env.sandbox.token, base_url=env.sandbox.url)
    database = client.create_database(env.sandbox.parent_page_id, "Accounts", {"Name": {"title": {}}})
    source = database["data_sources"][0]["id"]
    with env.connect() as conn:  # what the holder does when its create succeeded
        recorded = state.record_target(conn, "Account", database["id"], source, "holder")
    assert recorded == (database["id"], source)
    waiter.join(timeout=10)
    assert found == [source]
    assert_one_database(env, found)


def test_failed_create_releases_the_claim(env: Env) -> None:
    env.sandbox.inject(status=500, method="POST", path_prefix="/v1/databases")
    with pytest.raises(AmbiguousWriteError):
        provision(env.resource, env.connect, "unlucky")
    assert claims(env) == []  # the next run need not wait for a claim to go stale
    source = provision(env.resource, env.connect, "next")
    assert env.query("SELECT data_source_id FROM notion_targets") == [(source,)]
    assert data_sources_titled(env, "Accounts") == [source]
    assert claims(env) == []
