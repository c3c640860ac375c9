"""Extract daily windows of a Salesforce object into `stg_<object>`, page by page.

REST `queryAll` (+ `nextRecordsUrl` pages) for small windows, Bulk API 2.0 `queryAll` (CSV pages by
`Sforce-Locator`) above the object's `bulk_threshold`. Each page is written to disk and loaded into
a spool DuckDB file by DuckDB's own JSON/CSV readers (no row-by-row Python); the spool is swapped
into the staging file at the end (see `notion_sync.staging`). A backfill range of days is read by one
extraction (`stage_days`) and swapped in chunks of consecutive days, one transaction each.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import Operation
from simple_salesforce.exceptions import (
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceResourceNotFound,
)

from notion_sync.automation.modstamps import parse_modstamp
from notion_sync.config import ObjectConfig
from notion_sync.partitions import partition_window, range_window
from notion_sync.salesforce import composite, soql
from notion_sync.salesforce.describes import DescribeCache
from notion_sync.salesforce.resource import SalesforceClient
from notion_sync.staging import (
    SPOOL_TABLE,
    Column,
    Spool,
    StagingResource,
    Swap,
    ensure_table,
    remove_abandoned_spools,
    replace_partitions,
    staged_rows,
)

DUCKDB_TYPES = {
    **dict.fromkeys(
        (
            "id",
            "string",
            "picklist",
            "multipicklist",
            "textarea",
            "url",
            "email",
            "phone",
            "reference",
            "combobox",
            "encryptedstring",
            "time",
            "anyType",
        ),
        "VARCHAR",
    ),
    **dict.fromkeys(("currency", "double", "percent"), "DOUBLE"),
    **dict.fromkeys(("int", "long"), "BIGINT"),
    "boolean": "BOOLEAN",
    "date": "DATE",
    "datetime": "TIMESTAMPTZ",
}
DEFAULT_TYPE = "VARCHAR"  # formula/unknown types keep Salesforce's text form rather than failing
REST_BATCH_SIZE = 2_000
BULK_PAGE_RECORDS = 20_000
# simple-salesforce sleeps this long before its first job status call, then a little longer each time
# (`wait + e**n / 1000`): a small job is read 0.15 s sooner than at 0.2 s, for about one extra call.
BULK_FIRST_POLL_S = 0.05

# getDeleted refuses a start more than 30 days back (INVALID_REPLICATION_DATE); a margin for clock skew.
DELETE_LOG_REACH = timedelta(days=30) - timedelta(minutes=5)

# The field a daily partition is a day of, by preference (Airbyte's order).
REPLICATION_FIELDS = ("SystemModstamp", "LastModifiedDate", "CreatedDate", "LoginTime")

# The most spool rows a range swaps into staging in one transaction: consecutive small days go
# together, one open of the staging file and one commit per chunk rather than per day. A chunk is
# never bigger than one day of 2,000 records (a REST page), so it holds the file no longer than
# swapping such a day alone does (about 85 ms from open to close for 2,000 Accounts; 47 ms for a day
# of 100, and a chunk grows by ~12 ms per 1,000 rows: benchmarks/bench_swap_chunks.py). A day over
# the bound is a chunk of its own, held as long as before. At 300 rows (a 100-Account day's hold
# exactly) a 30-day range of 100 a day took 10 chunks and 0.5 s of its 3.4 s run.
SWAP_CHUNK_ROWS = 2_000

Day = TypeVar("Day")

PageCallback = Callable[[int, int], None]  # (pages so far, rows so far), after each page is spooled


class SalesforceSchemaError(ValueError):
    """The sync config names an object or field Salesforce does not have."""


class BulkUnavailable(RuntimeError):
    """Bulk 2.0 cannot read this window (the job ended Failed or Aborted, or was refused): use REST."""


class Method(StrEnum):
    REST = "REST"
    BULK = "Bulk"


@dataclass(frozen=True)
class ExtractResult:
    rows: int
    deleted: int
    purged: int  # staged records deleted on the day that queryAll no longer returns (getDeleted)
    estimated: int
    method: Method
    pages: int
    added_columns: list[str]
    api_calls: int
    api_remaining: int | None
    duration_s: float
    spool_s: float  # reading Salesforce into the spool
    lock_s: float  # holding the staging file for the swap of this day's chunk of days
    # Days read by the same extraction: estimated, method, pages, api_calls, spool_s and duration_s
    # are the whole range's; rows, deleted, purged this day's, lock_s its chunk's.
    days: int = 1
    spooled: int = 0  # rows read by the extraction (all its days)


def describe_object(sf: Salesforce, name: str) -> Mapping[str, Any]:
    try:
        return getattr(sf, name).describe()
    except SalesforceResourceNotFound:
        raise SalesforceSchemaError(
            f"{name} is not an object in Salesforce (describe: NOT_FOUND); fix or remove objects.{name} "
            "in the sync config"
        ) from None


def check_configured_fields(obj: ObjectConfig, describe: Mapping[str, Any]) -> None:
    """Every field the config syncs must exist, or the Notion side would silently get nothing."""
    known = {field["name"] for field in describe["fields"]}
    for field in obj.property_names():
        if field not in known:
            raise SalesforceSchemaError(
                f"{obj.name}.{field} is not a field of {obj.name} in Salesforce; "
                f"fix objects.{obj.name}.{_config_key(obj, field)}"
            )


def _config_key(obj: ObjectConfig, field: str) -> str:
    """The sync-config key under which `field` is named."""
    if field in obj.fields:
        return "fields"
    return "relations" if field in obj.relations else "title_field"


def staging_columns(describe_fields: Sequence[Mapping[str, Any]]) -> list[Column]:
    """One typed column per queryable field, named exactly as in Salesforce."""
    return [
        Column(field["name"], DUCKDB_TYPES.get(field["type"], DEFAULT_TYPE))
        for field in soql.queryable_fields(describe_fields)
    ]


def count_window(sf: Salesforce, object_name: str, window: Window | None = None) -> int:
    """Records in the window (all without one), deleted ones included (queryAll), as the extraction
    will see them."""
    query = (
        soql.count_query(object_name)
        if window is None
        else soql.count_query(object_name, window.start, window.end, window.field)
    )
    return sf.query(query, include_deleted=True)["totalSize"]


def replication_field(object_name: str, describe: Mapping[str, Any]) -> str:
    """The field partitions are days of: the first of REPLICATION_FIELDS the object has (as Airbyte
    picks it); history objects have only CreatedDate, LoginHistory has LoginTime."""
    names = {field["name"] for field in describe["fields"]}
    for name in REPLICATION_FIELDS:
        if name in names:
            return name
    raise SalesforceSchemaError(
        f"{object_name} has none of {', '.join(REPLICATION_FIELDS)}, so its records cannot be read by "
        f"day; remove objects.{object_name} from the sync config"
    )


@dataclass(frozen=True)
class DeletedWindow:
    """What getDeleted answered: (Id, deletedDate) pairs and the end of the span it covered."""

    records: list[tuple[str, str]]
    covered: datetime  # latestDateCovered: where the next window should start


def deleted_span(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime] | None:
    """`[start, end)` clamped to what getDeleted serves (whole minutes, 30 days back, up to now);
    None when a minute or less remains (Salesforce refuses such a window)."""
    start = _whole_minute(max(start, now - DELETE_LOG_REACH))
    if _whole_minute(min(end, now)) - start <= timedelta(minutes=1):
        return None
    return start, min(end, now)


def deleted_window(result: dict) -> DeletedWindow:
    """getDeleted's answer as a :class:`DeletedWindow`."""
    return DeletedWindow(
        records=[(record["id"], record["deletedDate"]) for record in result["deletedRecords"]],
        covered=parse_modstamp(result["latestDateCovered"]),
    )


