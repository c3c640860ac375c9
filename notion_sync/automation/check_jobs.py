"""Jobs that run one asset check of an object (the reconciliation, the formula refresh), and how such
a check stays silent in every other run.

Cached by job name: sensors and schedules target the very job objects that `Definitions` holds
(Dagster refuses two different job objects with the same name).
"""

from __future__ import annotations

from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetChecksDefinition,
    AssetSelection,
    Output,
    define_asset_job,
    in_process_executor,
)
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


def outside_its_job(context: AssetCheckExecutionContext, job_name: str, why: str) -> Iterator[Output] | None:
    """None in `job_name`; elsewhere, after logging `why`, the empty outputs the check yields instead.

    Dagster runs a check with every run of its asset. Yielding nothing there makes Dagster log that
    the op "did not yield or return expected outputs", which reads as a fault in every sync run.
    """
    if context.run.job_name == job_name:
        return None
    context.log.info(f"{why}: no result recorded by this run")
    return (
        Output(None, output_name=output.name) for output in context.op_execution_context.op_def.output_defs
    )
