"""Provision or validate the Notion data source of an object before its pages are written.

- ``notion.database_id`` configured: discover its first data source, check the property types,
  add the properties it lacks.
- none configured: reuse the database created on an earlier run (``notion_targets``), else create
  one under ``NOTION_PARENT_PAGE_ID``. Recording it is what keeps a re-run from creating a second.

No second database, even when the record is missing: the database is created with a description
carrying a marker (``[notion-sync:<Object>]``). Before creating one, and after a create whose
outcome is unknown (`AmbiguousWriteError`), the parent page's child databases are read
(``GET /v1/blocks/{id}/children``, consistent at once) for one carrying the object's marker; a
found one is recorded and reused. Search (indexed asynchronously, not guaranteed complete) is only a
second source, asked when no child carries the marker. After an ambiguous create both are asked again
a few times; still nothing, the run fails (transiently) rather than risk a second database, and the
next run looks again before creating.

No second database when runs race either (the first backfill starts several partitions of a
never-synced object at once, and search lags): creating is claimed in DuckDB, which every run
shares. The run that inserts the claim (`notion_target_claims`, one row per object) searches,
creates, records `notion_targets` and releases the claim in one transaction; the others poll
`notion_targets` and use what it records, failing (transiently) with the holder's run id after
``claim_wait_s``. A claim older than ``claim_stale_s`` is a crashed run's: it is taken over, and the
taker still searches before creating (the crashed run may have created the database). DuckDB is
held only for these tiny transactions, never across a Notion call.

A recorded database is read at the start of every run (one request): gone (404: deleted, or no
longer shared with the integration) or in the trash, a database this platform created is replaced:
a warning names it, its record and the object's `sync_state` (every page was in it) are dropped,
and a new one is created; the run then syncs its partition into it, and the partitions synced
before are launched again (`SyncReport.resync_partitions`, the `reconcile_resync` sensor). A
configured ``notion.database_id`` is the user's: the run fails naming the key and the likely causes.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dagster import get_dagster_logger

from notion_sync.config import ObjectConfig
from notion_sync.notion import state
from notion_sync.notion.client import NotionClient, find_settled, plain_text
from notion_sync.notion.errors import AmbiguousWriteError, PermanentNotionError
from notion_sync.notion.properties import PropertySpec, database_properties

log = get_dagster_logger(__name__)  # in a run: in the run's event log (the gone-database warning)

Describe = Callable[[str], Mapping[str, Any]]  # object name -> Salesforce describe result
# Real seconds: how long a run waits for another run creating the same database, the age at which
# a claim is taken for a crashed run's, and how often a waiting run looks again.
CLAIM_WAIT_S = 600.0
CLAIM_STALE_S = 900.0
CLAIM_POLL_S = 0.5


class SchemaError(ValueError):
    """The Notion database cannot hold the object as configured; the message says what to change."""


class ProvisioningTimeout(RuntimeError):
    """Another run kept creating the object's database for longer than we wait (transient: retry)."""


@dataclass(frozen=True)
class Claiming:
    """Who claims the creation of a database, and the bounds of waiting for another claimant."""

    run_id: str
    wait_s: float = CLAIM_WAIT_S
    stale_s: float = CLAIM_STALE_S
    poll_s: float = CLAIM_POLL_S


def _anonymous_run_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def salesforce_field_types(
    connect: state.Connect, obj: ObjectConfig, describe: Describe | None
) -> dict[str, str]:
    """Describe types of ``obj``'s fields, cached in ``sf_fields``; ``describe`` is called on a miss only."""
    with connect() as conn:
        state.ensure_tables(conn)
        types = state.field_types(conn, obj.name)
    if set(obj.property_names()) <= set(types) or describe is None:
        return types
    fields = [
        (field["name"], field["type"], field.get("label"), ",".join(field.get("referenceTo") or []) or None)
        for field in describe(obj.name)["fields"]
    ]
    with connect() as conn:
        state.save_field_types(conn, obj.name, fields)
    return {name: sf_type for name, sf_type, _, _ in fields}


def _normalise(notion_id: str | None) -> str:
    return (notion_id or "").replace("-", "")


def _relation_targets(
    connect: state.Connect, obj: ObjectConfig, specs: Sequence[PropertySpec]
) -> dict[str, str]:
    """Data source of every related parent; a self-relation resolves once this object's source exists."""
    targets: dict[str, str] = {}
    with connect() as conn:
        state.ensure_tables(conn)
        for parent in {spec.relation_to for spec in specs if spec.relation_to}:
            target = state.load_target(conn, parent)
            if target:
                targets[parent] = target[1]
            elif parent != obj.name:
                raise SchemaError(
                    f"objects.{obj.name}.relations: the Notion database of {parent} is not known yet; "
                    f"materialize notion/{parent} for this partition first"
                )
    return targets