def _whole_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def rest_pages(sf: Salesforce, query: str, batch_size: int = REST_BATCH_SIZE) -> Iterator[list[dict]]:
    """queryAll result pages; a page is last only when Salesforce says `done`."""
    headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
    page = sf.query(query, include_deleted=True, headers=headers)
    yield page["records"]
    while not page["done"]:
        page = sf.query_more(
            page["nextRecordsUrl"], identifier_is_url=True, include_deleted=True, headers=headers
        )
        yield page["records"]


def bulk_pages(
    client: SalesforceClient,
    object_name: str,
    query: str,
    directory: Path,
    page_records: int = BULK_PAGE_RECORDS,
) -> Iterator[Path]:
    """Bulk 2.0 queryAll result pages, each streamed to a CSV file in `directory`.

    simple-salesforce's own `download()` only runs `query` jobs (no deleted rows), so this drives its
    Bulk 2.0 client through the same steps with `queryAll`. A page cut off mid-stream is fetched
    again (same locator), since the session can only retry what fails before the body is read.
    """
    bulk = getattr(client.sf.bulk2, object_name)._client
    try:
        job_id = bulk.create_job(Operation.query_all, query)["id"]
    except SalesforceMalformedRequest as error:  # e.g. INVALIDENTITY: not supported by the Bulk API
        if _names_a_missing_field(error):
            raise  # REST would refuse the query too
        raise BulkUnavailable(f"Bulk API refused the {object_name} query job: {error.content}") from error
    try:
        bulk.wait_for_job(job_id, True, wait=BULK_FIRST_POLL_S)
    except SalesforceOperationError as error:  # the job ended Failed or Aborted (or never finished)
        state = bulk.get_job(job_id, True).get("state")
        raise BulkUnavailable(f"Bulk job {job_id} for {object_name} ended {state} ({error})") from error
    locator = ""
    while True:
        page = client.backoff.call(
            partial(bulk.download_job_data, str(directory), job_id, locator, page_records, chunk_size=1 << 20)
        )
        yield Path(page["file"])
        locator = page["locator"]
        if not locator:
            break
    with suppress(requests.JSONDecodeError):  # simple-salesforce parses the empty 204 body
        bulk.delete_job(job_id, True)


