"""Asset checks of `salesforce/<Object>`: the staged partition is complete and Ids are unique (one
result per day, also in a backfill run of a range of days).

No `from __future__ import annotations` here: Dagster reads the nested functions' annotations.
"""

import warnings
from collections.abc import Iterator

import duckdb
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    Output,
    PreviewWarning,
    asset_check,
)

from notion_sync.config import ObjectConfig
from notion_sync.partitions import daily_partitions, partition_window
from notion_sync.ranges import check_days
from notion_sync.salesforce.extract import count_window
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
        description=f"Rows staged in {table} for the day equal Salesforce's COUNT() (queryAll) for it.",
    )
    def _row_count(
        context: AssetCheckExecutionContext, salesforce: SalesforceResource, staging: StagingResource
    ) -> Iterator[AssetCheckEvaluation | Output]:
        sf = salesforce.get_client().sf

        def evaluate(day: str) -> AssetCheckResult:
            window = partition_window(day)
            expected = count_window(sf, obj.name, *window)
            try:
                with staging.connect(read_only=True) as conn:
                    staged = partition_rows(conn, table, window[0].date())
            except duckdb.CatalogException:
                staged = 0
            return AssetCheckResult(
                passed=staged == expected, metadata={"staged": staged, "salesforce": expected}
            )

        yield from check_days(context, evaluate)

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
        yield from check_days(context, lambda _day: result)  # the whole table, reported for each day

    return [_row_count, _id_unique]
