"""PostgreSQL and the instance files: SQLite default, PostgreSQL from DAGSTER_PG_*, the start-up
check, and the daemon end to end (a failed partition re-launched by the retry sensor)."""

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import psycopg2
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from notion_sync.config import load_config
from notion_sync.instance import InstanceCheckError, check_instance
from notion_sync.partitions import daily_partitions
from notion_sync.sandbox.salesforce_server import SalesforceSandbox

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "postgres",
          "DAGSTER_PG_PASSWORD": ""}


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database (trust auth on 127.0.0.1), dropped afterwards."""
    name = f"notion_sync_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def home_with(tmp_path: Path, instance_file: str) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / instance_file, home / "dagster.yaml")
    return home


def test_both_instance_files_agree_apart_from_storage():
    sqlite = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    postgres = yaml.safe_load((ROOT / "dagster.postgres.yaml").read_text())
    assert "storage" not in sqlite and postgres.pop("storage")["postgres"]["postgres_db"]["db_name"] == {
        "env": "DAGSTER_PG_DB"
    }
    assert sqlite == postgres


def test_sqlite_home_passes_and_loads(tmp_path):
    home = home_with(tmp_path, "dagster.yaml")
    check_instance(home)
    with DagsterInstance.from_config(str(home)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "dagster/backfill", "limit": 4} in limits
        assert instance.run_retries_enabled and not instance.run_retries_retry_on_asset_or_op_failure


def test_missing_home_is_named(tmp_path):
    with pytest.raises(InstanceCheckError, match="DAGSTER_HOME"):
        check_instance(tmp_path / "nope")


def test_postgres_home_passes_and_loads(tmp_path, monkeypatch, pg_database):
    for name, value in {**PG_ENV, "DAGSTER_PG_DB": pg_database}.items():
        monkeypatch.setenv(name, value)
    home = home_with(tmp_path, "dagster.postgres.yaml")
    check_instance(home)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"DAGSTER_PG_PORT": "1"}, "DAGSTER_PG_HOST / DAGSTER_PG_PORT"),
        ({"DAGSTER_PG_USER": "nobody_here"}, "DAGSTER_PG_USER / DAGSTER_PG_PASSWORD"),
        ({"DAGSTER_PG_DB": "no_such_database_xyz"}, "DAGSTER_PG_DB"),
    ],
)
def test_unusable_postgres_names_the_setting(tmp_path, monkeypatch, pg_database, override, named):
    for name, value in {**PG_ENV, "DAGSTER_PG_DB": pg_database, **override}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InstanceCheckError, match=f"Check {named}"):
        check_instance(home_with(tmp_path, "dagster.postgres.yaml"))


def test_unset_variable_is_named(tmp_path, monkeypatch):
    for name in (*PG_ENV, "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InstanceCheckError, match="DAGSTER_PG_HOST is not set"):
        check_instance(home_with(tmp_path, "dagster.postgres.yaml"))


E2E_CONFIG = """
objects:
  Account:
    title_field: Name
    fields: {Name: Name, Phone: Phone, Industry: Industry}
    start_date: "2026-10-01"
retry:
  backoff_minutes: [0.05]          # 3 s instead of 1, 2, 4 minutes
  min_after_rate_limit_minutes: 0.1
  check_interval_seconds: 2
alerts:
  check_interval_seconds: 3600