def _prefetched(pages: Iterator[Path]) -> Iterator[Path]:
    """Download the next page in a background thread while the caller loads this one.

    DuckDB releases the GIL while it parses a page, so fetching and loading overlap; at most one
    page waits on disk ahead of the one being loaded.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-page") as pool:
        ahead = pool.submit(next, pages, None)
        while (page := ahead.result()) is not None:
            ahead = pool.submit(next, pages, None)
            yield page


@dataclass(frozen=True)
class Window:
    """A partition's records: `[start, end)` on the object's replication field."""

    start: datetime
    end: datetime
    field: str = soql.CURSOR_FIELD


def _select(object_name: str, fields: Sequence[str], window: Window | None, *, ordered: bool = True) -> str:
    """The window's records, or every record of the object without one."""
    if window is None:
        return soql.select_query(object_name, fields, ordered=ordered)
    return soql.select_query(
        object_name, fields, window.start, window.end, ordered=ordered, field=window.field
    )


def _spool_rest(
    sf: Salesforce,
    spool: Spool,
    object_name: str,
    columns: Sequence[Column],
    window: Window | None,
    batch_size: int,
    on_page: PageCallback,
) -> int:
    """Spool REST pages; a field list too long for one URL is read in chunks and joined by Id."""
    by_name = {c.name: c for c in columns}
    chunks = soql.chunk_fields(list(by_name), soql.MAX_QUERY_URL_CHARS)
    tables = [SPOOL_TABLE] if len(chunks) == 1 else [f"chunk_{i}" for i in range(len(chunks))]
    pages = rows = 0
    for table, fields in zip(tables, chunks, strict=True):
        chunk_columns = [by_name[name] for name in fields]
        spool.create_table(table, chunk_columns)
        for records in rest_pages(sf, _select(object_name, fields, window), batch_size):
            page_file = spool.directory / f"page-{pages}.json"
            page_file.write_text(json.dumps(records))
            rows += spool.load_json(table, page_file, chunk_columns)
            page_file.unlink()
            pages += 1
            on_page(pages, rows)
    if len(tables) > 1:
        spool.join_on_id(tables, into=SPOOL_TABLE)
    return pages


