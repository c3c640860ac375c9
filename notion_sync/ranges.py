"""Runs of several daily partitions (a backfill range) that still report every day on its own.

A backfill hands one run up to `max_partitions_per_run` consecutive days (`BackfillPolicy.multi_run`).
The assets work through the days in order and Dagster records each day apart:

- all days done: one materialization per day, each with that day's metadata
  (`context.add_asset_metadata(..., partition_key=day)`, then one `MaterializeResult`);
- a day fails: the days finished before it are reported as `AssetMaterialization(partition=day)`
  events and the step fails, so Dagster marks exactly the remaining days failed (the retry sensor
  and the partitions view then see them per day, and a retry re-runs only them);
- a step retried in the same run (RetryPolicy), or a re-execution of a failed run (from failure,
  or Dagster's run_retries), skips the days that run (or the failed runs it re-executes) finished;
- checks yield one `AssetCheckEvaluation` per day (`partition=day`).

A single-partition run is a range of one day: it goes through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    MaterializeResult,
    Output,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.storage.dagster_run import DagsterRun

RESUMED_FROM_KEY = "resumed_from_run"
# Materializations read per day when resuming: a day re-run by the realtime lane meanwhile has several.
_RECORDS_PER_DAY = 20


def _run_family(instance: DagsterInstance, run: DagsterRun) -> list[DagsterRun]:
    """This run and the failed runs it re-executes (parent, its parent, ...), newest first. A
    re-execution of a run that succeeded is asked to do the work again, so it stops the walk."""
    family = [run]
    while (parent_id := family[-1].parent_run_id) and parent_id not in {r.run_id for r in family}:
        parent = instance.get_run_by_id(parent_id)
        if parent is None or parent.status != DagsterRunStatus.FAILURE:
            break
        family.append(parent)
    return family


def finished_days(context: AssetExecutionContext) -> dict[str, Mapping[str, Any]]:
    """Days of the run's range that an earlier attempt of this step, or the failed run(s) this one
    re-executes, already materialized: day -> that materialization's metadata."""
    if context.retry_number == 0 and not context.run.parent_run_id:
        return {}  # a fresh run: nothing to look up
    instance = context.instance
    family = _run_family(instance, context.run)
    oldest = instance.get_run_record_by_id(family[-1].run_id)
    keys = list(context.partition_keys)
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=context.asset_key,
            asset_partitions=keys,
            after_timestamp=oldest.create_timestamp.timestamp() if oldest else None,
        ),
        limit=_RECORDS_PER_DAY * len(keys),
    ).records
    ids = {run.run_id for run in family}
    done: dict[str, Mapping[str, Any]] = {}
    for record in records:  # newest first
        materialization = record.asset_materialization
        if record.run_id in ids and materialization and materialization.partition not in done:
            done[materialization.partition] = {
                **{key: value for key, value in materialization.metadata.items() if key != RESUMED_FROM_KEY},
                RESUMED_FROM_KEY: record.run_id,
            }
    return done


def materialize_days(
    context: AssetExecutionContext,
    outcomes: Callable[[list[str]], Iterable[tuple[str, Mapping[str, Any]]]],
) -> Iterator[AssetMaterialization | MaterializeResult]:
    """The asset's events for its run's days: `outcomes(days left)` does the work and yields
    ``(day, metadata)`` as each day is done, in order; an exception stops the range."""
    done = finished_days(context)
    if done:
        context.log.info(f"resuming: {len(done)} day(s) of this range were done before, skipped")
    todo = [key for key in context.partition_keys if key not in done]
    finished: dict[str, Mapping[str, Any]] = {}
    try:
        for day, metadata in outcomes(todo) if todo else ():
            finished[day] = metadata
    except BaseException:
        if finished:
            context.log.info(f"{len(finished)} day(s) finished before the failure stay materialized")
        for day, metadata in finished.items():
            yield AssetMaterialization(asset_key=context.asset_key, partition=day, metadata=metadata)
        raise
    for day, metadata in {**done, **finished}.items():
        context.add_asset_metadata(metadata, partition_key=day)
    yield MaterializeResult()


def _target_materialization(
    instance: DagsterInstance, asset_key: AssetKey, day: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The latest materialization of the checked day (what Dagster records for a one-day check)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=records[0].run_id, storage_id=records[0].storage_id, timestamp=records[0].timestamp
    )


def check_days(
    context: AssetCheckExecutionContext, results: Mapping[str, AssetCheckResult]
) -> Iterator[AssetCheckEvaluation | Output]:
    """One evaluation of the context's single check per day of its run (`results` by day, computed
    before: no staging connection is held while Dagster records the evaluations)."""
    [spec] = context.check_specs
    for day, result in results.items():
        yield AssetCheckEvaluation(
            asset_key=spec.asset_key,
            check_name=spec.name,
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=_target_materialization(context.instance, spec.asset_key, day),
            severity=result.severity,
            description=result.description,
            blocking=spec.blocking,
            partition=day,
        )
    [output] = context.op_def.output_defs  # the check's own output: without it the step fails
    yield Output(None, output_name=output.name)
