"""`salesforce/<Object>`: daily partitions of a Salesforce object staged in DuckDB (one day, or a
backfill's range of days read by one extraction and reported day by day: `notion_sync.ranges`).

No `from __future__ import annotations` here: Dagster reads the nested function's annotations.
"""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    Backoff,
    Config,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from pydantic import Field

from notion_sync.config import ObjectConfig
from notion_sync.partitions import daily_partitions, in_ranges
from notion_sync.permanent import PermanentFailure
from notion_sync.ranges import materialize_days
from notion_sync.salesforce.extract import (
    BULK_PAGE_RECORDS,
    REST_BATCH_SIZE,
    ExtractResult,
    SalesforceSchemaError,
    stage_days,
)
from notion_sync.salesforce.resource import ApiBudgetExhausted, SalesforceAuthError, SalesforceResource
from notion_sync.staging import StagingResource

# Transient failures that survived the in-call retries (a long 5xx spell, a dropped stream, a
# staging lock held too long) get another go of the whole partition; the spool makes that safe.
EXTRACT_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
# Retrying these cannot succeed: fix the config or the credentials.
PERMANENT_ERRORS = (SalesforceAuthError, SalesforceSchemaError)


class ExtractConfig(Config):
    """Run config of a `salesforce/<Object>` materialization (defaults suit production)."""

    rest_batch_size: int = Field(
        default=REST_BATCH_SIZE, ge=200, le=2_000, description="REST records per page"
    )
    bulk_page_records: int = Field(
        default=BULK_PAGE_RECORDS,
        ge=1,
        le=BULK_PAGE_RECORDS,  # a larger page overflows the spool's 64 MB DuckDB memory limit
        description="Bulk 2.0 records per page (at most 20,000)",
    )


def build_salesforce_asset(obj: ObjectConfig) -> AssetsDefinition:
    """The `salesforce/<Object>` asset: partition D = records whose SystemModstamp (or, for objects
    without it, LastModifiedDate, CreatedDate or LoginTime) falls on D (UTC)."""

    @asset(
        key=["salesforce", obj.name],
        group_name="salesforce",
        kinds={"salesforce", "duckdb"},
        partitions_def=daily_partitions(obj),
        pool="duckdb_write",
        owners=list(obj.owners),
        retry_policy=EXTRACT_RETRY_POLICY,
        description=(
            f"Salesforce {obj.name} records by day of SystemModstamp (UTC; objects without it by "
            "LastModifiedDate, CreatedDate or LoginTime), deleted ones flagged IsDeleted, "
            f"mirrored with every field into DuckDB table {obj.staging_table}. REST up to "
            f"{obj.bulk_threshold} records per run, Bulk API 2.0 above; a backfill run reads up to "
            f"{obj.max_partitions_per_run} days with one query."
        ),
    )
    def _salesforce_object(
        context: AssetExecutionContext,
        config: ExtractConfig,
        salesforce: SalesforceResource,
        staging: StagingResource,
    ) -> Iterator[AssetMaterialization | MaterializeResult]:
        def stage(days: list[str]) -> Iterator[tuple[str, dict]]:
            try:
                for day, result in stage_days(
                    salesforce.get_client(),
                    staging,
                    obj,
                    days,
                    log=context.log,
                    rest_batch_size=config.rest_batch_size,
                    bulk_page_records=config.bulk_page_records,
                ):
                    yield day, _metadata(obj, result, days)
            except PERMANENT_ERRORS as error:
                raise PermanentFailure(str(error)) from error
            except ApiBudgetExhausted as error:
                # Not again in this run; the retry sensor tries later, when the rolling budget has refilled.
                raise Failure(description=str(error), allow_retries=False) from error

        yield from materialize_days(context, stage)

    return in_ranges(_salesforce_object, obj)


def _metadata(obj: ObjectConfig, result: ExtractResult, days: list[str]) -> dict:
    """One day's materialization metadata; in a range, the extraction's figures are the range's."""
    return {
        "dagster/row_count": result.rows,
        "rows": result.rows,
        "deleted_rows": result.deleted,
        "purged_rows": result.purged,
        "estimated_rows": result.estimated,
        "method": result.method.value,
        "pages": result.pages,
        "api_calls": result.api_calls,
        # Only when Salesforce reported it, so the UI's plot is not distorted by a placeholder.
        **({"api_remaining": result.api_remaining} if result.api_remaining is not None else {}),
        "duration_s": round(result.duration_s, 3),
        "spool_s": round(result.spool_s, 3),
        "staging_lock_s": round(result.lock_s, 3),
        "records_per_s": round(result.spooled / result.duration_s, 1) if result.duration_s else 0.0,
        "table": MetadataValue.text(obj.staging_table),
        **(
            {"range": MetadataValue.text(f"{days[0]}..{days[-1]}"), "range_days": len(days)}
            if len(days) > 1
            else {}
        ),
    }