def _spool_bulk(
    client: SalesforceClient,
    spool: Spool,
    object_name: str,
    columns: Sequence[Column],
    window: Window | None,
    page_records: int,
    on_page: PageCallback,
) -> int:
    spool.create_table(SPOOL_TABLE, columns)
    types = {c.name: c.type for c in columns}
    query = _select(object_name, list(types), window, ordered=False)
    pages = rows = 0
    for page_file in _prefetched(bulk_pages(client, object_name, query, spool.directory, page_records)):
        rows += spool.load_csv(SPOOL_TABLE, page_file, types)
        page_file.unlink()
        pages += 1
        on_page(pages, rows)
    return pages


def choose_method(obj: ObjectConfig, estimated: int) -> Method:
    return Method.REST if estimated <= obj.bulk_threshold else Method.BULK


def spool_records(
    client: SalesforceClient,
    spool: Spool,
    object_name: str,
    columns: Sequence[Column],
    window: Window | None,
    method: Method,
    sizes: tuple[int, int],
    on_page: PageCallback,
    log: logging.Logger,
) -> tuple[int, Method]:
    """Read `columns` of the window's records (deleted included) into the spool with `method`; Bulk
    falls back to REST for this window when Bulk cannot read it (as Airbyte does). `sizes` are the
    Bulk page records and the REST batch size. Returns the pages and the method that read them."""
    if method is Method.BULK:
        try:
            return _spool_bulk(client, spool, object_name, columns, window, sizes[0], on_page), Method.BULK
        except BulkUnavailable as error:
            log.warning(f"{error}; reading this window with REST instead")
        spool.drop_table(SPOOL_TABLE)
    return _spool_rest(client.sf, spool, object_name, columns, window, sizes[1], on_page), Method.REST


def stage_days(
    client: SalesforceClient,
    staging: StagingResource,
    obj: ObjectConfig,
    partition_keys: Sequence[str],
    *,
    log: logging.Logger,
    rest_batch_size: int = REST_BATCH_SIZE,
    bulk_page_records: int = BULK_PAGE_RECORDS,
    on_page: PageCallback | None = None,
) -> Iterator[tuple[str, ExtractResult]]:
    """Replace the consecutive daily partitions `partition_keys` of `stg_<object>` with what Salesforce
    holds for them; yields ``(partition key, result)`` as each day is swapped in.

    One describe (kept an hour: `notion_sync.salesforce.describes`), one COUNT(), one query or Bulk
    job and one getDeleted read the whole range into one spool; then its days are swapped into staging
    in chunks of consecutive days (SWAP_CHUNK_ROWS), each in its own short connection and transaction:
    a chunk of small days holds the staging file's write lock about as long as one small day's swap
    did, a bigger day as long as before (the realtime lane's writes get in between chunks). A chunk
    that fails stops the range: the days before it stay staged.
    """
    began = time.monotonic()
    cache = DescribeCache(staging.path)
    describe, cached = checked_describe(client.sf, obj, cache)
    options = {"log": log, "sizes": (bulk_page_records, rest_batch_size), "on_page": on_page}
    try:
        yield from _stage_range(client, staging, obj, partition_keys, describe, began, **options)
    except SalesforceMalformedRequest as error:
        # Every Salesforce read of the range comes before its first day is swapped: nothing is
        # staged yet, the range can be read again.
        if not (cached and _names_a_missing_field(error)):
            raise
        log.info(f"{obj.name}: a field of the kept describe is gone ({error.content}); describing again")
        cache.stale(obj.name)
        describe, _ = checked_describe(client.sf, obj, cache)
        yield from _stage_range(client, staging, obj, partition_keys, describe, began, **options)


