"""Names shared by jobs, sensors and schedules (no imports of theirs, so no import cycles)."""

from __future__ import annotations

from dagster import AssetKey

# Metadata of a reconciliation check, or of a notion/<Object> materialization that replaced a gone
# database: partitions the `reconcile_resync` sensor launches again.
RESYNC_METADATA_KEY = "resync_partitions"
# Metadata of a formula refresh check: partitions whose rows are staged already, so the sensor
# launches only their notion/<Object>.
NOTION_RESYNC_METADATA_KEY = "notion_resync_partitions"


def sync_job_name(object_name: str) -> str:
    return f"sync_{object_name}"


def reconcile_job_name(object_name: str) -> str:
    return f"reconcile_{object_name}"


def formula_refresh_job_name(object_name: str) -> str:
    return f"refresh_formulas_{object_name}"


def object_job_names(object_name: str) -> tuple[str, str, str]:
    """Every job an object has (jobs.py builds one of each)."""
    return sync_job_name(object_name), reconcile_job_name(object_name), formula_refresh_job_name(object_name)


def object_asset_keys(object_name: str) -> tuple[AssetKey, AssetKey]:
    """`salesforce/<Object>` and `notion/<Object>`."""
    return AssetKey(["salesforce", object_name]), AssetKey(["notion", object_name])
