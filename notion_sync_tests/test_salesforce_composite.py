"""Windows read through the Composite API: one call counts, reads and lists deletes of a small window."""

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from notion_sync.config import ObjectConfig
from notion_sync.salesforce.extract import stage_partition
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.staging import StagingResource, connect
from notion_sync_tests.sandbox_resources import salesforce_resource

DAY = "2026-11-20"
log = logging.getLogger(__name__)


def _stage(sandbox: SalesforceSandbox, db, **overrides):
    obj = ObjectConfig(name="Account", title_field="Name", start_date=date(2026, 10, 1), **overrides)
    client = salesforce_resource(sandbox, backoff_s=0.01).get_client()
    return stage_partition(client, StagingResource(path=str(db)), obj, DAY, log=log)


def _salesforce_rows(sandbox: SalesforceSandbox) -> set[tuple[str, bool]]:
    """(Id, IsDeleted) of the day's Accounts, as queryAll answers them."""
    client = salesforce_resource(sandbox).get_client()
    query = (
        "SELECT Id, IsDeleted FROM Account WHERE SystemModstamp >= 2026-11-20T00:00:00Z "
        "AND SystemModstamp < 2026-11-21T00:00:00Z"
    )
    return {(r["Id"], r["IsDeleted"]) for r in client.sf.query_all(query, include_deleted=True)["records"]}


def _staged_rows(db) -> set[tuple[str, bool]]:
    with connect(db, read_only=True) as conn:
        return set(conn.execute("SELECT Id, IsDeleted FROM stg_account").fetchall())


def _reads(sandbox: SalesforceSandbox) -> dict[str, int]:
    """The API calls of the run that read Salesforce (the describe aside)."""
    return {k: v for k, v in sandbox.stats()["requests"].items() if ":" not in k and k != "describe"}


@pytest.fixture
def day_of(tmp_path) -> Iterator:
    sandboxes = []

    def make(records: int, **options) -> SalesforceSandbox:
        sandbox = SalesforceSandbox(
            records=records, seed=5, workdir=tmp_path / f"sf{len(sandboxes)}", **options
        )
        sandboxes.append(sandbox.start())
        return sandbox

    yield make
    for sandbox in sandboxes:
        sandbox.stop()


@pytest.mark.parametrize("records", [1_000, 9_000])
def test_a_window_of_up_to_ten_thousand_records_is_read_in_one_call(day_of, tmp_path, records):
    sandbox = day_of(records, days=1)  # all on DAY, spread evenly over the day's five slices
    _stage(sandbox, tmp_path / "s.duckdb")
    deleted = next(r for r in _salesforce_rows(sandbox) if not r[1])[0]
    sandbox.delete("Account", deleted, hard=True, modstamp="2026-11-20T23:59:00.000+0000")  # getDeleted only
    expected = _salesforce_rows(sandbox)
    sandbox.reset_stats()
    used = sandbox.stats()["api_usage"]["used"]

    result = _stage(sandbox, tmp_path / "s.duckdb")

    assert _reads(sandbox) == {"composite": 1}  # the count, every record and getDeleted
    assert sandbox.stats()["requests"]["composite:getDeleted"] == 1
    assert sandbox.stats()["api_usage"]["used"] - used == result.api_calls == 1  # kept describe: probe only
    assert result.method == "REST" and result.rows == result.estimated == len(expected) == records - 1
    assert _staged_rows(tmp_path / "s.duckdb") == expected | {(deleted, True)}  # staged as deleted
    assert result.purged == 1 and result.deleted == sum(gone for _, gone in expected)


def test_a_window_crowded_into_one_slice_is_read_by_chained_query_more_calls(day_of, tmp_path):
    # 168,000 Accounts over the 24 hours up to 01:00 on DAY: DAY holds 7,000, all in its first hour.
    sandbox = day_of(168_000, days=1, end=datetime(2026, 11, 20, 1, tzinfo=UTC))
    expected = _salesforce_rows(sandbox)
    sandbox.reset_stats()

    result = _stage(sandbox, tmp_path / "s.duckdb")

    assert len(expected) == result.rows == result.estimated == 7_000
    assert _staged_rows(tmp_path / "s.duckdb") == expected
    # The probe reads 2,000 (and four empty slices); one more call reads 2,000 + 2,000 + 1,000, the
    # last two pages chained by reference.
    assert _reads(sandbox) == {"composite": 2} and result.pages == 5 + 3
    assert sandbox.stats()["requests"]["composite:queryMore"] == 3


def test_a_window_above_the_bulk_threshold_goes_to_bulk_after_the_probe(day_of, tmp_path):
    sandbox = day_of(3_000, days=1)
    sandbox.reset_stats()
    result = _stage(sandbox, tmp_path / "s.duckdb", bulk_threshold=2_000)
    assert result.method == "Bulk" and result.rows == result.estimated == 3_000
    reads = _reads(sandbox)
    assert reads["composite"] == 1 and reads["bulk2.create"] == 1 and "queryAll" not in reads
    assert _staged_rows(tmp_path / "s.duckdb") == _salesforce_rows(sandbox)


def test_a_window_big_when_last_staged_is_counted_first_instead_of_probed_with_pages(day_of, tmp_path):
    """A window whose days held more than bulk_threshold rows when last staged goes straight to Bulk:
    its probe asks COUNT() and getDeleted, not pages that Bulk would read again."""
    sandbox = day_of(3_000, days=1, render_cache=tmp_path / "rendered")  # counts the records served
    db = tmp_path / "s.duckdb"
    first = _stage(sandbox, db, bulk_threshold=2_000)
    assert first.method == "Bulk"
    served = sandbox.stats()["render_cache"]
    assert served["records_cached"] + served["records_rendered"] == 2 * 3_000  # probe pages, then Bulk
    sandbox.reset_stats()

    again = _stage(sandbox, db, bulk_threshold=2_000)

    served = sandbox.stats()["render_cache"]
    assert served["records_cached"] + served["records_rendered"] == 3_000  # Bulk's only
    assert again.method == "Bulk" and again.rows == again.estimated == 3_000
    # The same calls but the describe (kept): the COUNT() rides in the one probe call the pages took.
    assert again.api_calls == first.api_calls - 1
    assert _reads(sandbox)["composite"] == 1
    assert _staged_rows(db) == _salesforce_rows(sandbox)