def checked_describe(
    sf: Salesforce, obj: ObjectConfig, cache: DescribeCache
) -> tuple[Mapping[str, Any], bool]:
    """The object's describe, checked against the config, and whether it is the kept one (a kept
    describe missing a configured field, created since, is fetched again before anything fails)."""
    kept = cache.get(sf, obj.name)
    if kept is not None:
        with suppress(SalesforceSchemaError):
            check_configured_fields(obj, kept)
            return kept, True
    describe = describe_object(sf, obj.name)
    check_configured_fields(obj, describe)
    cache.put(sf, obj.name, describe)
    return describe, False


def _names_a_missing_field(error: SalesforceMalformedRequest) -> bool:
    content = error.content if isinstance(error.content, list) else []
    return any(isinstance(item, dict) and item.get("errorCode") == "INVALID_FIELD" for item in content)


@dataclass(frozen=True)
class WindowRead:
    """A window read into the spool: its record count, the method and pages that read it, and the
    deletes getDeleted listed in it."""

    estimated: int
    method: Method
    pages: int
    deleted: list[tuple[str, datetime]]


def read_window(
    client: SalesforceClient,
    spool: Spool,
    obj: ObjectConfig,
    columns: Sequence[Column],
    window: Window,
    label: str,
    sizes: tuple[int, int],
    on_page: PageCallback,
    log: logging.Logger,
    staged: int | None = None,
) -> WindowRead:
    """Read the window's records (deleted included) into the spool table, and its getDeleted log.

    A probe Composite call counts the window and reads its first pages and getDeleted at once (see
    `notion_sync.salesforce.composite`); REST goes on from its pages, Bulk reads the window again.
    A window whose days held more than `bulk_threshold` rows when last staged (`staged`), or whose
    field list is too long for one query URL, is probed with a COUNT() instead of pages (no pages
    read for nothing before Bulk), then read by Bulk or by REST page by page.
    """
    names = [c.name for c in columns]
    flagged = "IsDeleted" in names
    chunked = len(soql.chunk_fields(names, soql.MAX_QUERY_URL_CHARS)) > 1
    big = staged is not None and staged > obj.bulk_threshold
    if big and not chunked:
        log.info(f"{obj.name} {label}: {staged} rows when last staged, over bulk_threshold: counting first")
    fields = None if chunked or big else names
    slices, answers, deleted = _probe(client, spool.directory, obj.name, fields, window, flagged, sizes[1])
    estimated = sum(s.total for s in slices)
    method = _announce(obj, label, estimated, len(columns), log)
    if fields is not None and method is Method.REST:
        pages = _spool_composite(client, spool, obj.name, columns, slices, answers, sizes[1], on_page)
        return WindowRead(estimated, method, pages, deleted)
    for answer in answers:
        if answer.records is not None:
            answer.records.unlink()
    pages, method = spool_records(client, spool, obj.name, columns, window, method, sizes, on_page, log)
    return WindowRead(estimated, method, pages, deleted)


def _announce(obj: ObjectConfig, label: str, estimated: int, fields: int, log: logging.Logger) -> Method:
    method = choose_method(obj, estimated)
    log.info(
        f"{obj.name} {label}: {estimated} records (deleted included), {fields} fields; "
        f"reading them with {method.value} (bulk_threshold {obj.bulk_threshold})"
    )
    return method


