"""Asset checks of `salesforce/<Object>`: the staged partition is complete and Ids are unique (one
result per day, also in a backfill run of a range of days).

No `from __future__ import annotations` here: Dagster reads the nested functions' annotations.
"""

import warnings
from collections.abc import Iterator, Sequence
from datetime import date

import duckdb
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Output,
    PreviewWarning,
    asset_check,
)
from simple_salesforce import Salesforce

from notion_sync.config import ObjectConfig
from notion_sync.partitions import daily_partitions, partition_window, range_window
from notion_sync.ranges import check_days
from notion_sync.salesforce import soql
from notion_sync.salesforce.describes import DescribeCache
from notion_sync.salesforce.extract import checked_describe, replication_field
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync.staging import StagingResource, duplicate_ids, partition_rows


def build_salesforce_checks(obj: ObjectConfig) -> list[AssetChecksDefinition]:
    # Partitioned checks (preview in Dagster 1.13) run with the partition(s) they verify.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return _build_checks(obj)


def _build_checks(obj: ObjectConfig) -> list[AssetChecksDefinition]:
    key = ["salesforce", obj.name]
    table = obj.staging_table

    @asset_check(
        asset=key,
        name="row_count_matches_salesforce",
        partitions_def=daily_partitions(obj),
        description=f"Rows staged in {table} for the day equal Salesforce's COUNT() (queryAll) for it, "
        "plus the records purged that day that the extraction staged as deleted (purged_rows).",
    )
    def _row_count(
        context: AssetCheckExecutionContext, salesforce: SalesforceResource, staging: StagingResource
    ) -> Iterator[AssetCheckEvaluation | Output]:
        sf = salesforce.get_client().sf
        describe, _ = checked_describe(sf, obj, DescribeCache(staging.path))
        counts = counts_by_day(sf, obj.name, context.partition_keys, replication_field(obj.name, describe))

        def evaluate(day: str) -> AssetCheckResult:
            start, _ = partition_window(day)
            expected = counts.get(start.date(), 0)
            purged = _purged_rows(context.instance, AssetKey(key), day)
            try:
                with staging.connect(read_only=True) as conn:
                    staged = partition_rows(conn, table, start.date())
            except duckdb.CatalogException:
                staged = 0
            return AssetCheckResult(
                passed=staged == expected + purged,
                metadata={"staged": staged, "salesforce": expected, "purged": purged},
            )

        yield from check_days(context, {day: evaluate(day) for day in context.partition_keys})

    @asset_check(
        asset=key,
        name="id_unique",
        partitions_def=daily_partitions(obj),
        description=f"No Salesforce Id appears twice in {table}.",
    )
    def _id_unique(
        context: AssetCheckExecutionContext, staging: StagingResource
    ) -> Iterator[AssetCheckEvaluation | Output]:
        try:
            with staging.connect(read_only=True) as conn:
                duplicates = duplicate_ids(conn, table)
        except duckdb.CatalogException:
            duplicates = []
        result = AssetCheckResult(
            passed=not duplicates, metadata={"duplicate_ids": ", ".join(duplicates) or "none"}
        )
        yield from check_days(context, dict.fromkeys(context.partition_keys, result))  # the whole table

    return [_row_count, _id_unique]


def counts_by_day(sf: Salesforce, object_name: str, days: Sequence[str], field: str) -> dict[date, int]:
    """Salesforce's records (deleted included, as queryAll reads them) per day of `days`, consecutive:
    one aggregate query for the whole range instead of a COUNT() a day."""
    start, end = range_window(days)
    answer = sf.query(soql.daily_count_query(object_name, start, end, field), include_deleted=True)
    return {date.fromisoformat(row["expr0"]): row["expr1"] for row in answer["records"]}


def _purged_rows(instance: DagsterInstance, key: AssetKey, partition: str) -> int:
    """`purged_rows` of the partition's latest materialization: tombstones queryAll does not count."""
    found = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    value = found[0].asset_materialization.metadata.get("purged_rows") if found else None
    return int(value.value) if value is not None else 0
