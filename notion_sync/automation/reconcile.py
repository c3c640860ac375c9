"""Reconciliation: the Salesforce Id set against the pages of the object's Notion data source.

`reconcile_<Object>` (weekly on `reconcile.schedule`, or launched on demand) reads every Id with
queryAll (Ids and modstamps only: about one request per 2,000 records) and every page of the data
source (one Notion request per 100 pages, logged as an estimate before it starts), then

- trashes the pages whose record no longer exists (hard-deleted, purged or soft-deleted in
  Salesforce) and marks them in_trash in sync_state;
- for live records without a page whose day was synced before: forgets their sync_state and
  asks for that partition again; the `reconcile_resync` sensor launches those partitions in the
  backfill lane when the reconciliation run succeeds (days never synced are left to the backfills
  and only counted);
- finds the pages edited by hand in Notion (`notion_sync.notion.drift`: synced values that differ
  from the staged record, compared in canonical form) and, with ``drift: resync`` (the default),
  forgets what they hold and asks for their partitions again; ``drift: report`` only counts them;
- reports the differences as the asset check `reconciled_with_salesforce` of `notion/<Object>`
  (counts and samples; it fails when it found any) and in `reconciliations` (`notion-sync status`).

No `from __future__ import annotations` here: Dagster reads the check's annotations.
"""

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import duckdb
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    AssetKey,
    DagsterEventType,
    MetadataValue,
    Output,
    RunRequest,
    RunStatusSensorContext,
    multi_asset_check,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from notion_sync.automation.check_jobs import check_job, outside_its_job
from notion_sync.automation.lanes import lane_tags
from notion_sync.automation.modstamps import modstamp_day
from notion_sync.automation.names import (
    NOTION_RESYNC_METADATA_KEY,
    RESYNC_METADATA_KEY,
    object_asset_keys,
    reconcile_job_name,
    sync_job_name,
)
from notion_sync.config import ObjectConfig
from notion_sync.notion import state
from notion_sync.notion.drift import DriftCheck
from notion_sync.notion.resource import NotionResource
from notion_sync.notion.sync import page_salesforce_id
from notion_sync.salesforce.extract import describe_object, replication_field
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync.staging import StagingResource

NOTION_PAGE_SIZE = 100
SALESFORCE_PAGE_SIZE = 2_000
SAMPLE = 20


@dataclass(frozen=True)
class Differences:
    orphaned: dict[str, str]  # sf_id -> page_id of pages whose record no longer exists
    missing: dict[str, str]  # sf_id -> partition key of live records without a page
    pages: int = 0  # pages read (with a Salesforce Id)


def compare(live: Mapping[str, str], pages: Iterable[tuple[str, str]]) -> Differences:
    """`live`: Id -> SystemModstamp of existing records; `pages`: (Salesforce Id, page id)."""
    seen: set[str] = set()
    orphaned: dict[str, str] = {}
    read = 0
    for sf_id, page_id in pages:
        read += 1
        seen.add(sf_id)
        if sf_id not in live:
            orphaned[sf_id] = page_id
    missing = {sf_id: modstamp_day(stamp).isoformat() for sf_id, stamp in live.items() if sf_id not in seen}
    return Differences(orphaned, missing, read)


def _live_records(salesforce: SalesforceResource, object_name: str) -> dict[str, str]:
    """Id -> replication field (SystemModstamp, or what the object has instead) of live records."""
    sf = salesforce.get_client().sf
    field = replication_field(object_name, describe_object(sf, object_name))
    query = f"SELECT Id, IsDeleted, {field} FROM {object_name}"
    return {
        record["Id"]: record[field]
        for record in sf.query_all_iter(query, include_deleted=True)
        if not record["IsDeleted"]
    }


