"""Transient versus permanent Salesforce answers during extraction: 420/429 retried, Bulk jobs that
end Failed or Aborted (or objects Bulk refuses) read with REST instead, Bulk rows over 2 MB loaded."""

import logging
from collections.abc import Iterator
from datetime import date

import pytest

from notion_sync.config import ObjectConfig
from notion_sync.salesforce.extract import stage_partition
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.sandbox.sf_data import LONG_TEXT_LENGTH, make_id
from notion_sync.staging import StagingResource, connect
from notion_sync_tests.sandbox_resources import salesforce_resource

DAY = "2026-11-20"
BULK = 0  # bulk_threshold that reads every window with Bulk
REST = 10**9


@pytest.fixture
def sandbox(tmp_path) -> Iterator[SalesforceSandbox]:
    """A private sandbox: 300 Accounts, all on DAY, with six Long Text Area fields (empty)."""
    with SalesforceSandbox(
        records=300, seed=5, workdir=tmp_path / "sf", days=1, long_text_fields=6
    ) as sandbox:
        yield sandbox


def _stage(sandbox: SalesforceSandbox, db, bulk_threshold: int, day: str = DAY):
    obj = ObjectConfig(
        name="Account", title_field="Name", start_date=date(2026, 10, 1), bulk_threshold=bulk_threshold
    )
    client = salesforce_resource(sandbox, backoff_s=0.01).get_client()
    return stage_partition(
        client,
        StagingResource(path=str(db)),
        obj,
        day,
        log=logging.getLogger(__name__),
        rest_batch_size=200,
        bulk_page_records=100,
    )


def _staged(db, sql: str = "SELECT count(*) FROM stg_account"):
    with connect(db, read_only=True) as conn:
        return conn.execute(sql).fetchone()


@pytest.mark.parametrize("status", [420, 429])
@pytest.mark.parametrize("threshold", [REST, BULK])
def test_420_and_429_are_retried_and_the_partition_completes(sandbox, tmp_path, status, threshold):
    sandbox.inject_fault(status, count=2, match="/composite" if threshold == REST else "/results")
    result = _stage(sandbox, tmp_path / "s.duckdb", threshold)
    assert result.rows == result.estimated == 300 == _staged(tmp_path / "s.duckdb")[0]
    assert sandbox.stats()["statuses"][str(status)] == 2


@pytest.mark.parametrize("outcome", ["Failed", "Aborted", "unsupported"])
def test_a_bulk_job_that_cannot_deliver_falls_back_to_rest_with_a_warning(sandbox, tmp_path, caplog, outcome):
    if outcome == "unsupported":
        sandbox.bulk_unsupported.add("Account")
    else:
        sandbox.fail_bulk_jobs(outcome)
    with caplog.at_level(logging.WARNING):
        result = _stage(sandbox, tmp_path / "s.duckdb", BULK)
    assert (
        result.method == "REST"
        and result.rows == result.estimated == 300 == _staged(tmp_path / "s.duckdb")[0]
    )
    expected = "not supported by the Bulk API" if outcome == "unsupported" else outcome
    [warning] = [
        r.getMessage() for r in caplog.records if "reading this window with REST instead" in r.getMessage()
    ]
    assert expected in warning
    assert "bulk2.results" not in sandbox.stats()["requests"]


@pytest.mark.parametrize("threshold", [BULK, REST])
def test_a_row_over_two_megabytes_of_long_text_is_staged(sandbox, tmp_path, threshold):
    """Six full Long Text Area fields of 3-byte characters: a 2.4 MB CSV line, over DuckDB's default
    2,000,000-byte `max_line_size`."""
    record_id = make_id("001", 150)
    text = "€" * LONG_TEXT_LENGTH
    edited = sandbox.update("Account", record_id, {f"Long_Notes_{k:02d}__c": text for k in range(1, 7)})
    result = _stage(sandbox, tmp_path / "s.duckdb", threshold, day=edited["SystemModstamp"][:10])
    assert result.rows == 1 and result.method == ("REST" if threshold == REST else "Bulk")
    lengths = _staged(
        tmp_path / "s.duckdb",
        "SELECT "
        + " + ".join(f"length(Long_Notes_{k:02d}__c)" for k in range(1, 7))
        + f" FROM stg_account WHERE Id = '{record_id}'",
    )
    assert lengths == (6 * LONG_TEXT_LENGTH,)
