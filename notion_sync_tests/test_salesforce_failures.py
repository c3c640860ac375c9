"""How `salesforce/<Object>` fails: clearly, without retry storms, never leaving half a partition."""

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date

import pytest
import requests
from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from notion_sync.config import ObjectConfig
from notion_sync.salesforce import SalesforceResource, build_salesforce_asset
from notion_sync.salesforce.extract import stage_partition
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.staging import StagingResource, connect
from notion_sync_tests.run_helpers import failure_without_retry
from notion_sync_tests.sandbox_resources import salesforce_resource

DAY = "2026-11-20"
log = logging.getLogger(__name__)


def _object(name: str = "Account", **overrides) -> ObjectConfig:
    return ObjectConfig(**{"name": name, "title_field": "Name", "start_date": date(2026, 10, 1), **overrides})


def _resource(sandbox: SalesforceSandbox, **overrides) -> SalesforceResource:
    return salesforce_resource(sandbox, **{"backoff_s": 0.01, **overrides})


def _materialize(obj: ObjectConfig, resource: SalesforceResource, db) -> ExecuteInProcessResult:
    return materialize(
        [build_salesforce_asset(obj)],
        partition_key=DAY,
        instance=DagsterInstance.ephemeral(),
        resources={"salesforce": resource, "staging": StagingResource(path=str(db))},
        raise_on_error=False,
    )


def _stage(sandbox: SalesforceSandbox, db, obj: ObjectConfig, **kwargs):
    resource = _resource(sandbox, **kwargs.pop("resource", {}))
    return stage_partition(resource.get_client(), StagingResource(path=str(db)), obj, DAY, log=log, **kwargs)


def _table(db) -> list[tuple]:
    with connect(db, read_only=True) as conn:
        return conn.execute("SELECT * EXCLUDE (_staged_at) FROM stg_account ORDER BY Id").fetchall()


@pytest.fixture
def sandbox(tmp_path) -> Iterator[SalesforceSandbox]:
    """A private sandbox (faults, budget and edits stay here): 1,000 Accounts, all on DAY."""
    with SalesforceSandbox(records=1000, seed=5, workdir=tmp_path / "sf", days=1) as sandbox:
        yield sandbox


def test_a_misspelt_configured_field_fails_naming_object_field_and_key(salesforce_sandbox, tmp_path):
    obj = _object("Contact", fields={"Emial": "Email"})
    error = failure_without_retry(_materialize(obj, _resource(salesforce_sandbox), tmp_path / "s.duckdb"))
    assert "Contact.Emial is not a field of Contact in Salesforce; fix objects.Contact.fields" in error


def test_an_unknown_object_fails_naming_it(salesforce_sandbox, tmp_path):
    error = failure_without_retry(
        _materialize(_object("Acount"), _resource(salesforce_sandbox), tmp_path / "s.duckdb")
    )
    assert "Acount is not an object in Salesforce" in error and "objects.Acount" in error


def test_a_bad_session_fails_at_once_without_a_retry_storm(sandbox, tmp_path):
    resource = _resource(sandbox, session_id="00Dexpired!bogus", max_retries=5)
    error = failure_without_retry(_materialize(_object(), resource, tmp_path / "s.duckdb"))
    assert "rejected the credentials (HTTP 401 INVALID_SESSION_ID)" in error
    assert "bogus" not in error and sandbox.session_id not in error
    assert sandbox.stats()["statuses"] == {"401": 1}  # one request, no retries at any level


def test_the_api_budget_guard_stops_before_the_reserve_with_a_clear_error(sandbox, tmp_path):
    sandbox.set_budget(remaining=1_001, maximum=10_000)  # reserve 10% = 1,000: describe, stop at the probe
    error = failure_without_retry(_materialize(_object(), _resource(sandbox), tmp_path / "s.duckdb"))
    assert "Salesforce API budget nearly exhausted: 1000 of 10000 daily calls left" in error
    assert "reserve is 10% (1000 calls)" in error and "24-hour" in error and "resume" in error
    assert sandbox.stats()["api_usage"]["used"] == 9_000  # stopped exactly at the reserve


@pytest.mark.parametrize("method", ["REST", "Bulk"])
def test_5xx_mid_window_is_retried_and_the_partition_is_complete(sandbox, tmp_path, method):
    db = tmp_path / "s.duckdb"
    page_path = "/composite" if method == "REST" else "/results"  # Composite calls / Bulk results pages
    sandbox.inject_fault(503, count=2, match=page_path)
    obj = _object(bulk_threshold=10**9 if method == "REST" else 0)
    result = _stage(sandbox, db, obj, rest_batch_size=200, bulk_page_records=200)
    assert result.method == method and result.pages == 5
    assert result.rows == result.estimated == 1000 == len(_table(db))
    assert sandbox.stats()["statuses"]["503"] == 2


