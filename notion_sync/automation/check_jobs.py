"""Jobs that run one asset check of an object (the reconciliation, the formula refresh).

Cached by job name: sensors and schedules target the very job objects that `Definitions` holds
(Dagster refuses two different job objects with the same name).
"""

from __future__ import annotations

from dagster import AssetChecksDefinition, AssetSelection, define_asset_job, in_process_executor
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from notion_sync.automation.lanes import lane_tags

_CHECK_JOBS: dict[str, UnresolvedAssetJobDefinition] = {}


def check_job(name: str, check: AssetChecksDefinition, description: str) -> UnresolvedAssetJobDefinition:
    """A backfill-lane, in-process job that runs `check` alone."""
    if name not in _CHECK_JOBS:
        _CHECK_JOBS[name] = define_asset_job(
            name,
            selection=AssetSelection.checks(check),
            tags=lane_tags("backfill"),
            executor_def=in_process_executor,
            description=description,
        )
    return _CHECK_JOBS[name]
