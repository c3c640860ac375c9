"""The instance files: SQLite default, PostgreSQL from DAGSTER_PG_*, and the start-up check."""

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml
from dagster import DagsterInstance

from notion_sync.instance import InstanceCheckError, check_instance

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
