"""One partitioned sync job and one reconciliation job per configured object.

Jobs are cached per object: sensors and schedules target the very job objects that `Definitions`
holds (Dagster refuses two different job objects with the same name).
"""

from __future__ import annotations

from datetime import date

from dagster import AssetSelection, JobDefinition, define_asset_job, in_process_executor
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from notion_sync.automation.formulas import build_formula_refresh_job
from notion_sync.automation.lanes import lane_tags
from notion_sync.automation.names import object_asset_keys, sync_job_name
from notion_sync.automation.reconcile import build_reconcile_job
from notion_sync.config import ObjectConfig, SyncConfig
from notion_sync.partitions import daily_partitions

_SYNC_JOBS: dict[tuple[str, date], UnresolvedAssetJobDefinition] = {}


def sync_job(obj: ObjectConfig) -> UnresolvedAssetJobDefinition:
    """`sync_<Object>`: both assets of the object for one daily partition."""
    key = (obj.name, obj.start_date)
    if key not in _SYNC_JOBS:
        _SYNC_JOBS[key] = define_asset_job(
            sync_job_name(obj.name),
            selection=AssetSelection.assets(*object_asset_keys(obj.name)),
            partitions_def=daily_partitions(obj),
            # Launches from the UI launchpad or a job backfill are backfill-lane; sensors and
            # schedules override both tags with their own lane.
            tags=lane_tags("backfill"),
            # One process per run instead of one per step: the steps run one after the other anyway,
            # and each step process costs seconds of start-up the realtime lane cannot spare.
            executor_def=in_process_executor,
            description=f"Extract {obj.name} from Salesforce into DuckDB and sync it to Notion, one day.",
        )
    return _SYNC_JOBS[key]


def build_jobs(config: SyncConfig) -> list[UnresolvedAssetJobDefinition | JobDefinition]:
    jobs: list[UnresolvedAssetJobDefinition | JobDefinition] = []
    for obj in config.objects.values():
        jobs += [sync_job(obj), build_reconcile_job(obj), build_formula_refresh_job(obj)]
    return jobs
