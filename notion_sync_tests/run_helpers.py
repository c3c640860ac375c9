"""Reading in-process run results: the failed step's error, and what a run-status sensor answers."""

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


def failure_without_retry(result: ExecuteInProcessResult) -> str:
    """The failed step's error text, after checking Dagster did not retry it."""
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    [event] = result.get_step_failure_events()
    return event.event_specific_data.error.to_string()
