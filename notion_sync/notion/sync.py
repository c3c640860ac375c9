"""The per-partition upsert engine: staged Salesforce rows → Notion pages, idempotently.

For one object and one daily partition (a backfill range is its days in order, `sync_days`):

1. read the partition's staged rows, their sync_state and their parents' pages, 5,000 rows at a
   time (a short read each, as the workers need more), so memory stays flat whatever its size;
2. plan each chunk: unchanged content hash → nothing; changed → one PATCH; new → one POST; deleted in
   Salesforce → PATCH ``in_trash``; a parent without a page yet → the relation is left pending;
3. run the requests through `run_pipelined` (the shared limiter sets the pace), recording every
   outcome in buffered, batched writes;
4. fill the pending relations whose parent pages now exist (this object's or its children's).

No duplicates: a record is created only when sync_state has no page for it. sync_state is rebuilt
from Notion when it is empty (a page that already shows its record's values is not written again);
when the partition's previous run did not finish, records without a page are looked up by
``Salesforce Id`` before being created, as is any create whose outcome is unknown
(`AmbiguousWriteError`).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from notion_sync.config import SALESFORCE_ID_PROPERTY, ObjectConfig
from notion_sync.notion import state
from notion_sync.notion.client import NotionClient, find_settled, plain_text
from notion_sync.notion.errors import (
    AmbiguousWriteError,
    CommittedWriteError,
    NotionApiError,
    PermanentNotionError,
    RunStoppingError,
    limits_hit,
)
from notion_sync.notion.pipeline import run_pipelined
from notion_sync.notion.properties import (
    FOUND_PREFIX,
    PropertySpec,
    content_hash,
    found_hash,
    page_properties,
    property_specs,
    property_value,
)
from notion_sync.notion.resource import NotionResource
from notion_sync.notion.schema import ensure_data_source
from notion_sync.staging import PARTITION_COLUMN, quote_ident

log = logging.getLogger(__name__)

CREATE_ATTEMPTS = 3  # creates with an unknown outcome, each followed by a lookup, before giving up
REBUILD_CHUNK = 100  # pages of a rebuild whose related records are looked up together
READ_CHUNK = 5_000  # staged rows read and planned at a time
# Why a record is skipped (sync_log's error_code and error_message; `notion-sync status` shows it).
SKIP_REASON = {
    "error_code": "deleted_before_sync",
    "error_message": "deleted in Salesforce before its first sync: there is no Notion page to trash",
}


class SyncIncomplete(RuntimeError):
    """Some records failed transiently after the client's retries; a re-run resumes where this stopped."""


@dataclass
class Upsert:
    """One planned write for one record."""

    sf_id: str
    kind: str  # create | update | archive
    properties: dict[str, Any] | None = None
    content_hash: str | None = None
    page_id: str | None = None
    restore: bool = False  # the page is in the trash and the record is live again
    verify: bool = False  # an interrupted run may have created the page already: look it up first
    pending: list[tuple[str, str, str]] = field(default_factory=list)  # (property, parent, parent sf id)
    resolved: list[str] = field(default_factory=list)  # relation properties written with a page


@dataclass
class SyncReport:
    object: str
    partition: str
    data_source_id: str
    records: int
    totals: Counter[str]
    requests: int
    rate_limited: int
    duration_s: float
    latencies_ms: list[float]
    relations_filled: int
    failures: list[tuple[str, str, str]]  # (sf_id, error code, message)
    rate_limit_reasons: dict[str, int] = field(default_factory=dict)  # 429s by the limit they hit
    # Other partitions to sync again: the object's database was replaced (the old one was gone).
    resync_partitions: list[str] = field(default_factory=list)

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def latency_percentile(self, q: int) -> float:
        """The q-th percentile of request latency in ms (0 without requests)."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


# --- Reading ---------------------------------------------------------------------------------


@dataclass
class PartitionData:
    """One chunk of a partition: staged rows (by Id), their sync_state and their parents' pages."""

    rows: list[dict[str, Any]]
    states: dict[str, state.PageState]
    parent_pages: dict[tuple[str, str], str]  # (parent object, sf id) -> page id


@dataclass(frozen=True)
class PartitionSurvey:
    records: int  # staged rows in the partition
    unmapped: int  # live records in it without a page in sync_state
    known_pages: int  # records of the object with a page in sync_state (any partition)
    columns: tuple[str, ...]  # the staged columns the sync reads


