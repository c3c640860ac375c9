"""Harness for the UI tests: both sandboxes in-process and `dagster dev` (webserver + daemon + code
server) as a subprocess on free ports, with a throw-away DAGSTER_HOME, staging file and limiter.

`dagster dev` runs in its own process group (session) so that everything it starts, run workers
included, is stopped together, also when a test fails half-way.

For the daemon alone (no webserver), as the PostgreSQL end-to-end test and
`benchmarks/bench_realtime_lane.py` use it: :func:`dagster_home`, :func:`platform_env`,
:func:`dagster_daemon` (also in its own process group), :func:`dagster_cli` and :func:`wait_for`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from dagster import DagsterInstance

from notion_sync import staging
from notion_sync.instance import init_instance
from notion_sync.notion import state
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.sandbox.sf_data import DEFAULT_END

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGSTER = REPO_ROOT / ".venv" / "bin" / "dagster"
DAGSTER_DAEMON = REPO_ROOT / ".venv" / "bin" / "dagster-daemon"
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

BACKFILL_MUTATION = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}"""
BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 50) { id status } }
    ... on PythonError { message }
  }
}"""
RUN_QUERY = """
query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status tags { key value } } } }"""
LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace {
    locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterUI:
    """A running `dagster dev` and the GraphQL API of its webserver."""

    url: str
    process: subprocess.Popen
    log_file: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def wait(self, what: str, probe: Any, timeout_s: float, interval_s: float = 1.0) -> Any:
        """Call ``probe`` until it returns something truthy; fail with the server log's tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"dagster dev exited while waiting for {what}:\n{self.log_tail()}"
            )
            if result := probe():
                return result
            time.sleep(interval_s)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{self.log_tail()}")

    def wait_until_loaded(self) -> None:
        def loaded() -> bool:
            try:
                entries = self.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
            except requests.RequestException:
                return False
            for entry in entries:
                error = entry["locationOrLoadError"] or {}
                assert error.get("__typename") != "PythonError", f"code location failed: {error['message']}"
            return bool(entries) and all(
                e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries
            )

        self.wait("the code location to load", loaded, STARTUP_TIMEOUT_S)

    def launch_backfill(self, asset_paths: list[list[str]], partitions: list[str]) -> str:
        params: dict[str, Any] = {
            "assetSelection": [{"path": path} for path in asset_paths],
            "partitionNames": partitions,
        }
        result = self.graphql(BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def wait_for_backfill(self, backfill_id: str, timeout_s: float) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            backfill = self.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
            assert backfill["__typename"] == "PartitionBackfill", backfill
            return backfill if backfill["status"] in FINISHED_BACKFILL else None

        return self.wait(f"backfill {backfill_id}", finished, timeout_s, interval_s=2.0)

    def wait_for_run(self, run_id: str, timeout_s: float) -> str:
        def finished() -> str | None:
            status = self.graphql(RUN_QUERY, {"id": run_id})["runOrError"]["status"]
            return status if status in FINISHED_RUN else None

        return self.wait(f"run {run_id}", finished, timeout_s)


@contextmanager
def dagster_dev(workdir: Path, env: dict[str, str]) -> Iterator[DagsterUI]:
    """`dagster dev -m notion_sync.definitions` with DAGSTER_HOME under ``workdir``; stopped on exit."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log_file = workdir / "dagster-dev.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-m", "notion_sync.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env={**env, "DAGSTER_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", process, log_file)
    try:
        ui.wait_until_loaded()
        yield ui
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the group (dagster dev shuts its children down), SIGKILL whatever is left."""
    with suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class Stack:
    """Sandboxes + a Dagster UI wired to them through the environment, as a user would run it."""

    salesforce: SalesforceSandbox
    notion: NotionSandbox
    duckdb_file: Path
    ui: DagsterUI

    def staged_records(self, object_name: str, partitions: list[str]) -> int:
        """Non-deleted staged records of ``partitions``."""
        with staging.connect(self.duckdb_file, read_only=True) as conn:
            return conn.execute(
                f"SELECT count(*) FROM stg_{object_name.lower()} "
                "WHERE NOT IsDeleted AND strftime(_partition, '%Y-%m-%d') IN (SELECT unnest(?))",
                [partitions],
            ).fetchone()[0]

    def rejected_records(self, object_name: str) -> dict[str, int]:
        """Records Notion refused for good (invalid data), by error code."""
        with staging.connect(self.duckdb_file, read_only=True) as conn:
            return dict(
                conn.execute(
                    "SELECT error_code, count(DISTINCT sf_id) FROM sync_log "
                    "WHERE object = ? AND status = 'permanent_error' GROUP BY error_code",
                    [object_name],
                ).fetchall()
            )

    def notion_pages(self, object_name: str) -> list[dict]:
        with staging.connect(self.duckdb_file, read_only=True) as conn:
            target = state.load_target(conn, object_name)
        assert target, f"no Notion database recorded for {object_name}"
        return self.notion.pages(target[1])


@contextmanager
def running_stack(
    workdir: Path, *, records: int = 200, end: datetime = DEFAULT_END, speed: float = 20
) -> Iterator[Stack]:
    """Sandbox Salesforce (``records`` Accounts, modstamps in the 30 days before ``end``) and Notion
    (time compressed ``speed`` times), and `dagster dev` pointed at them."""
    with ExitStack() as stack:
        salesforce = stack.enter_context(SalesforceSandbox(records=records, end=end, workdir=workdir / "sf"))
        notion = stack.enter_context(NotionSandbox(speed=speed))
        duckdb_file = workdir / "staging.duckdb"
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # would override the sandbox's CA
        }
        env |= {
            **salesforce.env(),
            **notion.env(),
            "NOTION_SYNC_DUCKDB": str(duckdb_file),
            "NOTION_RATE_LIMIT_PATH": str(workdir / "rate_limit.sqlite"),
        }
        ui = stack.enter_context(dagster_dev(workdir, env))
        yield Stack(salesforce, notion, duckdb_file, ui)