def database_marker(object_name: str) -> str:
    """The tag in the description of a database created for ``object_name``."""
    return f"[notion-sync:{object_name}]"


def database_title(obj: ObjectConfig) -> str:
    return obj.notion.title or f"Salesforce {obj.name}"


def _created_for(database: Mapping[str, Any], obj: ObjectConfig, parent_page_id: str) -> bool:
    """Whether ``database`` is one this sync created for ``obj`` under the parent page."""
    parent = database.get("parent") or {}
    return (
        not database.get("in_trash")
        and _normalise(parent.get("page_id")) == _normalise(parent_page_id)
        and database_marker(obj.name) in plain_text(database.get("description"))
    )


def _child_databases(client: NotionClient, parent_page_id: str) -> Iterator[str]:
    """Ids of the databases directly under the parent page (its children: consistent at once)."""
    for block in client.block_children(parent_page_id):
        if block.get("type") == "child_database":
            yield block["id"]


def _searched_databases(client: NotionClient, obj: ObjectConfig, parent_page_id: str) -> Iterator[str]:
    """Ids of the databases of data sources found by searching the title (search lags and may miss
    some), except those known to sit under another page."""
    for source in client.search_data_sources(database_title(obj)):
        database_parent = source.get("database_parent") or {}
        database_id = (source.get("parent") or {}).get("database_id")
        if not database_id:
            continue
        if database_parent.get("page_id") and _normalise(database_parent["page_id"]) != _normalise(
            parent_page_id
        ):
            continue
        yield database_id


def find_created_database(
    client: NotionClient, obj: ObjectConfig, parent_page_id: str
) -> dict[str, Any] | None:
    """The database created for ``obj`` under the parent page by an earlier (unrecorded) attempt.

    Reads the parent page's child databases for the marker (one request per database); search is
    asked only when none carries it. Several (created before this check existed): the oldest, and
    a warning naming the others.
    """
    found: dict[str, dict[str, Any]] = {}
    for candidates in (
        _child_databases(client, parent_page_id),
        _searched_databases(client, obj, parent_page_id),
    ):
        for database_id in candidates:
            if _normalise(database_id) in found:
                continue
            database = client.retrieve_database(database_id)
            if _created_for(database, obj, parent_page_id):
                found[_normalise(database_id)] = database
        if found:
            break
    if not found:
        return None
    oldest, *others = sorted(found.values(), key=lambda db: (db.get("created_time") or "", db["id"]))
    if others:
        log.warning(
            "%s: %d Notion databases under the parent page carry %s; using the oldest, %s, and leaving "
            "%s alone (move them to the trash in Notion if they are unused)",
            obj.name,
            len(found),
            database_marker(obj.name),
            oldest["id"],
            ", ".join(db["id"] for db in others),
        )
    return oldest


def _create_database(
    client: NotionClient, obj: ObjectConfig, initial: Mapping[str, Any], parent_page_id: str
) -> dict[str, Any]:
    """Create ``obj``'s database unless an earlier attempt did; never creates a second one."""
    if existing := find_created_database(client, obj, parent_page_id):
        log.info("%s: found the Notion database %s created by an earlier run", obj.name, existing["id"])
        return existing
    description = (
        f"Salesforce {obj.name} records, kept up to date by notion-sync. "
        f"Keep {database_marker(obj.name)} in this description: it identifies the database."
    )
    try:
        return client.create_database(parent_page_id, database_title(obj), dict(initial), description)
    except AmbiguousWriteError as error:
        if existing := find_settled(client, lambda: find_created_database(client, obj, parent_page_id)):
            return existing
        raise AmbiguousWriteError(
            error.status,
            error.code,
            f"{error.message}; the Notion database of {obj.name} may have been created but is not "
            "found yet, so it is not created again in this run: the next run looks for it first",
            request_id=error.request_id,
            retry_after=error.retry_after,
            method=error.method,
            path=error.path,
        ) from error


def _first_source(obj: ObjectConfig, database: Mapping[str, Any]) -> str:
    sources = database.get("data_sources") or []
    if not sources:
        raise SchemaError(f"objects.{obj.name}: Notion database {database.get('id')} has no data source")
    return sources[0]["id"]