def staged_columns(conn: Any, obj: ObjectConfig, specs: Sequence[PropertySpec]) -> tuple[str, ...]:
    """Id, IsDeleted and the synced fields: a partition is read without its dozens of other columns."""
    staged = {
        d[0] for d in conn.execute(f"SELECT * FROM {quote_ident(obj.staging_table)} LIMIT 0").description
    }
    wanted = dict.fromkeys(["Id", "IsDeleted", *(spec.field for spec in specs)])
    return tuple(name for name in wanted if name in staged)


def survey_partition(
    connect: state.Connect, obj: ObjectConfig, specs: Sequence[PropertySpec], partition: str
) -> PartitionSurvey:
    """Counts that decide how the partition is synced, without reading its rows into memory."""
    table = quote_ident(obj.staging_table)
    with connect() as conn:
        columns = staged_columns(conn, obj, specs)
        live = "NOT coalesce(IsDeleted, false)" if "IsDeleted" in columns else "true"
        records, unmapped = conn.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {live} AND s.sf_id IS NULL) FROM {table} t "
            f"LEFT JOIN sync_state s ON s.object = ? AND s.sf_id = t.Id WHERE t.{PARTITION_COLUMN} = ?::DATE",
            [obj.name, partition],
        ).fetchone()
        known_pages = state.count_pages(conn, obj.name)
    return PartitionSurvey(records, unmapped, known_pages, columns)


def read_partition(
    connect: state.Connect,
    obj: ObjectConfig,
    specs: Sequence[PropertySpec],
    partition: str,
    columns: Sequence[str],
    chunk_rows: int,
) -> Iterator[PartitionData]:
    """The partition in chunks of ``chunk_rows`` rows by Id, each read in its own short connection
    (the staging file stays free for other processes between chunks; memory stays flat)."""
    select, table = ", ".join(quote_ident(c) for c in columns), quote_ident(obj.staging_table)
    in_partition = f"{PARTITION_COLUMN} = ?::DATE AND Id > ?"
    after = ""
    while True:
        with connect() as conn:
            # The chunk's last Id first, from the Id column alone: sorting whole rows to keep 5,000
            # peaked 60 MB higher on a 300,000-row partition, and grew with the partition.
            last = conn.execute(
                f"SELECT max(Id) FROM (SELECT Id FROM {table} WHERE {in_partition} ORDER BY Id "
                f"LIMIT {int(chunk_rows)})",
                [partition, after],
            ).fetchone()[0]
            if last is None:
                return
            cursor = conn.execute(
                f"SELECT {select} FROM {table} WHERE {in_partition} AND Id <= ? ORDER BY Id",
                [partition, after, last],
            )
            rows = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
            states = state.page_states(conn, obj.name, [row["Id"] for row in rows])
            parent_pages: dict[tuple[str, str], str] = {}
            for spec in specs:
                if spec.relation_to:
                    ids = sorted({row[spec.field] for row in rows if row.get(spec.field)})
                    for sf_id, page in state.page_states(conn, spec.relation_to, ids).items():
                        parent_pages[(spec.relation_to, sf_id)] = page.page_id
        yield PartitionData(rows, states, parent_pages)
        after = rows[-1]["Id"]


def page_salesforce_id(page: dict[str, Any]) -> str:
    """The ``Salesforce Id`` of a Notion page object; "" when the page has none."""
    return plain_text(page.get("properties", {}).get(SALESFORCE_ID_PROPERTY, {}).get("rich_text"))


@dataclass(frozen=True)
class PageCopy:
    """One of the pages holding a record (several: an old create whose outcome was unknown)."""

    page_id: str
    created_time: str
    content_hash: str


def survivor(
    copies: Iterable[PageCopy], recorded: str | None = None, referenced: Collection[str] = ()
) -> PageCopy:
    """The page to keep among a record's copies: the one sync_state holds (``recorded``), else one
    that a relation points to (``referenced``), else the oldest. ``created_time`` is kept to the
    minute and Notion keeps no order within one, so ties go to the lowest page id, never to the
    order the pages were read in."""
    return min(
        copies,
        key=lambda copy: (
            copy.page_id != recorded,
            copy.page_id not in referenced,
            copy.created_time,
            copy.page_id,
        ),
    )