# ------------------------------------------------------------------ the daemon alone (no webserver)


def dagster_home(workdir: Path, instance_file: str = "dagster.yaml", *, init: bool = False) -> Path:
    """A fresh ``workdir/dagster_home`` holding the repo's ``instance_file``; ``init`` also sets the
    project's pool limits on it, as `notion-sync init-instance` does."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / instance_file, home / "dagster.yaml")
    if init:
        with DagsterInstance.from_config(str(home)) as instance:
            init_instance(instance)
    return home


def platform_env(
    salesforce: SalesforceSandbox, notion: NotionSandbox, workdir: Path, home: Path, config_text: str
) -> dict[str, str]:
    """The environment of every Dagster process: both sandboxes, ``home`` as DAGSTER_HOME, the sync
    config ``config_text`` and the staging file and rate limiter under ``workdir``."""
    config = workdir / "notion_sync.yaml"
    config.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    return env | {
        **salesforce.env(),
        **notion.env(),
        "DAGSTER_HOME": str(home),
        "NOTION_SYNC_CONFIG": str(config),
        "NOTION_SYNC_DUCKDB": str(workdir / "staging.duckdb"),
        "NOTION_RATE_LIMIT_PATH": str(workdir / "rate_limit.sqlite"),
    }


@contextmanager
def dagster_daemon(env: dict[str, str], log: Path) -> Iterator[DagsterInstance]:
    """`dagster-daemon run` on ``env["DAGSTER_HOME"]`` in its own process group (its code server and
    run workers included), stopped afterwards; yields the instance it works on."""
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [str(DAGSTER_DAEMON), "run", "-m", "notion_sync.definitions"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            yield instance
    finally:
        stop_process_group(daemon)


def dagster_cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """`dagster <args> -m notion_sync.definitions` (e.g. `asset materialize`, `job backfill`)."""
    return subprocess.run(
        [str(DAGSTER), *args, "-m", "notion_sync.definitions"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
    """Call ``predicate`` until it returns something truthy; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