def _forget(
    staging: StagingResource,
    object_name: str,
    trashed: Iterable[str],
    missing: Iterable[str],
    drifted: Iterable[str],
    outcome: state.Reconciliation,
) -> None:
    with staging.connect() as conn:
        state.ensure_tables(conn)  # `reconciliations` is newer than the other tables
        conn.execute("BEGIN TRANSACTION")
        state.mark_trashed(conn, object_name, list(trashed))
        state.forget(conn, object_name, list(missing))
        state.mark_stale(conn, object_name, list(drifted))
        state.record_reconciliation(conn, outcome)
        conn.execute("COMMIT")


def _target(staging: StagingResource, object_name: str) -> tuple[tuple[str, str] | None, int]:
    """The object's (database id, data source id) and its number of known pages, if it was synced."""
    with staging.connect(read_only=True) as conn:
        try:
            target = state.load_target(conn, object_name)
        except duckdb.CatalogException:  # no sync ever ran against this staging database
            return None, 0
        return target, state.count_pages(conn, object_name) if target else 0


CHECK_NAME = "reconciled_with_salesforce"
_RECONCILE_CHECKS: dict[str, AssetChecksDefinition] = {}  # by ObjectConfig JSON


def build_reconcile_check(obj: ObjectConfig) -> AssetChecksDefinition:
    """`notion/<Object>` check `reconciled_with_salesforce`: the reconciliation itself.

    It fails when it found differences (and has repaired them: orphans trashed, missing records
    queued); cached, so the job, the schedule and `Definitions` share one object.

    It reads every Id and every page of the object, so it runs only in `reconcile_<Object>`. Dagster
    runs an asset's checks with it by default (a materialization or backfill of `notion/<Object>`
    from the UI): there it records no result, and says so in the log, rather than page through the
    whole object once per partition.
    """
    key = obj.model_dump_json()  # the whole config: a build from another config gets its own
    if key in _RECONCILE_CHECKS:
        return _RECONCILE_CHECKS[key]
    notion_key = object_asset_keys(obj.name)[1]

    @multi_asset_check(
        specs=[
            AssetCheckSpec(
                CHECK_NAME,
                asset=notion_key,
                blocking=False,
                description=f"Salesforce {obj.name} Ids (queryAll) against the Notion pages: orphaned pages "
                "are trashed, missing records queued again; fails when differences were found. Runs in "
                f"{reconcile_job_name(obj.name)} only.",
            )
        ],
        can_subset=True,  # a run other than the reconcile job yields no result
        name=f"reconcile_{obj.name}_check",
    )
    def _reconcile(
        context: AssetCheckExecutionContext,
        salesforce: SalesforceResource,
        notion: NotionResource,
        staging: StagingResource,
    ) -> Iterator[AssetCheckResult | Output]:
        skipped = outside_its_job(
            context,
            reconcile_job_name(obj.name),
            f"{CHECK_NAME} runs in {reconcile_job_name(obj.name)} (weekly or on demand), not with a "
            "partition's sync",
        )
        if skipped is not None:
            yield from skipped
            return
        yield _reconciliation(context, obj, notion_key, salesforce, notion, staging)

    _RECONCILE_CHECKS[key] = _reconcile
    return _reconcile


