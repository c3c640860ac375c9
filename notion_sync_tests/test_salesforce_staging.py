"""`salesforce/<Object>` against the sandbox Salesforce (HTTPS, simple-salesforce, real Dagster runs)."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, asset, materialize

from notion_sync.config import ObjectConfig
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce import SalesforceResource, build_salesforce_asset, build_salesforce_checks, soql
from notion_sync.salesforce.extract import DUCKDB_TYPES
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.sandbox.sf_data import make_id
from notion_sync.staging import StagingResource, connect
from notion_sync_tests.sandbox_resources import salesforce_resource

DAY = "2026-11-20"  # the sandbox's last day; with days=1 every record is on it


def _object(name: str = "Account", **overrides) -> ObjectConfig:
    fields = {"Account": {"Name": "Name", "BillingCity": "City"}, "Contact": {"Email": "Email"}}
    return ObjectConfig(
        **{
            "name": name,
            "title_field": "Name",
            "fields": fields.get(name, {}),
            "start_date": date(2026, 10, 1),
            **overrides,
        }
    )


def _resource(sandbox: SalesforceSandbox, **overrides) -> SalesforceResource:
    return salesforce_resource(sandbox, **{"backoff_s": 0.01, **overrides})


def _materialize(
    obj: ObjectConfig,
    sandbox: SalesforceSandbox,
    db: Path,
    partition: str = DAY,
    *,
    checks: bool = False,
    run_config: dict | None = None,
    **resource_overrides,
) -> ExecuteInProcessResult:
    return materialize(
        [build_salesforce_asset(obj), *(build_salesforce_checks(obj) if checks else [])],
        partition_key=partition,
        resources={
            "salesforce": _resource(sandbox, **resource_overrides),
            "staging": StagingResource(path=str(db)),
        },
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {f"salesforce__{obj.name}": {"config": run_config}}} if run_config else None,
        raise_on_error=False,
    )


def _metadata(result: ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _fetch(db: Path, sql: str) -> list[tuple]:
    with connect(db, read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _table(db: Path, table: str = "stg_account") -> list[tuple]:
    return _fetch(db, f"SELECT * EXCLUDE (_staged_at) FROM {table} ORDER BY Id")


@pytest.fixture
def day_sandbox(tmp_path) -> Iterator[SalesforceSandbox]:
    """A private sandbox (safe to break): 1,000 Accounts and 2,000 Contacts, all on DAY."""
    with SalesforceSandbox(records=1000, seed=11, workdir=tmp_path / "sf", days=1) as sandbox:
        yield sandbox


def test_each_field_type_lands_with_its_duckdb_type(salesforce_sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    for name in ("Account", "Contact", "Opportunity"):
        assert _materialize(_object(name), salesforce_sandbox, db).success
        columns = dict(
            _fetch(
                db,
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_name = 'stg_{name.lower()}'",
            )
        )
        staged = {k: v.replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ") for k, v in columns.items()}
        fields = salesforce_sandbox.data.sobjects[name].fields
        expected = {f.name: DUCKDB_TYPES[f.type] for f in fields if f.type != "address"}
        assert staged == {**expected, "_partition": "DATE", "_staged_at": "TIMESTAMPTZ"}
    assert {"BillingCity", "BillingLatitude"} <= set(_fetch_columns(db, "stg_account"))
    assert "BillingAddress" not in _fetch_columns(db, "stg_account")  # compound parent: components only
    [(stamp, birthdate)] = _fetch(
        db, "SELECT SystemModstamp, Birthdate FROM stg_contact WHERE Birthdate IS NOT NULL LIMIT 1"
    )
    assert stamp.utcoffset() == timedelta(0) and isinstance(birthdate, date)


def _fetch_columns(db: Path, table: str) -> list[str]:
    return [
        r[0]
        for r in _fetch(
            db, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
        )
    ]


@pytest.mark.parametrize("name", ["Account", "Contact"])
def test_rest_and_bulk_stage_identical_tables(day_sandbox, tmp_path, name):
    rest, bulk = tmp_path / "rest.duckdb", tmp_path / "bulk.duckdb"
    rest_run = _materialize(
        _object(name, bulk_threshold=10**9), day_sandbox, rest, run_config={"rest_batch_size": 500}
    )
    bulk_run = _materialize(
        _object(name, bulk_threshold=0), day_sandbox, bulk, run_config={"bulk_page_records": 300}
    )
    assert (_metadata(rest_run)["method"], _metadata(bulk_run)["method"]) == ("REST", "Bulk")
    assert _metadata(rest_run)["pages"] > 1 and _metadata(bulk_run)["pages"] > 1
    table = f"stg_{name.lower()}"
    staged = _table(rest, table)
    assert len(staged) == day_sandbox.data.counts[name]
    assert staged == _table(bulk, table)


def test_deleted_records_are_staged_and_flagged(day_sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    ids = (make_id("001", i) for i in range(100))
    gone = next(i for i in ids if not day_sandbox.get("Account", i)["IsDeleted"])
    day_sandbox.delete("Account", gone)  # a soft delete moves SystemModstamp to now: today's partition
    today = datetime.now(UTC).date()
    assert _materialize(_object(bulk_threshold=0), day_sandbox, db).success
    result = _materialize(_object(), day_sandbox, db, today.isoformat())
    assert _metadata(result)["deleted_rows"] == 1
    flagged = dict(_fetch(db, "SELECT Id, _partition FROM stg_account WHERE IsDeleted"))
    assert flagged[gone] == today
    assert len(flagged) > 1  # the seeded ~2% of soft-deleted records as well


def test_a_purged_record_is_staged_deleted_on_its_deletion_day_and_the_checks_pass(day_sandbox, tmp_path):
    """Gone from queryAll: getDeleted names it, and the row count check counts the tombstone."""
    db = tmp_path / "s.duckdb"
    assert _materialize(_object(), day_sandbox, db).success
    ids = (make_id("001", i) for i in range(100))
    purged = next(i for i in ids if not day_sandbox.get("Account", i)["IsDeleted"])
    purged_at = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    day_sandbox.delete("Account", purged, hard=True, modstamp=purged_at)
    result = _materialize(_object(), day_sandbox, db, purged_at[:10], checks=True)
    assert result.success and _metadata(result)["purged_rows"] == 1
    assert all(check.passed for check in result.get_asset_check_evaluations())
    staged = _fetch(db, f"SELECT IsDeleted, _partition FROM stg_account WHERE Id = '{purged}'")
    assert staged == [(True, date.fromisoformat(purged_at[:10]))]


def test_rerun_is_idempotent_and_checks_pass(salesforce_sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    first = _materialize(_object("Contact"), salesforce_sandbox, db, checks=True)
    before = _table(db, "stg_contact")
    second = _materialize(_object("Contact"), salesforce_sandbox, db, checks=True)
    assert _table(db, "stg_contact") == before
    assert len(before) == _metadata(second)["rows"] == _metadata(second)["estimated_rows"] > 0
    for result in (first, second):
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name: e.passed for e in evaluations} == {
            "row_count_matches_salesforce": True,
            "id_unique": True,
        }


def test_checks_fail_when_staging_lost_a_row_or_holds_a_duplicate(salesforce_sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    obj = _object()
    assert _materialize(obj, salesforce_sandbox, db).success
    with connect(db) as conn:  # lose two rows of the day, duplicate another
        conn.execute("DELETE FROM stg_account WHERE Id IN (SELECT Id FROM stg_account ORDER BY Id LIMIT 2)")
        conn.execute(
            "INSERT INTO stg_account SELECT * FROM stg_account WHERE Id = (SELECT max(Id) FROM stg_account)"
        )

    @asset(key=["salesforce", "Account"], partitions_def=daily_partitions(obj))
    def untouched() -> None:
        """Stands in for the extraction so the checks see the damaged table."""

    result = materialize(
        [untouched, *build_salesforce_checks(obj)],
        partition_key=DAY,
        resources={"salesforce": _resource(salesforce_sandbox), "staging": StagingResource(path=str(db))},
        instance=DagsterInstance.ephemeral(),
    )
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "row_count_matches_salesforce": False,
        "id_unique": False,
    }


def test_partition_boundaries_are_exact(salesforce_sandbox, tmp_path):
    """A record at 23:59:59.999 belongs to its day, the one at 00:00:00.000 to the next."""
    db = tmp_path / "s.duckdb"
    before, after = salesforce_sandbox.data.edge_records("Account")[:2]
    assert before["SystemModstamp"].endswith("T23:59:59.999+0000")
    assert after["SystemModstamp"].endswith("T00:00:00.000+0000")
    first_day, second_day = before["SystemModstamp"][:10], after["SystemModstamp"][:10]
    for partition in (first_day, second_day):
        assert _materialize(_object(), salesforce_sandbox, db, partition).success
    staged = {r[0]: r[1:] for r in _fetch(db, "SELECT Id, SystemModstamp, _partition FROM stg_account")}
    assert staged[before["Id"]] == (
        datetime.fromisoformat(f"{first_day}T23:59:59.999+00:00"),
        date.fromisoformat(first_day),
    )
    assert staged[after["Id"]] == (
        datetime.fromisoformat(f"{second_day}T00:00:00+00:00"),
        date.fromisoformat(second_day),
    )


def test_a_field_list_too_long_for_one_url_is_read_in_chunks_joined_by_id(day_sandbox, tmp_path, monkeypatch):
    rest, bulk = tmp_path / "rest.duckdb", tmp_path / "bulk.duckdb"
    assert _materialize(_object(bulk_threshold=0), day_sandbox, bulk).success
    monkeypatch.setattr(soql, "MAX_QUERY_URL_CHARS", 400)  # ~65 fields no longer fit one URL
    assert len(soql.chunk_fields([c[0] for c in _fetch(bulk, "DESCRIBE stg_account")], 400)) > 3
    result = _materialize(
        _object(bulk_threshold=10**9), day_sandbox, rest, run_config={"rest_batch_size": 300}
    )
    assert _metadata(result)["pages"] > 4  # pages of every chunk
    assert _table(rest) == _table(bulk)


def _describes(sandbox: SalesforceSandbox) -> int:
    return sandbox.stats()["requests"].get("describe", 0)


def test_runs_within_the_hour_share_one_describe(day_sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    first = _materialize(_object(), day_sandbox, db)
    second = _materialize(_object(), day_sandbox, db)
    assert _describes(day_sandbox) == 1
    assert _metadata(second)["api_calls"] == _metadata(first)["api_calls"] - 1
    assert len(_table(db)) == day_sandbox.data.counts["Account"]


@pytest.mark.parametrize("bulk_threshold", [10**9, 0], ids=["REST", "Bulk"])
def test_a_field_deleted_since_the_kept_describe_is_described_again(day_sandbox, tmp_path, bulk_threshold):
    db = tmp_path / "s.duckdb"
    assert _materialize(_object(bulk_threshold=bulk_threshold), day_sandbox, db).success
    day_sandbox.data.remove_field("Account", "Custom_Text_07__c")
    result = _materialize(_object(bulk_threshold=bulk_threshold), day_sandbox, db)
    assert result.success
    assert _describes(day_sandbox) == 2
    assert _fetch(db, "SELECT count(*), count(Custom_Text_07__c) FROM stg_account") == [
        (day_sandbox.data.counts["Account"], 0)
    ]
    assert _materialize(_object(bulk_threshold=bulk_threshold), day_sandbox, db).success
    assert _describes(day_sandbox) == 2  # the new describe is kept