"""
E2E_PARTITION = "2026-11-20"


@pytest.fixture
def pg_home(tmp_path, monkeypatch, pg_database) -> Path:
    """DAGSTER_HOME with dagster.postgres.yaml on the throwaway database, also for this process."""
    for name, value in {**PG_ENV, "DAGSTER_PG_DB": pg_database}.items():
        monkeypatch.setenv(name, value)
    return home_with(tmp_path, "dagster.postgres.yaml")


def e2e_environment(
    tmp_path: Path, home: Path, database: str, salesforce, notion, config_text: str
) -> dict[str, str]:
    config = tmp_path / "notion_sync.yaml"
    config.write_text(config_text)
    return {
        **os.environ, **PG_ENV, **salesforce.env(), **notion.env(),
        "DAGSTER_PG_DB": database,
        "DAGSTER_HOME": str(home),
        "NOTION_SYNC_CONFIG": str(config),
        "NOTION_SYNC_DUCKDB": str(tmp_path / "staging.duckdb"),
        # The rate-limit bucket moves to PostgreSQL along with the Dagster storage.
        "NOTION_RATE_LIMIT_BACKEND": "postgres",
        "NOTION_RATE_LIMIT_DSN": f"postgresql://postgres@127.0.0.1:5432/{database}",
    }


@contextmanager
def dagster_daemon(env: dict[str, str], log: Path) -> Iterator[DagsterInstance]:
    """`dagster-daemon run` in its own process group, which is ended (by its id) afterwards; yields
    the instance it works on."""
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [str(ROOT / ".venv/bin/dagster-daemon"), "run", "-m", "notion_sync.definitions"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                yield instance
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()


def dagster_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / ".venv/bin/dagster"), *args, "-m", "notion_sync.definitions"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180,
    )


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.mark.e2e
def test_daemon_retries_a_failed_partition_without_duplicates(tmp_path, pg_home, pg_database, notion_sandbox):
    with SalesforceSandbox(records=300, seed=11, workdir=tmp_path / "sf") as salesforce:
        env = e2e_environment(tmp_path, pg_home, pg_database, salesforce, notion_sandbox, E2E_CONFIG)
        with dagster_daemon(env, tmp_path / "daemon.log") as instance:
            # Salesforce's daily budget is down to 5%, under the 10% reserve: the extraction stops
            # (ApiBudgetExhausted, not retried in the run) and the partition fails.
            salesforce.set_budget(remaining=500, maximum=10_000)
            failed = dagster_cli(
                env, "asset", "materialize", "--select", "salesforce/Account,notion/Account",
                "--partition", E2E_PARTITION,
            )
            assert failed.returncode != 0, failed.stdout[-2000:]
            failed_at = time.monotonic()
            salesforce.set_budget(remaining=10_000)  # the budget refills

            def retried() -> list:
                runs = instance.get_run_records(RunsFilter(tags={"notion_sync/retry_attempt": "1"}))
                return runs if runs and runs[0].dagster_run.is_finished else []

            retries = wait_for(retried, 150, f"the retry sensor to re-launch Account {E2E_PARTITION}")
            recovered_s = time.monotonic() - failed_at
            assert [r.dagster_run.status for r in retries] == [DagsterRunStatus.SUCCESS]
            notion_key = AssetKey(["notion", "Account"])
            partitions_def = daily_partitions(load_config(env["NOTION_SYNC_CONFIG"]).objects["Account"])
            status = instance.get_status_by_partition(notion_key, [E2E_PARTITION], partitions_def)
            assert status == {E2E_PARTITION: AssetPartitionStatus.MATERIALIZED}
            assert retries[0].dagster_run.tags["notion_sync/lane"] == "backfill"
            assert retries[0].dagster_run.tags["dagster/sensor_name"] == "notion_sync_retry"

    stats = notion_sandbox.stats()
    with duckdb.connect(env["NOTION_SYNC_DUCKDB"], read_only=True) as conn:
        staged = conn.execute("SELECT count(*) FROM stg_account WHERE NOT IsDeleted").fetchone()[0]
    assert staged > 0
    assert sum(source["pages"] for source in stats["pages_by_data_source"].values()) == staged
    assert stats["duplicates_total"] == 0
    print(f"\nE2E retry: failed partition synced {recovered_s:.1f} s after the failure ({staged} pages)")


LATENCY_CONFIG = """
objects:
  Account:
    title_field: Name
    fields: {Name: Name, Phone: Phone, Industry: Industry}
    start_date: "2026-10-01"
    mode: realtime
realtime:
  interval_seconds: 15
