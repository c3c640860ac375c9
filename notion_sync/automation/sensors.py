"""Every sensor of the project, built from the sync config, and the retry sensor.

- `notion_sync_retry`: re-launches failed partitions of every `salesforce/*` and `notion/*` asset
  following :mod:`.retry_policy`; its cursor holds the retry counts.
- `realtime_changes` (objects with mode realtime): the near-real-time lane, :mod:`.realtime`
  (Change Data Capture events, or polling through the Composite API, :mod:`.changes`).
- `notion_sync_run_failure_alert` and `notion_sync_health`: :mod:`.alerts`.
- `reconcile_resync`: launches the partitions a successful `reconcile_<Object>` or
  `refresh_formulas_<Object>` run asked for.
"""

from __future__ import annotations

import time

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    run_status_sensor,
    sensor,
)

from notion_sync.automation.alerts import build_health_sensor, build_run_failure_alert_sensor, send_alert
from notion_sync.automation.failures import find_failed_partitions
from notion_sync.automation.jobs import sync_job
from notion_sync.automation.realtime import build_realtime_sensor
from notion_sync.automation.reconcile import resync_requests
from notion_sync.automation.retry_policy import RetryState, plan_retries
from notion_sync.config import SyncConfig

clock = time.time  # the retry sensor's clock; tests replace it to skip the backoff waits


def build_retry_sensor(config: SyncConfig) -> SensorDefinition:
    @sensor(
        name="notion_sync_retry",
        jobs=[sync_job(obj) for obj in config.objects.values()],
        minimum_interval_seconds=config.retry.check_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Re-launches failed partitions with backoff (rate-limited first); alerts after "
        f"{config.retry.max_attempts} retries.",
    )
    def notion_sync_retry(context: SensorEvaluationContext) -> SensorResult:
        state = RetryState.from_cursor(context.cursor)
        handled = {entry.handled_run_id for entry in state.partitions.values() if entry.handled_run_id}
        failures, in_progress = find_failed_partitions(context.instance, config, handled)
        requests, state, alerts = plan_retries(failures, in_progress, state, clock(), config.retry)
        for text in alerts:
            send_alert(text, config.alerts.webhook_url, context.log)
        skip = f"{len(failures)} failed partitions, none due for a retry ({len(alerts)} alerts)"
        return SensorResult(
            run_requests=requests, cursor=state.to_cursor(), skip_reason=None if requests else skip
        )

    return notion_sync_retry


def build_resync_sensor(config: SyncConfig) -> SensorDefinition:
    """Watches every code location, as the failure alert does, so that a run launched from a shell (a
    run without the daemon's code location origin) is followed up too. Any job: a reconciliation asks
    for partitions in its check's metadata, a sync that replaced a gone Notion database (in
    `sync_<Object>`, a UI materialization, a backfill) in its materialization's."""
    objects = config.objects.values()

    @run_status_sensor(
        name="reconcile_resync",
        run_status=DagsterRunStatus.SUCCESS,
        monitor_all_code_locations=True,
        request_jobs=[sync_job(obj) for obj in objects],
        default_status=DefaultSensorStatus.RUNNING,
        description="Syncs again the partitions a run asked for: records a reconciliation found missing "
        "in Notion, every partition of an object whose gone Notion database was replaced, or (Notion "
        "only) the partitions whose formula values a formula refresh found stale.",
    )
    def reconcile_resync(context: RunStatusSensorContext) -> list[RunRequest] | None:
        # None, not an empty list, for runs with nothing to sync again: Dagster ends a tick at the
        # first run for which the sensor returned something, and every successful run is seen here.
        return list(resync_requests(context)) or None

    return reconcile_resync


def build_sensors(config: SyncConfig) -> list[SensorDefinition]:
    realtime = [obj for obj in config.objects.values() if obj.mode == "realtime"]
    return [
        build_retry_sensor(config),
        *([build_realtime_sensor(realtime, config.realtime)] if realtime else []),
        build_run_failure_alert_sensor(config),
        build_health_sensor(config),
        build_resync_sensor(config),
    ]