def _claim(connect: state.Connect, obj: ObjectConfig, claiming: Claiming) -> state.ClaimOutcome:
    """Hold the claim on creating ``obj``'s database, or the target another run recorded meanwhile.

    Polls while another run holds the claim; raises `ProvisioningTimeout` after ``wait_s``.
    """
    started = time.monotonic()
    stale_after = timedelta(seconds=claiming.stale_s)
    waiting_for: str | None = None
    while True:
        with connect() as conn:
            outcome = state.claim_target(conn, obj.name, claiming.run_id, stale_after)
        if outcome.target or outcome.held_by(claiming.run_id):
            return outcome
        holder = outcome.holder
        assert holder is not None
        left = claiming.wait_s - (time.monotonic() - started)
        if left <= 0:
            raise ProvisioningTimeout(
                f"{obj.name}: run {holder.run_id} has been creating the Notion database of {obj.name} "
                f"since {holder.claimed_at:%Y-%m-%d %H:%M:%S} UTC (notion_target_claims) and has not "
                f"recorded it in notion_targets after {claiming.wait_s:.0f} s of waiting; if that run "
                f"crashed, its claim is taken over {claiming.stale_s:.0f} s after it was made, "
                "so a retry finds or creates the database"
            )
        if waiting_for != holder.run_id:
            log.info("%s: waiting for run %s, which is creating the Notion database", obj.name, holder.run_id)
            waiting_for = holder.run_id
        time.sleep(min(left, claiming.poll_s * (0.5 + random.random())))


def _provision(
    client: NotionClient,
    connect: state.Connect,
    obj: ObjectConfig,
    initial: Mapping[str, Any],
    parent_page_id: str,
    claiming: Claiming,
) -> str:
    """The data source of ``obj``'s database, created by one run at a time across threads and processes."""
    outcome = _claim(connect, obj, claiming)
    if outcome.target:
        return outcome.target[1]
    if stale := outcome.taken_over:
        log.warning(
            "%s: took over the claim of run %s (made %s, presumably crashed) on creating the Notion "
            "database; searching for one it may have created first",
            obj.name,
            stale.run_id,
            f"{stale.claimed_at:%Y-%m-%d %H:%M:%S} UTC",
        )
    try:
        database = _create_database(client, obj, initial, parent_page_id)
        data_source_id = _first_source(obj, database)
    except BaseException:
        try:
            with connect() as conn:
                state.release_claim(conn, obj.name, claiming.run_id)
        except Exception:  # the claim goes stale instead; the original error matters more
            log.exception("%s: could not release the claim on creating the Notion database", obj.name)
        raise
    with connect() as conn:
        database_id, recorded = state.record_target(
            conn, obj.name, database["id"], data_source_id, claiming.run_id
        )
    if recorded != data_source_id:
        log.warning(
            "%s: another run recorded the Notion database %s while this run's claim was taken for stale; "
            "using it, and leaving %s alone (move it to the trash in Notion if it is unused)",
            obj.name,
            database_id,
            database["id"],
        )
    return recorded


