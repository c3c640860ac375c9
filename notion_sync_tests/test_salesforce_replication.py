"""Objects without SystemModstamp (history objects, LoginHistory) are replicated by another field."""

from datetime import date

import pytest
from dagster import DagsterInstance, materialize

from notion_sync.config import ObjectConfig
from notion_sync.salesforce import build_salesforce_asset, build_salesforce_checks
from notion_sync.salesforce.extract import REPLICATION_FIELDS, SalesforceSchemaError, replication_field
from notion_sync.sandbox.sf_data import ACCOUNT_HISTORY, describe_sobject
from notion_sync.staging import StagingResource
from notion_sync_tests.sandbox_resources import salesforce_resource

DAY = "2026-11-20"
HISTORY = ObjectConfig(
    name="AccountHistory",
    title_field="Field",
    fields={"NewValue": "New Value", "CreatedDate": "Changed"},
    relations={},
    start_date=date(2026, 10, 1),
)


def _describe(*names: str) -> dict:
    return {"name": "Thing", "fields": [{"name": n, "type": "datetime", "filterable": True} for n in names]}


def test_the_replication_field_is_picked_as_airbyte_does():
    assert REPLICATION_FIELDS == ("SystemModstamp", "LastModifiedDate", "CreatedDate", "LoginTime")
    every = _describe("LoginTime", "CreatedDate", "LastModifiedDate", "SystemModstamp")
    assert replication_field("Thing", every) == "SystemModstamp"
    assert replication_field("Thing", _describe("CreatedDate", "LastModifiedDate")) == "LastModifiedDate"
    assert replication_field("LoginHistory", _describe("LoginTime")) == "LoginTime"
    history = describe_sobject(ACCOUNT_HISTORY, "62.0")
    assert replication_field("AccountHistory", history) == "CreatedDate"


def test_an_object_without_one_fails_naming_the_object_and_what_to_do():
    with pytest.raises(SalesforceSchemaError) as error:
        replication_field("FieldPermissions", _describe("Birthdate"))
    message = str(error.value)
    assert "FieldPermissions" in message and "SystemModstamp" in message and "LoginTime" in message
    assert "objects.FieldPermissions" in message


def test_a_history_object_is_staged_by_days_of_its_created_date(own_salesforce_sandbox, tmp_path):
    result = materialize(
        [build_salesforce_asset(HISTORY), *build_salesforce_checks(HISTORY)],
        partition_key=DAY,
        resources={
            "salesforce": salesforce_resource(own_salesforce_sandbox, backoff_s=0.01),
            "staging": StagingResource(path=str(tmp_path / "staging.duckdb")),
        },
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    with StagingResource(path=str(tmp_path / "staging.duckdb")).connect(read_only=True) as conn:
        days = conn.execute(
            "SELECT DISTINCT CreatedDate::DATE::VARCHAR, _partition::VARCHAR FROM stg_accounthistory"
        ).fetchall()
    assert days == [(DAY, DAY)]
    statuses = own_salesforce_sandbox.stats()["statuses"]
    assert "400" not in statuses  # no query named SystemModstamp