def rebuild_state(
    client: NotionClient,
    writer: state.StateWriter,
    data_source_id: str,
    specs: Sequence[PropertySpec],
    *,
    trash_duplicates: bool,
) -> int:
    """Record every page of the data source missing from sync_state (100 pages a request, every page
    whatever their number: `NotionClient.all_pages`). Returns the number of records found.

    Each page is recorded with the `found_hash` of what it shows, so a record whose page already
    holds its staged values is not written again. A record with several pages keeps the `survivor`;
    with ``trash_duplicates`` (sync_state was empty, so no page is referenced yet) the others are
    trashed.
    """
    started = state.now()
    first: dict[str, str] = {}  # sf_id -> the first of its pages read
    copies: dict[str, list[PageCopy]] = {}  # sf_id -> its other pages, for records with several
    self_relations = [spec for spec in specs if spec.relation_to == writer.object_name]
    referenced: set[str] = set()  # pages of this data source that its pages relate to
    for chunk in chunked(client.all_pages(data_source_id), REBUILD_CHUNK):
        parents = _related_records(writer, specs, chunk)
        for page in chunk:
            referenced.update(relation_ids(self_relations, [page]))
            sf_id = page_salesforce_id(page)
            if not sf_id:
                continue
            digest = found_hash(specs, page.get("properties", {}), parents)
            if sf_id in first:
                copies.setdefault(sf_id, []).append(PageCopy(page["id"], page["created_time"], digest))
                continue
            first[sf_id] = page["id"]
            writer.discover_state(sf_id, page["id"], digest)
        writer.maybe_flush()  # a rebuild of a million pages must not hold them all before writing
    writer.flush()
    if copies:
        _settle_copies(client, writer, specs, first, copies, referenced, started, trash=trash_duplicates)
    return len(first)


def _settle_copies(
    client: NotionClient,
    writer: state.StateWriter,
    specs: Sequence[PropertySpec],
    first: dict[str, str],
    copies: dict[str, list[PageCopy]],
    referenced: set[str],
    started: datetime,
    *,
    trash: bool,
) -> None:
    """Keep each duplicated record's `survivor` in sync_state (and trash the other copies if ``trash``).

    A record sync_state mapped before the rebuild keeps its page; one the rebuild recorded (the first
    of its pages read) gets the survivor instead.
    """
    with writer.connect() as conn:
        mapped = state.page_states(conn, writer.object_name, sorted(copies))
        rebuilt = state.written_since(conn, writer.object_name, sorted(copies), started)
    for sf_id, others in copies.items():
        page = client.retrieve_page(first[sf_id])
        parents = _related_records(writer, specs, [page])
        read = PageCopy(page["id"], page["created_time"], found_hash(specs, page["properties"], parents))
        held = mapped[sf_id].page_id if sf_id in mapped and sf_id not in rebuilt else None
        keep = survivor([read, *others], held, referenced)
        if held is None:
            writer.save_state(sf_id, keep.page_id, keep.content_hash)
        if trash:
            for copy in [read, *others]:
                if copy.page_id not in (keep.page_id, held):
                    client.update_page(copy.page_id, in_trash=True)
    writer.flush()
    log.info("%s: %d records have several pages; kept one of each", writer.object_name, len(copies))