def _retrieve_live(client: NotionClient, database_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The database, or None and why it cannot be written to: not found, or in the trash."""
    try:
        database = client.retrieve_database(database_id)
    except PermanentNotionError as error:
        if error.status != 404:
            raise
        return None, f"was not found ({error.status} {error.code})"
    if database.get("in_trash") or database.get("archived"):
        return None, "is in Notion's trash"
    return database, None


def _configured_gone(obj: ObjectConfig, database_id: str, why: str) -> SchemaError:
    causes = (
        "it was moved to the trash: restore it in Notion"
        if "trash" in why
        else "it was deleted, or it is not shared with the integration (in Notion: the database's "
        "••• menu > Connections > add the integration)"
    )
    return SchemaError(
        f"objects.{obj.name}.notion.database_id: the Notion database {database_id} {why}. Likely: "
        f"{causes}; or set objects.{obj.name}.notion.database_id to another database (null creates one "
        "under NOTION_PARENT_PAGE_ID)"
    )


def _drop_gone(connect: state.Connect, obj: ObjectConfig, database_id: str, why: str) -> None:
    """Forget the created database that is gone, and the object's pages that were in it."""
    with connect() as conn:
        pages = state.forget_target(conn, obj.name, database_id)
    if pages is not None:
        log.warning(
            f"{obj.name}: the Notion database {database_id} that notion-sync created for {obj.name} {why} "
            "(deleted, moved to the trash, or no longer shared with the integration); creating a new "
            f"one under NOTION_PARENT_PAGE_ID and syncing {obj.name} again: {pages} record(s) were "
            "mapped to its pages; this partition now, the partitions synced before by new runs"
        )


def _locate(
    client: NotionClient,
    connect: state.Connect,
    obj: ObjectConfig,
    initial: Mapping[str, Any],
    parent_page_id: str | None,
    claiming: Claiming,
) -> str:
    """The data source id of ``obj``: configured, recorded earlier, or created (at most once)."""
    with connect() as conn:
        recorded = state.load_target(conn, obj.name)
    configured = obj.notion.database_id
    if recorded and (not configured or _normalise(recorded[0]) == _normalise(configured)):
        _, gone = _retrieve_live(client, recorded[0])
        if not gone:
            return recorded[1]
        if configured:
            raise _configured_gone(obj, configured, gone)
        _drop_gone(connect, obj, recorded[0], gone)
        return _locate(client, connect, obj, initial, parent_page_id, claiming)
    if configured:
        database, gone = _retrieve_live(client, configured)
        if database is None:
            raise _configured_gone(obj, configured, gone or "")
        data_source_id = _first_source(obj, database)
        with connect() as conn:
            state.save_target(conn, obj.name, database["id"], data_source_id)
        return data_source_id
    if not parent_page_id:
        raise SchemaError(
            f"objects.{obj.name}: no notion.database_id configured and NOTION_PARENT_PAGE_ID is not set; "
            "set NOTION_PARENT_PAGE_ID to the page under which the database should be created, "
            f"or give objects.{obj.name}.notion.database_id"
        )
    return _provision(client, connect, obj, initial, parent_page_id, claiming)


def _property_changes(
    obj: ObjectConfig, wanted: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, Any]:
    """Properties to add (and the title to rename); raises on a property of the wrong type."""
    changes: dict[str, Any] = {}
    for name, schema in wanted.items():
        expected = next(iter(schema))
        actual = current.get(name)
        if actual is None and expected == "title":
            existing = next(key for key, prop in current.items() if prop.get("type") == "title")
            changes[existing] = {"name": name}  # a data source has exactly one title property
        elif actual is None:
            changes[name] = schema
        elif actual.get("type") != expected:
            raise SchemaError(
                f"objects.{obj.name}: Notion property '{name}' is {actual.get('type')}, expected {expected}; "
                f"change its type in Notion or map the field to another property name"
            )
    return changes


def _repointed_relations(
    obj: ObjectConfig, specs: Sequence[PropertySpec], wanted: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, Any]:
    """Relations to point at their parent's current data source (its database was replaced), each
    with a warning naming both objects."""
    changes: dict[str, Any] = {}
    for spec in specs:
        actual = current.get(spec.name) or {}
        if not spec.relation_to or actual.get("type") != "relation":
            continue
        old, new = actual["relation"].get("data_source_id"), wanted[spec.name]["relation"]["data_source_id"]
        if _normalise(old) != _normalise(new):
            log.warning(
                f"{obj.name}: the Notion relation '{spec.name}' pointed to data source {old}, not to the "
                f"current one of {spec.relation_to} (its database was replaced, or the relation was "
                f"changed in Notion); pointing it now to {new}, the data source of {spec.relation_to}, "
                f"and writing the {obj.name} pages again: this partition now, the partitions synced "
                "before by new runs"
            )
            changes[spec.name] = wanted[spec.name]
    return changes


@dataclass(frozen=True)
class Provisioned:
    """The object's data source, and whether the pages synced before must be written again (its
    database was replaced, or a relation re-pointed to a replaced parent's)."""

    data_source_id: str
    rewrite: bool


def ensure_data_source(
    client: NotionClient,
    connect: state.Connect,
    obj: ObjectConfig,
    specs: Sequence[PropertySpec],
    parent_page_id: str | None,
    *,
    run_id: str | None = None,
    claim_wait_s: float = CLAIM_WAIT_S,
    claim_stale_s: float = CLAIM_STALE_S,
    claim_poll_s: float = CLAIM_POLL_S,
) -> Provisioned:
    """Provision or validate ``obj``'s data source.

    ``run_id`` names this run in the claim on creating the database (and in other runs' timeout
    errors); unique per concurrent call, one is made up when not given. ``claim_*`` are real seconds.
    A re-pointed relation marks every record of the object stale before the schema is changed, so a
    run that stops in between still writes them the next time.
    """
    claiming = Claiming(run_id or _anonymous_run_id(), claim_wait_s, claim_stale_s, claim_poll_s)
    targets = _relation_targets(connect, obj, specs)
    creatable = [spec for spec in specs if not spec.relation_to or spec.relation_to in targets]
    with connect() as conn:
        before = state.load_target(conn, obj.name)
    data_source_id = _locate(
        client, connect, obj, database_properties(creatable, targets), parent_page_id, claiming
    )
    wanted = database_properties(specs, {**targets, obj.name: data_source_id})
    current = client.retrieve_data_source(data_source_id).get("properties", {})
    added = _property_changes(obj, wanted, current)  # raises first: nothing changed on a bad schema
    repointed = _repointed_relations(obj, specs, wanted, current)
    if repointed:
        with connect() as conn:
            state.mark_stale(conn, obj.name, None)
    changes = {**added, **repointed}
    if changes:
        client.update_data_source(data_source_id, changes)
    replaced = bool(before and before[1] != data_source_id)
    return Provisioned(data_source_id, rewrite=replaced or bool(repointed))