def test_a_bulk_page_cut_off_mid_stream_is_fetched_again(sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    sandbox.inject_fault(drop=1, match="/results")
    result = _stage(sandbox, db, _object(bulk_threshold=0), bulk_page_records=300)
    assert result.rows == 1000 == len(_table(db))
    assert sandbox.stats()["requests"]["bulk2.results"] == result.pages + 1


def test_a_dropped_rest_page_is_fetched_again(sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    sandbox.inject_fault(drop=1, match="queryAll/01g")
    result = _stage(sandbox, db, _object(bulk_threshold=10**9), rest_batch_size=200)
    assert result.rows == 1000 == len(_table(db))


@pytest.mark.parametrize("method", ["REST", "Bulk"])
def test_a_run_killed_mid_stream_leaves_the_previous_partition_intact(sandbox, tmp_path, method):
    db = tmp_path / "s.duckdb"
    obj = _object(bulk_threshold=10**9 if method == "REST" else 0)
    _stage(sandbox, db, obj)
    before = _table(db)
    sandbox.update("Account", before[0][0], {"Name": "Changed after the first run"})

    def killed(pages: int, rows: int) -> None:
        if pages >= 2:  # after the first Composite call's pages, or Bulk's second page
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        _stage(sandbox, db, obj, on_page=killed, rest_batch_size=200, bulk_page_records=200)
    assert _table(db) == before
    sandbox.inject_fault(503, count=50, match="/composite" if method == "REST" else "/results")
    with pytest.raises(Exception, match=r"503|SERVER_UNAVAILABLE"):  # retries exhausted mid-stream
        _stage(sandbox, db, obj, rest_batch_size=200, bulk_page_records=200, resource={"max_retries": 2})
    assert _table(db) == before
    assert not list(tmp_path.glob(".spool-*"))  # the spool went with the failed run


_STAGE_THEN_SIGKILL = """
import logging, os, signal, sys
from datetime import date
from notion_sync.config import ObjectConfig
from notion_sync.salesforce import SalesforceResource
from notion_sync.salesforce.extract import stage_partition
from notion_sync.staging import StagingResource

def die(pages, rows):
    if pages == 2:
        os.kill(os.getpid(), signal.SIGKILL)

url, session, ca, db = sys.argv[1:5]
client = SalesforceResource(instance_url=url, session_id=session, ca_bundle=ca).get_client()
obj = ObjectConfig(name="Account", title_field="Name", start_date=date(2026, 10, 1), bulk_threshold=0)
stage_partition(client, StagingResource(path=db), obj, "2026-11-20", log=logging.getLogger(),
                on_page=die, bulk_page_records=200)
"""


def test_a_run_killed_with_sigkill_leaves_its_spool_which_the_next_run_removes(sandbox, tmp_path, caplog):
    db = tmp_path / "s.duckdb"
    obj = _object(bulk_threshold=0)
    _stage(sandbox, db, obj)
    before = _table(db)
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            _STAGE_THEN_SIGKILL,
            sandbox.url,
            sandbox.session_id,
            str(sandbox.ca_file),
            str(db),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [leftover] = tmp_path.glob(".spool-*")
    assert _table(db) == before
    with caplog.at_level(logging.WARNING):
        assert _stage(sandbox, db, obj).rows == len(before)
    assert not leftover.exists()
    assert f"removed {leftover.name}" in caplog.text


def test_a_connection_refused_is_retried_a_bounded_number_of_times(tmp_path, caplog):
    resource = SalesforceResource(
        instance_url="https://127.0.0.1:9", session_id="x", max_retries=2, backoff_s=0.01
    )
    with caplog.at_level(logging.WARNING), pytest.raises(requests.ConnectionError):
        stage_partition(
            resource.get_client(), StagingResource(path=str(tmp_path / "s.duckdb")), _object(), DAY, log=log
        )
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 2


def test_a_new_salesforce_field_becomes_a_new_column(sandbox, tmp_path):
    db = tmp_path / "s.duckdb"
    _stage(sandbox, db, _object())
    with connect(db) as conn:
        conn.execute("ALTER TABLE stg_account DROP COLUMN Custom_Text_40__c")  # as if the field were new
    result = _stage(sandbox, db, _object())
    assert result.added_columns == ["Custom_Text_40__c"]
    with connect(db, read_only=True) as conn:
        assert conn.execute("SELECT count(Custom_Text_40__c) FROM stg_account").fetchone()[0] > 0