def _probe(
    client: SalesforceClient,
    directory: Path,
    object_name: str,
    fields: Sequence[str] | None,
    window: Window,
    flagged: bool,
    batch_size: int,
) -> tuple[list[composite.Slice], list[composite.SubResponse], list[tuple[str, datetime]]]:
    """One Composite call: the first page of each of up to 5 slices of the window (without
    `fields`: the window's COUNT() instead), and getDeleted (when the object has IsDeleted and the
    window is within its 30 days). Returns the slices with their counts, the page answers, and the
    deletes listed."""
    version = client.sf.sf_version
    if fields is None:
        slices = [
            composite.Slice("count", soql.count_query(object_name, window.start, window.end, window.field))
        ]
    else:
        slices = [
            composite.Slice(f"s{i}", _select(object_name, fields, part))
            for i, part in enumerate(window_slices(window, composite.QUERY_OPERATIONS))
        ]
    subrequests = [
        composite.query_subrequest(s.reference, composite.queryall_url(version, s.query), batch_size)
        for s in slices
    ]
    span = deleted_span(window.start, window.end, datetime.now(UTC)) if flagged else None
    if span is not None:
        url = composite.deleted_url(version, object_name, span)
        subrequests.append({"method": "GET", "url": url, "referenceId": "deleted"})
    answers = composite.post(client, subrequests, directory)
    for answer in answers:
        answer.raise_for_status(object_name)
    pages = [a for a in answers if a.reference != "deleted"]
    for s, answer in zip(slices, pages, strict=True):
        s.total = answer.body["totalSize"]
    found = [deleted_window(a.body) for a in answers if a.reference == "deleted"]
    deleted = [(record_id, parse_modstamp(when)) for record_id, when in found[0].records] if found else []
    return slices, pages, deleted