def _reconciliation(
    context: AssetCheckExecutionContext,
    obj: ObjectConfig,
    notion_key: AssetKey,
    salesforce: SalesforceResource,
    notion: NotionResource,
    staging: StagingResource,
) -> AssetCheckResult:
    target, known_pages = _target(staging, obj.name)
    if target is None:
        context.log.info(f"{obj.name} was never synced to Notion: nothing to reconcile")
        return AssetCheckResult(
            check_name=CHECK_NAME,
            asset_key=notion_key,
            passed=True,
            metadata={"salesforce_records": 0, "never_synced": True},
        )
    notion_requests = max(1, math.ceil(known_pages / NOTION_PAGE_SIZE))
    context.log.info(
        f"reconciling {obj.name}: about {known_pages} pages = {notion_requests} Notion requests "
        f"(~{notion_requests / notion.rate_limit_rps:.0f} s at {notion.rate_limit_rps:g} rps, shared "
        f"with the syncs) plus one Salesforce queryAll page per {SALESFORCE_PAGE_SIZE} records"
    )
    live = _live_records(salesforce, obj.name)
    drift = DriftCheck(staging.connect, obj)
    with notion.get_client() as client:
        pages = ((page_salesforce_id(page), page["id"]) for page in drift.pages(client.all_pages(target[1])))
        differences = compare(live, ((sf_id, page_id) for sf_id, page_id in pages if sf_id))
        trashed = [
            sf_id
            for (sf_id, _), result in notion.run_pipelined(
                differences.orphaned.items(), lambda item: client.update_page(item[1], in_trash=True)
            )
            if not isinstance(result, BaseException)
        ]
    synced = context.instance.get_materialized_partitions(notion_key)
    requeue = {sf_id: day for sf_id, day in differences.missing.items() if day in synced}
    resynced = drift.found if obj.drift == "resync" else {}
    outcome = state.Reconciliation(
        context.run.run_id,
        obj.name,
        len(live),
        differences.pages,
        len(differences.orphaned),
        len(requeue),
        len(drift.found),
        obj.drift,
    )
    _forget(staging, obj.name, trashed, requeue, resynced, outcome)
    resync = sorted(set(requeue.values()) | set(resynced.values()))
    context.log.info(
        f"{obj.name}: {len(trashed)}/{len(differences.orphaned)} orphaned pages trashed, {len(requeue)} "
        f"synced records without a page, {len(drift.found)} of {drift.compared} pages edited in Notion "
        f"(drift: {obj.drift}); partitions to sync again: {resync or 'none'}"
    )
    return AssetCheckResult(
        check_name=CHECK_NAME,
        asset_key=notion_key,
        passed=not differences.orphaned and not requeue and not drift.found,
        metadata={
            "salesforce_records": len(live),
            "notion_pages": differences.pages,
            "orphaned_pages": len(differences.orphaned),
            "trashed_pages": len(trashed),
            "missing_pages": len(requeue),
            "not_synced_yet": len(differences.missing) - len(requeue),
            "drifted_pages": len(drift.found),
            "drift": obj.drift,
            RESYNC_METADATA_KEY: MetadataValue.json(resync),
            "orphaned_sample": MetadataValue.json(sorted(differences.orphaned)[:SAMPLE]),
            "missing_sample": MetadataValue.json(sorted(requeue)[:SAMPLE]),
            "drifted_sample": MetadataValue.json(sorted(drift.found)[:SAMPLE]),
        },
    )


def build_reconcile_job(obj: ObjectConfig) -> UnresolvedAssetJobDefinition:
    """`reconcile_<Object>`: runs the object's reconciliation check (weekly, or on demand)."""
    return check_job(
        reconcile_job_name(obj.name),
        build_reconcile_check(obj),
        f"Compare the Salesforce {obj.name} Ids with the Notion pages: trash orphaned "
        "pages, sync missing records again.",
    )


_RESYNC_EVENTS = {DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.ASSET_MATERIALIZATION}


def resync_requests(context: RunStatusSensorContext) -> Iterator[RunRequest]:
    """The partitions a successful run asked to sync again: a reconciliation found records without
    a page, a sync replaced the object's gone database (`notion_sync.notion.schema`), or a formula
    refresh staged new values (`notion/<Object>` only: the rows are staged already)."""
    run = context.dagster_run
    for entry in context.instance.all_logs(run.run_id, of_type=_RESYNC_EVENTS):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        evaluation = getattr(data, "materialization", data)  # a materialization is wrapped
        if evaluation is None:
            continue
        object_name = evaluation.asset_key.path[-1]
        for key, selection in (
            (RESYNC_METADATA_KEY, None),
            (NOTION_RESYNC_METADATA_KEY, [object_asset_keys(object_name)[1]]),
        ):
            partitions = evaluation.metadata.get(key)
            for partition in partitions.value if partitions is not None else []:
                yield RunRequest(
                    run_key=f"reconcile:{run.run_id}:{partition}",
                    job_name=sync_job_name(object_name),
                    partition_key=partition,
                    asset_selection=selection,
                    tags=lane_tags("backfill"),
                )
