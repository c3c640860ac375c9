"""The near-real-time lane: one change sensor per object with mode `realtime`.

Every `realtime.interval_seconds` the sensor asks Salesforce for the newest `SystemModstamp` after
its cursor (``ORDER BY SystemModstamp DESC LIMIT 1`` through queryAll, so deletions count: one
cheap API call when nothing changed, two when changes span several days) and launches the touched
daily partitions of `sync_<Object>` in the ``realtime`` lane (`dagster/priority` 10, above the
backfill lane's -1). The cursor is the newest modstamp seen; on its first tick the sensor only
records it (history is the backfills' job).

A partition that is already being materialized is not launched again (two runs of one partition
must not write the same pages at once): the cursor stays put and the change is launched on a
later tick, after that run ends.
"""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.partition_status_cache import AssetPartitionStatus
from simple_salesforce import Salesforce

from notion_sync.automation.failures import partitions_by_status
from notion_sync.automation.jobs import sync_job
from notion_sync.automation.lanes import lane_tags
from notion_sync.automation.modstamps import modstamp_day, touched_days
from notion_sync.config import ObjectConfig, RealtimeConfig
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce.resource import SalesforceResource

MODSTAMP = "SystemModstamp"


def _modstamp_query(object_name: str, after: str | None, order: str) -> str:
    where = f" WHERE {MODSTAMP} > {after}" if after else ""
    return f"SELECT {MODSTAMP} FROM {object_name}{where} ORDER BY {MODSTAMP} {order} LIMIT 1"


def _first_modstamp(sf: Salesforce, query: str) -> str | None:
    records = sf.query(query, include_deleted=True)["records"]
    return records[0][MODSTAMP] if records else None


def build_change_sensor(obj: ObjectConfig, realtime: RealtimeConfig) -> SensorDefinition:
    job = sync_job(obj)
    partitions_def = daily_partitions(obj)

    @sensor(
        name=f"changes_{obj.name}",
        jobs=[job],
        minimum_interval_seconds=realtime.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Launches the partitions of {obj.name} records changed in Salesforce since the "
        "last tick, in the high-priority realtime lane.",
    )
    def _changes(
        context: SensorEvaluationContext, salesforce: SalesforceResource
    ) -> SensorResult | SkipReason:
        cursor = context.cursor
        sf = salesforce.get_client().sf
        newest = _first_modstamp(sf, _modstamp_query(obj.name, cursor, "DESC"))
        if newest is None:
            return SkipReason(f"no {obj.name} changes after {cursor}")
        if cursor is None:
            return SensorResult(cursor=newest, skip_reason=f"started at {obj.name} modstamp {newest}")
        oldest = (
            cursor
            if modstamp_day(cursor) == modstamp_day(newest)
            else (_first_modstamp(sf, _modstamp_query(obj.name, cursor, "ASC")) or newest)
        )
        days = [key for key in touched_days(oldest, newest) if partitions_def.has_partition_key(key)]
        busy = partitions_by_status(context.instance, obj, days).get(AssetPartitionStatus.IN_PROGRESS)
        if busy:
            return SkipReason(f"{obj.name} changed up to {newest}; waiting for partitions {sorted(busy)}")
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=f"changes:{obj.name}:{day}:{newest}",
                    partition_key=day,
                    tags=lane_tags("realtime"),
                )
                for day in days
            ],
            cursor=newest,
        )

    return _changes
