"""Asset check of `notion/<Object>`: at most 1% of a partition's records failed in its latest run.

No `from __future__ import annotations` here: Dagster reads the nested function's annotations.
"""

import warnings

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    PreviewWarning,
    asset_check,
)

from notion_sync.config import ObjectConfig
from notion_sync.notion import state
from notion_sync.notion.assets import is_staged, not_staged_message
from notion_sync.partitions import daily_partitions
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
    # Partitioned checks (preview in Dagster 1.13) run with the partition they verify.
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
        def _failure_rate(context: AssetCheckExecutionContext, staging: StagingResource) -> AssetCheckResult:
            with staging.connect() as conn:
                state.ensure_tables(conn)
                batch = state.latest_batch(conn, obj.name, context.partition_key)
            return failure_check_result(batch)

        @asset_check(
            asset=["notion", obj.name],
            name="salesforce_day_staged",
            partitions_def=daily_partitions(obj),
            description=f"salesforce/{obj.name} was staged for the day (staged_partitions), so its sync had "
            "the day's records to work on; fails for a day synced without them.",
        )
        def _staged(context: AssetCheckExecutionContext, staging: StagingResource) -> AssetCheckResult:
            staged = is_staged(staging, obj, context.partition_key)
            return AssetCheckResult(
                passed=staged,
                description=None if staged else not_staged_message(obj, context.partition_key),
                metadata={"staging_table": obj.staging_table},
            )

    return [_failure_rate, _staged]
