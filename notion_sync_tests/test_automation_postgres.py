"""PostgreSQL and the instance files: SQLite default, PostgreSQL from DAGSTER_PG_*, the start-up
check, and the daemon end to end (a failed partition re-launched by the retry sensor).

The realtime lane's latency during a backfill is a figure, not a test: benchmarks/bench_realtime_lane.py."""

import time
import uuid
from collections.abc import Iterator
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
from notion_sync_tests.e2e_helpers import dagster_cli, dagster_daemon, dagster_home, platform_env, wait_for

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = {
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "postgres",
    "DAGSTER_PG_PASSWORD": "",
}


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
    return dagster_home(tmp_path, instance_file)


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
    return platform_env(salesforce, notion, tmp_path, home, config_text) | {
        **PG_ENV,
        "DAGSTER_PG_DB": database,
        # The rate-limit bucket moves to PostgreSQL along with the Dagster storage.
        "NOTION_RATE_LIMIT_BACKEND": "postgres",
        "NOTION_RATE_LIMIT_DSN": f"postgresql://postgres@127.0.0.1:5432/{database}",
    }


@pytest.mark.e2e
def test_daemon_retries_a_failed_partition_without_duplicates(tmp_path, pg_home, pg_database, notion_sandbox):
    with SalesforceSandbox(records=300, seed=11, workdir=tmp_path / "sf") as salesforce:
        env = e2e_environment(tmp_path, pg_home, pg_database, salesforce, notion_sandbox, E2E_CONFIG)
        with dagster_daemon(env, tmp_path / "daemon.log") as instance:
            # Salesforce's daily budget is down to 5%, under the 10% reserve: the extraction stops
            # (ApiBudgetExhausted, not retried in the run) and the partition fails.
            salesforce.set_budget(remaining=500, maximum=10_000)
            failed = dagster_cli(
                env,
                "asset",
                "materialize",
                "--select",
                "salesforce/Account,notion/Account",
                "--partition",
                E2E_PARTITION,
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
