"""Ticking a run-status sensor the way the daemon does after a run succeeded."""

from __future__ import annotations

from dagster import (
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    RunRequest,
    RunStatusSensorDefinition,
    build_run_status_sensor_context,
)


def requests_after_success(
    sensor: RunStatusSensorDefinition, instance: DagsterInstance, result: ExecuteInProcessResult
) -> list[RunRequest]:
    """The run requests `sensor` answers with for the RUN_SUCCESS event of `result`'s run."""
    success = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_SUCCESS)
    context = build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=success,
    )
    return list(sensor(context) or [])