def chunked(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def relation_ids(specs: Sequence[PropertySpec], pages: Sequence[dict[str, Any]]) -> set[str]:
    """The page ids the relation properties (of ``specs``) of ``pages`` point to."""
    return {
        item["id"]
        for page in pages
        for spec in specs
        if spec.relation_to
        for item in page.get("properties", {}).get(spec.name, {}).get("relation") or []
    }


def _related_records(
    writer: state.StateWriter, specs: Sequence[PropertySpec], pages: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """The Salesforce Ids of the pages that ``pages`` relate to (one short read per chunk)."""
    related = relation_ids(specs, pages)
    if not related:
        return {}
    writer.flush()  # parents discovered earlier in this rebuild (self-relations) must be readable
    with writer.connect() as conn:
        return state.records_of_pages(conn, sorted(related))


# --- Planning --------------------------------------------------------------------------------


def _relations(
    specs: Sequence[PropertySpec],
    row: dict[str, Any],
    parent_pages: dict[tuple[str, str], str],
) -> tuple[dict[str, list[str]], list[tuple[str, str, str]], list[str]]:
    """Relation page ids for the payload, the pending relations and the resolved relation properties."""
    pages: dict[str, list[str]] = {}
    pending: list[tuple[str, str, str]] = []
    resolved: list[str] = []
    for spec in specs:
        if not spec.relation_to:
            continue
        parent_id = row.get(spec.field)
        page = parent_pages.get((spec.relation_to, parent_id)) if parent_id else None
        pages[spec.field] = [page] if page else []
        if parent_id and not page:
            pending.append((spec.name, spec.relation_to, parent_id))
        else:
            resolved.append(spec.name)
    return pages, pending, resolved


def hashed_row(specs: Sequence[PropertySpec], row: dict[str, Any]) -> dict[str, Any]:
    """A staged row as the page properties its content hash covers: relations named by the parent's
    Salesforce Id, so the hash does not change when a pending relation is filled in later."""
    return page_properties(
        specs, row, {s.field: [row[s.field]] for s in specs if s.relation_to and row.get(s.field)}
    )


def _unchanged(
    specs: Sequence[PropertySpec], current: state.PageState, digest: str, hashed: dict[str, Any]
) -> bool:
    """Whether the page already holds the row: by content hash, or canonically for a found page."""
    if current.content_hash and current.content_hash.startswith(FOUND_PREFIX):
        return current.content_hash == found_hash(specs, hashed)
    return current.content_hash == digest


def written_with(specs: Sequence[PropertySpec], current: state.PageState, hashed: dict[str, Any]) -> bool:
    """Whether sync_state says the page was last written with (or found holding) ``hashed``."""
    return _unchanged(specs, current, content_hash(hashed), hashed)


def plan(
    specs: Sequence[PropertySpec], data: PartitionData, *, verify_new: bool
) -> tuple[list[Upsert], list[tuple[str, str]]]:
    """The writes the partition needs, and ``(sf_id, action)`` of the records needing none.

    The content hash covers the payload with relations named by the parent's Salesforce Id, so it
    does not change when a pending relation is filled in later.
    """
    upserts: list[Upsert] = []
    idle: list[tuple[str, str]] = []
    for row in data.rows:
        sf_id, current = row["Id"], data.states.get(row["Id"])
        if row.get("IsDeleted"):
            if current and not current.in_trash:
                upserts.append(
                    Upsert(sf_id, "archive", page_id=current.page_id, content_hash=current.content_hash)
                )
            else:
                idle.append((sf_id, "unchanged" if current else "skipped"))
            continue
        hashed = hashed_row(specs, row)
        digest = content_hash(hashed)
        if current and _unchanged(specs, current, digest, hashed) and not current.in_trash:
            idle.append((sf_id, "unchanged"))
            continue
        relation_pages, pending, resolved = _relations(specs, row, data.parent_pages)
        payload = {
            **hashed,
            **{
                spec.name: property_value(spec, relation_pages[spec.field])
                for spec in specs
                if spec.relation_to
            },
        }
        upserts.append(
            Upsert(
                sf_id,
                "update" if current else "create",
                payload,
                digest,
                page_id=current.page_id if current else None,
                restore=bool(current and current.in_trash),
                verify=verify_new and not current,
                pending=pending,
                resolved=resolved,
            )
        )
    return upserts, idle


# --- Writing ---------------------------------------------------------------------------------


def _lookup(client: NotionClient, data_source_id: str, sf_id: str) -> str | None:
    """The record's page; of several (an earlier create with an unknown outcome), the `survivor`."""
    pages = client.find_pages_by_property(data_source_id, SALESFORCE_ID_PROPERTY, sf_id)
    copies = [PageCopy(page["id"], page["created_time"], "") for page in pages]
    return survivor(copies).page_id if copies else None


def _create(client: NotionClient, data_source_id: str, upsert: Upsert) -> str:
    """Create the page once: an earlier or ambiguous create is looked up before trying again; a create
    Notion says it saved is never repeated (its answer names the page, else it is looked up)."""
    if upsert.verify and (page_id := _lookup(client, data_source_id, upsert.sf_id)):
        client.update_page(page_id, properties=upsert.properties)
        return page_id
    attempts = 0
    while True:
        try:
            return client.create_page(data_source_id, upsert.properties or {})["id"]
        except CommittedWriteError as error:
            if error.committed_resource_id:
                return error.committed_resource_id
            if page_id := find_settled(client, lambda: _lookup(client, data_source_id, upsert.sf_id)):
                return page_id
            raise  # saved, Notion said, but not found yet: the next run looks it up again
        except AmbiguousWriteError:
            attempts += 1
            if page_id := find_settled(client, lambda: _lookup(client, data_source_id, upsert.sf_id)):
                return page_id
            if attempts >= CREATE_ATTEMPTS:
                raise


@dataclass(frozen=True)
class Skipped:
    """A record left as it is on purpose; ``code`` and ``reason`` go to sync_log (and ``status``)."""

    code: str
    reason: str


TRASHED_SKIPPED = Skipped(
    "page_in_trash",
    "page in Notion's trash, left there (notion.trashed_pages: skip)",
)


def _in_trash(error: PermanentNotionError) -> bool:
    """Notion's answer to editing (or trashing again) a page that is in the trash: a 400, not a 404."""
    return error.status == 400 and "is archived" in error.message


def perform(
    client: NotionClient, data_source_id: str, upsert: Upsert, trashed_pages: str = "restore"
) -> str | Skipped:
    """Send the upsert's request(s); returns the page id, or `Skipped`.

    A page deleted in Notion (404) is created again on update, and counts as archived on archive.
    A page a person moved to the trash is restored with the update (``trashed_pages`` "restore") or
    left there and the record skipped ("skip"); on archive it is already where it should be. A
    write Notion says it saved (`CommittedWriteError`) is done.
    """
    try:
        if upsert.kind == "archive":
            client.update_page(upsert.page_id, in_trash=True)
            return upsert.page_id
        if upsert.kind == "update":
            client.update_page(
                upsert.page_id, properties=upsert.properties, in_trash=False if upsert.restore else None
            )
            return upsert.page_id
    except CommittedWriteError:
        return upsert.page_id
    except PermanentNotionError as error:
        if _in_trash(error):
            if upsert.kind == "update" and trashed_pages == "skip":
                return TRASHED_SKIPPED
            if upsert.kind == "update":
                client.update_page(upsert.page_id, properties=upsert.properties, in_trash=False)
            return upsert.page_id
        if error.status != 404:
            raise
        if upsert.kind == "archive":
            return upsert.page_id
    return _create(client, data_source_id, upsert)


@dataclass
class _Progress:
    totals: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    transient: int = 0
    last_id: str | None = None

    def count(self, sf_id: str, action: str) -> None:
        self.totals[action] += 1
        self.totals["processed"] += 1
        if action not in ("failed", "skipped"):
            self.totals["succeeded"] += 1
        self.last_id = max(self.last_id or sf_id, sf_id)


def _record(
    writer: state.StateWriter,
    progress: _Progress,
    partition: str,
    upsert: Upsert,
    outcome: str | Skipped | NotionApiError,
    stats: state.CallStats,
) -> None:
    if isinstance(outcome, Skipped):
        writer.log(
            partition,
            upsert.sf_id,
            "skipped",
            "skipped",
            stats=stats,
            error_code=outcome.code,
            error_message=outcome.reason,
        )
        progress.count(upsert.sf_id, "skipped")
        return
    if isinstance(outcome, NotionApiError):
        permanent = isinstance(outcome, PermanentNotionError)
        progress.transient += not permanent
        progress.failures.append((upsert.sf_id, outcome.code, outcome.message))
        writer.log(
            partition,
            upsert.sf_id,
            "failed",
            "permanent_error" if permanent else "transient_error",
            stats=stats,
            error_code=outcome.code,
            error_message=outcome.message[:1000],
        )
        progress.count(upsert.sf_id, "failed")
        return
    action = {"create": "created", "update": "updated", "archive": "archived"}[upsert.kind]
    writer.save_state(upsert.sf_id, outcome, upsert.content_hash, in_trash=upsert.kind == "archive")
    for prop, parent, parent_sf_id in upsert.pending:
        writer.add_pending(upsert.sf_id, prop, parent, parent_sf_id)
    for prop in upsert.resolved:
        writer.resolve_pending(writer.object_name, upsert.sf_id, prop)
    writer.log(partition, upsert.sf_id, action, "success", stats=stats)
    progress.count(upsert.sf_id, action)


def _tracked(writer: state.StateWriter, call: Any) -> Any:
    """``call`` as a pipeline work function returning ``(result or NotionApiError, call stats)``."""

    def work(item: Any) -> tuple[Any, state.CallStats]:
        with writer.track_calls() as stats:
            try:
                return call(item), stats
            except RunStoppingError:  # no other record can succeed either: stop the run
                raise
            except NotionApiError as error:
                return error, stats

    return work


def _ready_relations(writer: state.StateWriter) -> Iterator[tuple[str, ...]]:
    """The pending relations of or to this object whose pages both exist now, read READ_CHUNK at a
    time in key order (a backfill of children before their parents can leave a great many)."""
    writer.flush()
    after = ("", "", "")
    while True:
        with writer.connect() as conn:
            ready = state.ready_pending_relations(conn, writer.object_name, after, READ_CHUNK)
        if not ready:
            return
        yield from ready
        after = ready[-1][:3]


def fill_pending_relations(client: NotionClient, writer: state.StateWriter, workers: int) -> int:
    """Write the pending relations of or to this object whose pages both exist now; returns the count."""

    def relate(item: tuple[str, ...]) -> None:
        _, _, prop, _, _, child_page, parent_page = item
        client.update_page(child_page, properties={prop: {"relation": [{"id": parent_page}]}})

    filled = 0
    for item, result in run_pipelined(_ready_relations(writer), _tracked(writer, relate), workers):
        if isinstance(result, BaseException):
            raise result
        if not isinstance(result[0], NotionApiError):  # a failed one stays pending for the next sync
            writer.resolve_pending(*item[:3])
            filled += 1
        writer.maybe_flush()
    writer.flush()
    return filled


def _should_rebuild(survey: PartitionSurvey, uncertain: bool) -> bool:
    """Rebuild when sync_state is empty, or when looking up each unmapped record would cost more
    requests than paging through the whole data source (an interrupted run of a big partition)."""
    unmapped, known = survey.unmapped, survey.known_pages
    return unmapped > 0 and (known == 0 or (uncertain and unmapped > known // 100 + 1))


def _planned(
    writer: state.StateWriter,
    obj: ObjectConfig,
    specs: Sequence[PropertySpec],
    partition: str,
    survey: PartitionSurvey,
    progress: _Progress,
    *,
    verify_new: bool,
) -> Iterator[Upsert]:
    """The partition's writes, planned a chunk at a time as the pipeline asks for them; records that
    need none are counted on the way (and logged when skipped)."""
    for chunk in read_partition(writer.connect, obj, specs, partition, survey.columns, READ_CHUNK):
        upserts, idle = plan(specs, chunk, verify_new=verify_new)
        for sf_id, action in idle:
            if action == "skipped":
                writer.log(partition, sf_id, action, "skipped", **SKIP_REASON)
            progress.count(sf_id, action)
        writer.maybe_flush()
        yield from upserts


def _execute(
    client: NotionClient,
    writer: state.StateWriter,
    data_source_id: str,
    partition: str,
    upserts: Iterable[Upsert],
    workers: int,
    progress: _Progress,
    trashed_pages: str,
) -> None:
    work = _tracked(writer, lambda upsert: perform(client, data_source_id, upsert, trashed_pages))
    for upsert, result in run_pipelined(upserts, work, workers):
        if isinstance(result, BaseException):
            raise result
        _record(writer, progress, partition, upsert, *result)
        writer.maybe_flush()


def sync_partition(
    client: NotionClient,
    writer: state.StateWriter,
    obj: ObjectConfig,
    specs: Sequence[PropertySpec],
    data_source_id: str,
    partition: str,
    *,
    workers: int = 8,
) -> SyncReport:
    """Upsert one partition of ``obj`` into its data source; raises `SyncIncomplete` on transient failures."""
    started = time.monotonic()
    requests_before, rate_limited_before = writer.requests, writer.rate_limited_calls
    with writer.connect() as conn:
        previous = state.start_batch(conn, writer.run_id, obj.name, partition)
    progress, status, summary, filled, records = _Progress(), "failed", None, 0, 0
    try:
        uncertain = previous not in (None, "succeeded")  # a killed or failed run may have created pages
        survey = survey_partition(writer.connect, obj, specs, partition)
        if _should_rebuild(survey, uncertain):
            rebuild_state(client, writer, data_source_id, specs, trash_duplicates=survey.known_pages == 0)
            uncertain = False
        records = survey.records
        upserts = _planned(writer, obj, specs, partition, survey, progress, verify_new=uncertain)
        _execute(
            client, writer, data_source_id, partition, upserts, workers, progress, obj.notion.trashed_pages
        )
        filled = fill_pending_relations(client, writer, workers)
        status = "failed" if progress.transient else "succeeded"
        summary = _summary(progress.failures)
    except BaseException as error:
        summary = error_summary(error)
        raise
    finally:
        writer.flush()
        with writer.connect() as conn:
            state.finish_batch(
                conn,
                writer.run_id,
                obj.name,
                partition,
                status,
                dict(progress.totals),
                progress.last_id,
                summary,
            )
            state.prune_history(conn, obj.name, obj.history_days)
    if progress.transient:
        raise SyncIncomplete(
            f"{obj.name} {partition}: {progress.transient} record(s) failed transiently after retries "
            f"({summary}); progress is recorded, a re-run resumes with the rest"
            + (
                f". Notion rate limits hit: {limits_hit(writer.rate_limit_reasons)}"
                if writer.rate_limited_calls
                else ""
            )
        )
    return SyncReport(
        object=obj.name,
        partition=partition,
        data_source_id=data_source_id,
        records=records,
        totals=progress.totals,
        requests=writer.requests - requests_before,
        rate_limited=writer.rate_limited_calls - rate_limited_before,
        duration_s=time.monotonic() - started,
        latencies_ms=writer.durations_ms[requests_before:],
        relations_filled=filled,
        failures=progress.failures,
        rate_limit_reasons=dict(writer.rate_limit_reasons),
    )


def error_summary(error: BaseException) -> str:
    """A run's error as `sync_batches.error_summary` keeps it."""
    return f"{type(error).__name__}: {error}"[:2000]


def _summary(failures: Sequence[tuple[str, str, str]], limit: int = 5) -> str | None:
    """The most common failure codes with an example record each."""
    if not failures:
        return None
    codes = Counter(code for _, code, _ in failures)
    examples = {code: (sf_id, message) for sf_id, code, message in reversed(failures)}
    return "; ".join(
        f"{count} x {code} (e.g. {examples[code][0]}: {examples[code][1][:200]})"
        for code, count in codes.most_common(limit)
    )


def sync_days(
    notion: NotionResource,
    connect: state.Connect,
    obj: ObjectConfig,
    sf_types: dict[str, str],
    partitions: Sequence[str],
    run_id: str,
    priority: bool = False,
) -> Iterator[SyncReport]:
    """Provision the data source once, then sync ``partitions`` in order with one NotionClient (one
    pass through the shared rate limiter), yielding each day's report as it is done; a day that
    raises stops the rest. ``priority``: the requests go first in the limiter
    (see `NotionResource.get_client`)."""
    specs = property_specs(obj, sf_types)
    # batch_size: rows (sync state, log, API usage) buffered per DuckDB write; one happens every 2 s anyway.
    writer = state.StateWriter(connect, run_id, obj.name, flush_rows=obj.batch_size)
    with notion.get_client(on_call=writer.record_call, priority=priority) as client:
        try:
            provisioned = ensure_data_source(
                client, connect, obj, specs, notion.parent_page_id, run_id=run_id
            )
        except BaseException as error:
            writer.flush()  # the calls that failed, in api_usage
            with connect() as conn:
                for partition in partitions:
                    state.record_failed_batch(conn, run_id, obj.name, partition, error_summary(error))
            raise
        rewrite = provisioned.rewrite
        for partition in partitions:
            report = sync_partition(
                client, writer, obj, specs, provisioned.data_source_id, partition, workers=notion.workers
            )
            if rewrite:  # a new database or relation: what was synced before, again (reported once)
                with connect() as conn:
                    synced = state.batched_partitions(conn, obj.name)
                report.resync_partitions = [p for p in synced if p not in partitions]
                rewrite = False
            yield report


def run_sync(
    notion: NotionResource,
    connect: state.Connect,
    obj: ObjectConfig,
    sf_types: dict[str, str],
    partition: str,
    run_id: str,
    priority: bool = False,
) -> SyncReport:
    """Provision the data source and sync one partition (`sync_days` of one day)."""
    [report] = sync_days(notion, connect, obj, sf_types, [partition], run_id, priority)
    return report