alerts:
  check_interval_seconds: 3600
"""
LATENCY_SAMPLES = 4


def phone_of(notion, page_id: str) -> str | None:
    """The page's Phone as the sandbox stores it (read in-process: costs no API request)."""
    return notion.store.get_page(page_id, "2025-09-03")["properties"]["Phone"].get("phone_number")


@pytest.mark.e2e
@pytest.mark.timeout(480)
@pytest.mark.skipif(
    not os.environ.get("NOTION_SYNC_LATENCY"),
    reason="prints figures in ~3 min: NOTION_SYNC_LATENCY=1 pytest -s -k latency",
)
def test_realtime_lane_latency_during_a_backfill(tmp_path, pg_home, pg_database, notion_sandbox):
    """Figures, not assertions on time: a Salesforce edit's delay until Notion shows it, while a
    backfill of ~9,700 Account records (29 daily partitions) runs in the backfill lane."""
    with SalesforceSandbox(records=10_000, seed=3, workdir=tmp_path / "sf") as salesforce:
        env = e2e_environment(tmp_path, pg_home, pg_database, salesforce, notion_sandbox, LATENCY_CONFIG)
        synced = dagster_cli(
            env, "asset", "materialize", "--select", "salesforce/Account,notion/Account",
            "--partition", E2E_PARTITION,
        )
        assert synced.returncode == 0, synced.stdout[-2000:]
        with duckdb.connect(env["NOTION_SYNC_DUCKDB"], read_only=True) as conn:
            query = "SELECT sf_id, page_id FROM sync_state WHERE object = 'Account'"
            pages = dict(conn.execute(query).fetchall())
        with dagster_daemon(env, tmp_path / "daemon.log") as instance:
            # The deployment's pool setting (notion-sync init-instance): above the backfill lane's 4.
            instance.event_log_storage.set_concurrency_slots("notion_api", 5)
            wait_for(
                lambda: any(state.instigator_data and state.instigator_data.cursor
                            for state in instance.all_instigator_state() if state.name == "changes_Account"),
                90, "the change sensor's first tick",
            )
            backfill = dagster_cli(
                env, "job", "backfill", "-j", "sync_Account", "--from", "2026-10-22", "--to", "2026-11-19",
                "--noprompt",
            )
            assert backfill.returncode == 0, backfill.stdout[-2000:]
            latencies, busy = [], []
            for n, sf_id in enumerate(sorted(pages)[:LATENCY_SAMPLES]):
                phone = f"+1 555 01{n:02d}"
                busy.append(len(instance.get_run_records(RunsFilter(
                    statuses=[DagsterRunStatus.STARTED], tags={"notion_sync/lane": "backfill"}))))
                edited = time.monotonic()
                salesforce.update("Account", sf_id, {"Phone": phone})
                wait_for(lambda: phone_of(notion_sandbox, pages[sf_id]) == phone, 180,  # noqa: B023
                         f"edit {n} to reach Notion", interval_s=0.2)
                latencies.append(time.monotonic() - edited)
            backfill_runs = instance.get_run_records(RunsFilter(tags={"notion_sync/lane": "backfill"}))
            realtime_runs = instance.get_run_records(RunsFilter(tags={"notion_sync/lane": "realtime"}))
            finished = sum(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in backfill_runs)
    assert notion_sandbox.stats()["duplicates_total"] == 0
    stages = [
        f"queued {r.start_time - r.create_timestamp.timestamp():.1f} s, ran {r.end_time - r.start_time:.1f} s"
        for r in reversed(realtime_runs)
        if r.start_time and r.end_time
    ]
    print(
        f"\nrealtime lane: edit -> Notion latencies {', '.join(f'{s:.1f}' for s in latencies)} s "
        f"(max {max(latencies):.1f} s, sensor interval 15 s); backfill runs going at each edit: {busy}; "
        f"backfill {finished}/{len(backfill_runs)} partitions done; realtime runs: {'; '.join(stages)}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
