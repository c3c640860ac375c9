"""Asset check of `notion/<Object>`: at most 1% of a partition's records failed in its latest run
(one result per day, also in a backfill run of a range of days).

No `from __future__ import annotations` here: Dagster reads the nested function's annotations.
"""

import warnings
from collections.abc import Iterator

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
from notion_sync.notion import state
from notion_sync.notion.assets import not_staged_message, staged_days
from notion_sync.partitions import daily_partitions
from notion_sync.ranges import check_days
from notion_sync.staging import StagingResource

MAX_FAILURE_RATE = 0.01


def failure_check_result(batch: dict | None, max_failure_rate: float = MAX_FAILURE_RATE) -> AssetCheckResult:
    """Pass when the batch's failed records are at most ``max_failure_rate`` of those processed."""
    if batch is None:
        return AssetCheckResult(passed=False, metadata={"reason": "no sync recorded for this partition"})
    processed, failed = batch["processed"] or 0, batch["failed"] or 0
    rate = failed / processed if processed else 0.0
    return AssetCheckResult(
        passed=rate <= max_failure_rate,
        metadata={
            "failed": failed,
            "processed": processed,
            "failure_rate": round(rate, 4),
            "max_failure_rate": max_failure_rate,
            "run_id": batch["run_id"],
            "status": batch["status"],
            "error_summary": batch["error_summary"] or "none",
        },
    )


def build_notion_checks(obj: ObjectConfig) -> list[AssetChecksDefinition]:
    # Partitioned checks (preview in Dagster 1.13) run with the partition(s) they verify.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)

        @asset_check(
            asset=["notion", obj.name],
            name="failure_rate_below_1_percent",
            partitions_def=daily_partitions(obj),
            description=(
                f"At most {MAX_FAILURE_RATE:.0%} of the partition's {obj.name} records failed in its "
                "latest sync (sync_batches)."
            ),
        )
        def _failure_rate(
            context: AssetCheckExecutionContext, staging: StagingResource
        ) -> Iterator[AssetCheckEvaluation | Output]:
            with staging.connect() as conn:
                state.ensure_tables(conn)
                results = {
                    day: failure_check_result(state.latest_batch(conn, obj.name, day))
                    for day in context.partition_keys
                }
            yield from check_days(context, results)

        @asset_check(
            asset=["notion", obj.name],
            name="salesforce_day_staged",
            partitions_def=daily_partitions(obj),
            description=f"salesforce/{obj.name} was staged for the day (staged_partitions), so its sync had "
            "the day's records to work on; fails for a day synced without them.",
        )
        def _staged(
            context: AssetCheckExecutionContext, staging: StagingResource
        ) -> Iterator[AssetCheckEvaluation | Output]:
            staged = staged_days(staging, obj, context.partition_keys)
            results = {
                day: AssetCheckResult(
                    passed=day in staged,
                    description=None if day in staged else not_staged_message(obj, day),
                    metadata={"staging_table": obj.staging_table},
                )
                for day in context.partition_keys
            }
            yield from check_days(context, results)

    return [_failure_rate, _staged]
