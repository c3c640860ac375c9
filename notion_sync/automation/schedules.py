"""One schedule per object whose `schedule.enabled` is true, and one weekly reconciliation schedule
per object.

`schedule_<Object>` syncs, on the object's cron, every daily partition touched since its last
successful tick, one run per partition in the ``scheduled`` lane:

- Each run it requests carries the tick's time in the tag `notion_sync/scheduled_at`. The last
  successful tick is the newest such time whose runs all succeeded (for each of its partitions the
  newest run with that tag, so a re-execution that healed a crashed run counts). Dagster's run
  records are the memory: schedules have no cursor, and a tick whose runs failed or are still
  running does not count, so the next tick covers its days again.
- The partitions run from the day of (last successful tick - the object's `lookback_seconds`, 600 by
  default) to the tick's own day (UTC, like the partitions). After midnight that includes yesterday,
  so a change at 23:30 UTC under an hourly cron is extracted by the 00:00 tick; the lookback covers a
  transaction that commits after a tick with an earlier `SystemModstamp`. Without any successful
  tick yet (a new schedule), only the tick's own day: history is the backfills' job.
- The run key is `schedule:<Object>:<tick time>:<partition>`: evaluating the same tick twice does
  not launch a partition twice. While one of the days is still being materialized the tick launches
  nothing (two runs must not write the same pages at once, as in the change sensor); the next tick
  covers its days. Failed runs are re-launched by the retry sensor as for any lane.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.dagster_run import RunRecord
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from notion_sync.automation.failures import partitions_by_status
from notion_sync.automation.formulas import build_formula_refresh_job
from notion_sync.automation.jobs import sync_job
from notion_sync.automation.lanes import LANE_TAG, lane_tags
from notion_sync.automation.names import formula_refresh_job_name, sync_job_name
from notion_sync.automation.reconcile import build_reconcile_job
from notion_sync.config import ObjectConfig, ScheduleConfig, SyncConfig
from notion_sync.partitions import daily_partitions

SCHEDULED_AT_TAG = "notion_sync/scheduled_at"
PARTITION_TAG = "dagster/partition"
RECENT_RUNS = 500  # scheduled runs read to find the last successful tick (days of hourly ticks)


def last_successful_tick(records: Iterable[RunRecord]) -> datetime | None:
    """The newest `scheduled_at` whose partitions' newest runs all succeeded; records newest first."""
    newest: dict[tuple[str, str], DagsterRunStatus] = {}
    for record in records:
        tags = record.dagster_run.tags
        if SCHEDULED_AT_TAG in tags:
            newest.setdefault(
                (tags[SCHEDULED_AT_TAG], tags.get(PARTITION_TAG, "")), record.dagster_run.status
            )
    failed = {tick for (tick, _), status in newest.items() if status != DagsterRunStatus.SUCCESS}
    succeeded = {tick for tick, _ in newest} - failed
    return max((datetime.fromisoformat(tick) for tick in succeeded), default=None)


def scheduled_runs(instance: DagsterInstance, obj: ObjectConfig) -> list[RunRecord]:
    """The object's most recent scheduled-lane sync runs, newest first."""
    runs_filter = RunsFilter(job_name=sync_job_name(obj.name), tags={LANE_TAG: "scheduled"})
    return list(instance.get_run_records(runs_filter, limit=RECENT_RUNS))


def days_to_sync(since: datetime | None, tick: datetime, lookback_seconds: int) -> list[str]:
    """UTC days from that of `since` minus the late-commit lookback to the tick's day."""
    last = tick.astimezone(UTC).date()
    first = min(last, (since - timedelta(seconds=lookback_seconds)).astimezone(UTC).date()) if since else last
    return [date.fromordinal(day).isoformat() for day in range(first.toordinal(), last.toordinal() + 1)]


def build_object_schedule(obj: ObjectConfig) -> ScheduleDefinition:
    assert obj.schedule is not None
    partitions_def = daily_partitions(obj)

    @schedule(
        name=f"schedule_{obj.name}",
        job=sync_job(obj),
        cron_schedule=obj.schedule.cron,
        execution_timezone=obj.schedule.timezone,
        default_status=DefaultScheduleStatus.RUNNING,  # `enabled: true` in the config means running
        description=f"Syncs every partition of {obj.name} touched since its last successful tick, on "
        f"'{obj.schedule.cron}' ({obj.schedule.timezone}).",
    )
    def _scheduled(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        tick = context.scheduled_execution_time
        since = last_successful_tick(scheduled_runs(context.instance, obj))
        days = [
            day
            for day in days_to_sync(since, tick, obj.lookback_seconds)
            if partitions_def.has_partition_key(day)
        ]
        if not days:
            return SkipReason(f"{tick.isoformat()} is before the first partition ({obj.start_date})")
        busy = partitions_by_status(context.instance, obj, days).get(AssetPartitionStatus.IN_PROGRESS)
        if busy:
            return SkipReason(f"waiting for {obj.name} partitions {sorted(busy)}: the next tick covers them")
        tags = {**lane_tags("scheduled"), SCHEDULED_AT_TAG: tick.astimezone(UTC).isoformat()}
        return [
            RunRequest(
                run_key=f"schedule:{obj.name}:{tags[SCHEDULED_AT_TAG]}:{day}", partition_key=day, tags=tags
            )
            for day in days
        ]

    return _scheduled


def config_schedule(
    name: str, job: UnresolvedAssetJobDefinition, schedule: ScheduleConfig
) -> ScheduleDefinition:
    """A plain schedule of `job` on a configured cron; `enabled` decides whether it starts running."""
    return ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=DefaultScheduleStatus.RUNNING if schedule.enabled else DefaultScheduleStatus.STOPPED,
    )


def build_reconcile_schedule(obj: ObjectConfig, schedule: ScheduleConfig) -> ScheduleDefinition:
    """`reconcile_<Object>_weekly` on `reconcile.schedule` (Sunday 03:00 UTC by default)."""
    return config_schedule(f"reconcile_{obj.name}_weekly", build_reconcile_job(obj), schedule)


def build_formula_refresh_schedule(obj: ObjectConfig, reconcile: ScheduleConfig) -> ScheduleDefinition:
    """On the object's `formula_refresh` schedule, else with the weekly reconcile."""
    return config_schedule(
        f"{formula_refresh_job_name(obj.name)}_schedule",
        build_formula_refresh_job(obj),
        obj.formula_refresh or reconcile,
    )


def build_schedules(config: SyncConfig) -> list[ScheduleDefinition]:
    objects = list(config.objects.values())
    return [
        *(build_object_schedule(obj) for obj in objects if obj.schedule is not None and obj.schedule.enabled),
        *(build_reconcile_schedule(obj, config.reconcile.schedule) for obj in objects),
        *(build_formula_refresh_schedule(obj, config.reconcile.schedule) for obj in objects),
    ]
