"""`refresh_formulas_<Object>`: stale formula fields refreshed on a schedule.

The job runs the asset check `formulas_fresh` of `salesforce/<Object>`
(:func:`notion_sync.salesforce.formulas.refresh_formulas`): it re-reads the object's mapped formula
fields, stages the values that changed, and fails (with counts) when it found any. The partitions
of the changed rows are then synced to Notion again by the `reconcile_resync` sensor, `notion/<Object>`
only (the staged rows are already current), as ordinary updates.

Schedule: the object's `formula_refresh` cron, by default the weekly reconcile's
(`reconcile.schedule`). Like the reconciliation, the check does its work only in its own job; when
Dagster runs it with a materialization of `salesforce/<Object>` it records no result.

No `from __future__ import annotations` here: Dagster reads the check's annotations.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    MetadataValue,
    Output,
    multi_asset_check,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from notion_sync.automation.check_jobs import check_job, outside_its_job
from notion_sync.automation.names import (
    NOTION_RESYNC_METADATA_KEY,
    formula_refresh_job_name,
    object_asset_keys,
)
from notion_sync.config import ObjectConfig
from notion_sync.salesforce.formulas import refresh_formulas
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync.staging import StagingResource

CHECK_NAME = "formulas_fresh"
_CHECKS: dict[str, AssetChecksDefinition] = {}  # by ObjectConfig JSON


def build_formula_check(obj: ObjectConfig) -> AssetChecksDefinition:
    """`salesforce/<Object>` check `formulas_fresh` (cached: job, schedule and Definitions share it)."""
    key = obj.model_dump_json()  # the whole config: a build from another config gets its own
    if key in _CHECKS:
        return _CHECKS[key]
    salesforce_key = object_asset_keys(obj.name)[0]
    job_name = formula_refresh_job_name(obj.name)

    @multi_asset_check(
        specs=[
            AssetCheckSpec(
                CHECK_NAME,
                asset=salesforce_key,
                blocking=False,
                description=f"Re-reads the mapped formula fields of every {obj.name} (they change without "
                "SystemModstamp) and stages changed values; fails when it found any. Runs in "
                f"{job_name} only.",
            )
        ],
        can_subset=True,
        name=f"refresh_formulas_{obj.name}_check",
    )
    def _refresh(
        context: AssetCheckExecutionContext, salesforce: SalesforceResource, staging: StagingResource
    ) -> Iterator[AssetCheckResult | Output]:
        skipped = outside_its_job(context, job_name, f"{CHECK_NAME} runs in {job_name} only")
        if skipped is not None:
            yield from skipped
            return
        refresh = refresh_formulas(salesforce.get_client(), staging, obj, log=context.log)
        changed = sum(refresh.changed.values())
        context.log.info(
            f"{obj.name}: {changed} staged rows had stale formula values in partitions "
            f"{sorted(refresh.changed) or 'none'}; their Notion pages are synced again"
        )
        yield AssetCheckResult(
            check_name=CHECK_NAME,
            asset_key=salesforce_key,
            passed=changed == 0,
            metadata={
                "formula_fields": MetadataValue.json(refresh.fields),
                "records_read": refresh.records,
                "method": refresh.method.value if refresh.method else "none",
                "stale_rows": changed,
                NOTION_RESYNC_METADATA_KEY: MetadataValue.json(sorted(refresh.changed)),
            },
        )

    _CHECKS[key] = _refresh
    return _refresh


def build_formula_refresh_job(obj: ObjectConfig) -> UnresolvedAssetJobDefinition:
    return check_job(
        formula_refresh_job_name(obj.name),
        build_formula_check(obj),
        f"Re-read the formula fields of {obj.name} and sync the stale ones to Notion.",
    )