def window_slices(window: Window, count: int) -> list[Window]:
    """`window` cut into up to `count` consecutive slices of equal length in whole seconds (SOQL
    datetimes have no fractions), together exactly the window."""
    seconds = int((window.end - window.start).total_seconds())
    cuts = sorted({window.start + timedelta(seconds=seconds * i // count) for i in range(count)})
    return [
        Window(start, end, window.field) for start, end in zip(cuts, [*cuts[1:], window.end], strict=True)
    ]


def _spool_composite(
    client: SalesforceClient,
    spool: Spool,
    object_name: str,
    columns: Sequence[Column],
    slices: list[composite.Slice],
    answers: list[composite.SubResponse],
    batch_size: int,
    on_page: PageCallback,
) -> int:
    """Load the probe's pages, then read the slices' next pages, up to 5 per Composite call;
    `on_page` is told once per call (its pages arrive together)."""
    spool.create_table(SPOOL_TABLE, columns)
    by_reference = {s.reference: s for s in slices}
    pages = rows = 0
    while True:
        for answer in answers:
            s = by_reference[composite.slice_of(answer.reference)]
            if composite.halted_after_last_page(answer, s):
                continue
            answer.raise_for_status(object_name)
            if answer.records is None:
                raise SalesforceGeneralError(answer.reference, answer.status, object_name, answer.body)
            loaded = spool.load_json(SPOOL_TABLE, answer.records, columns)
            answer.records.unlink()
            composite.record_page(s, answer, loaded)
            pages += 1
            rows += loaded
        on_page(pages, rows)
        subrequests = composite.more_subrequests(slices, batch_size)
        if not subrequests:
            return pages
        answers = composite.post(client, subrequests, spool.directory)


def _stage_range(
    client: SalesforceClient,
    staging: StagingResource,
    obj: ObjectConfig,
    partition_keys: Sequence[str],
    describe: Mapping[str, Any],
    began: float,
    *,
    log: logging.Logger,
    sizes: tuple[int, int],
    on_page: PageCallback | None,
) -> Iterator[tuple[str, ExtractResult]]:
    """`stage_days` with the object's describe: `sizes` are the Bulk page records and REST batch size."""
    columns = staging_columns(describe["fields"])
    window = Window(*range_window(partition_keys), replication_field(obj.name, describe))
    label = partition_keys[0] + (f"..{partition_keys[-1]}" if len(partition_keys) > 1 else "")
    on_page = on_page or (lambda pages, rows: log.debug(f"{obj.name}: {pages} page(s) spooled, {rows} rows"))
    for directory, size in remove_abandoned_spools(staging.path):
        log.warning(f"removed {directory.name} ({size / 2**20:.0f} MB), the spool of a run that was killed")
    first, last = (partition_window(key)[0].date() for key in (partition_keys[0], partition_keys[-1]))
    with staging.connect(read_only=True) as conn:
        staged = staged_rows(conn, obj.staging_table, first, last)
    with Spool.create(staging.path) as spool:
        read = read_window(client, spool, obj, columns, window, label, sizes, on_page, log, staged)
        estimated, method, pages, log_deleted = read.estimated, read.method, read.pages, read.deleted
        flagged = "IsDeleted" in {c.name for c in columns}
        by_day = spool.count_by_day(SPOOL_TABLE, window.field, "IsDeleted" if flagged else None)
        spool.close()
        spool_s = time.monotonic() - began
        spooled = sum(total for total, _ in by_day.values())
        swapped = _swap_days(
            staging, obj, spool.path, columns, partition_keys, window.field, by_day, log_deleted
        )
        for key, swap, lock_s, added in swapped:
            if added:
                log.info(
                    f"{obj.name}: new Salesforce fields added to {obj.staging_table}: {', '.join(added)}"
                )
            if swap.tombstones:
                log.info(
                    f"{obj.name} {key}: {swap.tombstones} staged records were deleted for good "
                    "(getDeleted; gone from queryAll): staged as deleted in this partition, their pages get "
                    "trashed"
                )
            day = partition_window(key)[0].date()
            rows, deleted = by_day.get(day, (0, 0))
            yield (
                key,
                ExtractResult(
                    rows=rows,
                    deleted=deleted,
                    purged=swap.tombstones,
                    estimated=estimated,
                    method=method,
                    pages=pages,
                    added_columns=added,
                    api_calls=client.budget.calls,
                    api_remaining=client.budget.remaining,
                    duration_s=time.monotonic() - began,
                    spool_s=spool_s,
                    lock_s=lock_s,
                    days=len(partition_keys),
                    spooled=spooled,
                ),
            )


def chunk_days(days: Sequence[Day], rows: Mapping[Day, int], bound: int) -> list[list[Day]]:
    """`days` cut into runs of consecutive days holding at most `bound` rows in all (a day holding more
    is a run of its own)."""
    chunks: list[list[Day]] = []
    total = bound + 1  # the first day starts a chunk
    for day in days:
        size = rows.get(day, 0)
        if total + size > bound:
            chunks.append([])
            total = 0
        chunks[-1].append(day)
        total += size
    return chunks


def _swap_days(
    staging: StagingResource,
    obj: ObjectConfig,
    spool_path: Path,
    columns: Sequence[Column],
    partition_keys: Sequence[str],
    cursor: str,
    by_day: Mapping[date, tuple[int, int]],
    log_deleted: Sequence[tuple[str, datetime]],
) -> Iterator[tuple[str, Swap, float, list[str]]]:
    """Swap the spool's days into staging, consecutive days together up to SWAP_CHUNK_ROWS spool rows,
    each chunk in one short connection and one transaction; yields ``(key, swap, the chunk's hold,
    fields added)`` for each day once its chunk is committed.

    A chunk holds the staging file no longer than a day of SWAP_CHUNK_ROWS records alone would,
    and the realtime lane's writes get in between chunks; a chunk that fails leaves the chunks
    before it staged and its own days as they were.
    """
    days = {key: partition_window(key)[0].date() for key in partition_keys}
    rows = {key: by_day.get(day, (0, 0))[0] for key, day in days.items()}
    added: list[str] | None = None  # the table has the spool's columns (columns are only ever added)
    for chunk in chunk_days(partition_keys, rows, SWAP_CHUNK_ROWS):
        with staging.connect() as conn:
            locked = time.monotonic()
            if added is None:
                added = ensure_table(conn, obj.staging_table, columns)
            swaps = replace_partitions(
                conn,
                obj.staging_table,
                spool_path,
                [days[key] for key in chunk],
                cursor=cursor,
                deleted=log_deleted,
            )
            lock_s = time.monotonic() - locked
        for key, swap in zip(chunk, swaps, strict=True):
            yield key, swap, lock_s, added
            added = []


def stage_partition(
    client: SalesforceClient,
    staging: StagingResource,
    obj: ObjectConfig,
    partition_key: str,
    **options: Any,
) -> ExtractResult:
    """Replace partition `partition_key` of `stg_<object>` with what Salesforce holds for that day."""
    [(_, result)] = stage_days(client, staging, obj, [partition_key], **options)
    return result
