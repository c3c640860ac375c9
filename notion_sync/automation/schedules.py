"""One schedule per object whose `schedule.enabled` is true: the latest partition on its cron; and
one weekly reconciliation schedule per object.

The latest partition is the current UTC day (the partitions have `end_offset=1`), so a run at
00:05 picks up the new day; changes in the last minutes of the previous day are covered by the
change sensor (mode realtime) or by the next backfill of that day.
"""

from __future__ import annotations

from dagster import DefaultScheduleStatus, RunRequest, ScheduleDefinition, ScheduleEvaluationContext, schedule

from notion_sync.automation.jobs import sync_job
from notion_sync.automation.lanes import lane_tags
from notion_sync.automation.reconcile import build_reconcile_job
from notion_sync.config import ObjectConfig, ScheduleConfig, SyncConfig
from notion_sync.partitions import daily_partitions


def build_object_schedule(obj: ObjectConfig) -> ScheduleDefinition:
    assert obj.schedule is not None
    partitions_def = daily_partitions(obj)

    @schedule(
        name=f"schedule_{obj.name}",
        job=sync_job(obj),
        cron_schedule=obj.schedule.cron,
        execution_timezone=obj.schedule.timezone,
        default_status=DefaultScheduleStatus.RUNNING,  # `enabled: true` in the config means running
        description=f"Syncs the latest partition of {obj.name} on '{obj.schedule.cron}' "
        f"({obj.schedule.timezone}).",
    )
    def _scheduled(context: ScheduleEvaluationContext) -> RunRequest:
        partition_key = partitions_def.get_last_partition_key(current_time=context.scheduled_execution_time)
        return RunRequest(partition_key=partition_key, tags=lane_tags("scheduled"))

    return _scheduled


def build_reconcile_schedule(obj: ObjectConfig, schedule: ScheduleConfig) -> ScheduleDefinition:
    """`reconcile_<Object>_weekly` on `reconcile.schedule` (Sunday 03:00 UTC by default)."""
    return ScheduleDefinition(
        name=f"reconcile_{obj.name}_weekly",
        job=build_reconcile_job(obj),
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=DefaultScheduleStatus.RUNNING if schedule.enabled else DefaultScheduleStatus.STOPPED,
    )


def build_schedules(config: SyncConfig) -> list[ScheduleDefinition]:
    objects = list(config.objects.values())
    return [
        *(build_object_schedule(obj) for obj in objects if obj.schedule is not None and obj.schedule.enabled),
        *(build_reconcile_schedule(obj, config.reconcile.schedule) for obj in objects),
    ]
