"""`notion/<Object>`: daily partitions of a staged Salesforce object upserted into Notion (one day, or
a backfill's range of days synced in one pass and reported day by day: `notion_sync.ranges`).

No `from __future__ import annotations` here: Dagster reads the nested function's annotations.
"""

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import date

import duckdb
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    Backoff,
    IdentityPartitionMapping,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)

from notion_sync.automation.lanes import LANE_TAG
from notion_sync.automation.names import RESYNC_METADATA_KEY
from notion_sync.config import ObjectConfig
from notion_sync.notion.errors import PermanentNotionError, limits_hit
from notion_sync.notion.resource import NotionConfigError, NotionResource
from notion_sync.notion.schema import SchemaError, salesforce_field_types
from notion_sync.notion.sync import SyncReport, sync_days
from notion_sync.partitions import daily_partitions, in_ranges
from notion_sync.permanent import PermanentFailure
from notion_sync.ranges import materialize_days
from notion_sync.salesforce.extract import describe_object
from notion_sync.salesforce.resource import SalesforceAuthError, SalesforceResource
from notion_sync.staging import StagingResource, was_staged

# Records still failing transiently after the client's retries: run the partition again (records
# already synced cost nothing). The retry sensor takes over once these are spent.
SYNC_RETRY_POLICY = RetryPolicy(
    max_retries=2, delay=30, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


def limiter_priority(run_tags: dict[str, str]) -> bool:
    """Realtime-lane runs go first in the shared Notion rate limiter (ahead of backfills' requests)."""
    return run_tags.get(LANE_TAG) == "realtime"


def _metadata(report: SyncReport, notion: NotionResource, priority: bool = False) -> dict:
    real_rps = notion.rate_limit_rps * notion.time_scale
    return {
        **{action: report.totals[action] for action in ("created", "updated", "unchanged", "archived")},
        "failed": report.totals["failed"],
        "skipped": report.totals["skipped"],
        "records": report.records,
        "rate_limit_rps": notion.rate_limit_rps,
        "limiter_priority": priority,
        "relations_filled": report.relations_filled,
        "requests": report.requests,
        "rate_limited_429s": report.rate_limited,
        "rate_limit_reasons": MetadataValue.json(report.rate_limit_reasons),
        "achieved_rps": round(report.achieved_rps, 2),
        "latency_p50_ms": round(report.latency_percentile(50), 1),
        "latency_p95_ms": round(report.latency_percentile(95), 1),
        "estimated_duration_s": round(report.records / real_rps, 2),
        "actual_duration_s": round(report.duration_s, 2),
        "data_source_id": MetadataValue.text(report.data_source_id),
        "failures": MetadataValue.md(
            "\n".join(f"- `{sf_id}` {code}: {message[:200]}" for sf_id, code, message in report.failures[:20])
            or "none"
        ),
        **(
            {RESYNC_METADATA_KEY: MetadataValue.json(report.resync_partitions)}
            if report.resync_partitions
            else {}
        ),
    }


def not_staged_message(obj: ObjectConfig, partition_key: str) -> str:
    return (
        f"salesforce/{obj.name} was never staged for {partition_key}: materialize salesforce/{obj.name} "
        f"for {partition_key} first, or both assets in one run (the sync_{obj.name} job does)"
    )


def staged_days(staging: StagingResource, obj: ObjectConfig, partition_keys: Sequence[str]) -> set[str]:
    """The days `salesforce/<Object>` staged among `partition_keys` (0 records is a staged day too)."""
    with staging.connect(read_only=True) as conn:
        return {key for key in partition_keys if was_staged(conn, obj.staging_table, date.fromisoformat(key))}


def _log_summary(log: logging.Logger, obj: ObjectConfig, reports: list[SyncReport], priority: bool) -> None:
    """One line for the run's days (each day's figures are in its materialization), and one warning
    if Notion's rate limits were hit."""
    if not reports:
        return
    totals: Counter[str] = sum((report.totals for report in reports), Counter())
    reasons: Counter[str] = sum((Counter(report.rate_limit_reasons) for report in reports), Counter())
    days = reports[0].partition + (
        f"..{reports[-1].partition} ({len(reports)} days)" if len(reports) > 1 else ""
    )
    log.info(
        f"{obj.name} {days}: {dict(totals)} in {sum(r.duration_s for r in reports):.1f}s, "
        f"{sum(r.requests for r in reports)} requests ({sum(r.rate_limited for r in reports)} rate limited)"
        + (", first in the Notion rate limiter (realtime lane)" if priority else "")
    )
    if reasons:
        log.warning(f"Notion rate limits hit: {limits_hit(dict(reasons))}")


def build_notion_asset(obj: ObjectConfig, parents: list[str]) -> AssetsDefinition:
    """The `notion/<Object>` asset: partition D of `stg_<object>` upserted into the object's data source."""

    @asset(
        key=["notion", obj.name],
        group_name="notion",
        kinds={"notion"},
        partitions_def=daily_partitions(obj),
        deps=[
            AssetDep(AssetKey(["salesforce", obj.name]), partition_mapping=IdentityPartitionMapping()),
            *(AssetKey(["notion", parent]) for parent in parents),
        ],
        pool="notion_api",
        owners=list(obj.owners),
        retry_policy=SYNC_RETRY_POLICY,
        description=(
            f"Salesforce {obj.name} records of the day ({obj.staging_table}) upserted into the Notion "
            f"database '{obj.notion.title or obj.notion.database_id or obj.name}' by Salesforce Id: "
            "unchanged records cost no request, changed ones one PATCH, new ones one POST, "
            "deleted ones are trashed."
            + (f" Relations point to {', '.join(f'notion/{p}' for p in parents)}." if parents else "")
        ),
    )
    def _notion_object(
        context: AssetExecutionContext,
        notion: NotionResource,
        staging: StagingResource,
        salesforce: SalesforceResource,
    ) -> Iterator[AssetMaterialization | MaterializeResult]:
        priority = limiter_priority(context.run.tags)
        reports: list[SyncReport] = []  # the days synced, for one log line at the end

        def sync(days: list[str]) -> Iterator[tuple[str, dict]]:
            # Without this, a day selected alone in the UI "synced" 0 records and showed as green; in a
            # range, the days before the first one never staged are synced, then the run fails.
            staged = staged_days(staging, obj, days)
            ready = days[: next((n for n, day in enumerate(days) if day not in staged), len(days))]
            try:
                types = salesforce_field_types(
                    staging.connect, obj, lambda name: describe_object(salesforce.get_client().sf, name)
                )
                for report in sync_days(notion, staging.connect, obj, types, ready, context.run_id, priority):
                    reports.append(report)
                    yield report.partition, _metadata(report, notion, priority)
            except (SchemaError, PermanentNotionError, NotionConfigError) as error:
                raise PermanentFailure(str(error)) from error
            except SalesforceAuthError as error:  # from the field types lookup (describe)
                raise PermanentFailure(f"looking up the Salesforce fields of {obj.name}: {error}") from error
            except duckdb.CatalogException as error:
                raise PermanentFailure(f"{not_staged_message(obj, days[0])} ({error})") from error
            finally:
                _log_summary(context.log, obj, reports, priority)
            if len(ready) < len(days):
                raise PermanentFailure(not_staged_message(obj, days[len(ready)]))

        yield from materialize_days(context, sync)

    return in_ranges(_notion_object, obj)
