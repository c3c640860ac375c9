"""Failed partitions and failed runs as the Dagster instance records them.

A partition is failed when the instance's partition status says so
(`DagsterInstance.get_status_by_partition`); the run that failed it is the one of the partition's
latest planned materialization. A failure counts as rate-limited when the run carries the tag
``notion_sync/rate_limited=true`` or when a step or run failure event says so: the error message
(or a cause's, or the failure metadata) contains ``rate_limited`` (Notion's 429 error code, which
`NotionApiError` puts in its message), an HTTP ``429``, or Salesforce's ``REQUEST_LIMIT_EXCEEDED``.
A failure is permanent (no retry can fix it) when a step failed with a
:class:`~notion_sync.permanent.PermanentFailure`, whose metadata the STEP_FAILURE event keeps.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import RunRecord
from dagster._core.storage.partition_status_cache import AssetPartitionStatus
from dagster._core.storage.tags import WILL_RETRY_TAG
from dagster._utils.error import SerializableErrorInfo

from notion_sync.automation.lanes import LANE_TAG, RATE_LIMITED_TAG
from notion_sync.automation.names import object_asset_keys
from notion_sync.automation.retry_policy import FailedPartition
from notion_sync.config import ObjectConfig, SyncConfig
from notion_sync.partitions import daily_partitions
from notion_sync.permanent import PERMANENT_FAILURE_KEY

RATE_LIMIT_PATTERN = re.compile(r"rate_limited|\b429\b|REQUEST_LIMIT_EXCEEDED", re.IGNORECASE)
LANES = ("realtime", "scheduled", "backfill")
DAGSTER_WRAPPER = "dagster._core.errors."  # "Error occurred while executing op ...", cause: the real error
QUALIFIED_NAME = re.compile(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*): ")


def _error_messages(error: SerializableErrorInfo | None) -> Iterator[str]:
    """The messages of an error and its causes; never the stack, whose line numbers may read 429."""
    while error is not None:
        yield error.message
        error = error.cause or error.context


def failure_texts(instance: DagsterInstance, run_id: str) -> list[str]:
    """Every error message and failure description/metadata text of a run's failure events."""
    texts: list[str] = []
    of_type = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    for entry in instance.all_logs(run_id, of_type=of_type):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            texts += _error_messages(data.error)
            if data.user_failure_data is not None:
                texts.append(data.user_failure_data.description or "")
                texts += [f"{key}={value.value}" for key, value in data.user_failure_data.metadata.items()]
        else:
            texts += _error_messages(event.job_failure_data.error)
        texts.append(entry.user_message or "")
    return texts


def first_error_line(instance: DagsterInstance, run_id: str) -> str | None:
    """The first line of the error that failed a run: the first failed step's error (Dagster's
    wrapper skipped, `Failure: ` and module paths dropped), else the run failure's own error."""
    for entry in instance.all_logs(
        run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    ):
        event = entry.dagster_event
        if event is None:
            continue
        step = event.event_type == DagsterEventType.STEP_FAILURE
        error = event.step_failure_data.error if step else event.job_failure_data.error
        while (
            error is not None and error.message.startswith(DAGSTER_WRAPPER) and (error.cause or error.context)
        ):
            error = error.cause or error.context
        if error is not None and error.message.strip():
            return QUALIFIED_NAME.sub(r"\1: ", error.message.strip().splitlines()[0]).removeprefix(
                "Failure: "
            )
    return None


def planned_asset_keys(instance: DagsterInstance, run_id: str) -> set[AssetKey]:
    """The assets a run set out to materialize or check, whatever job it ran (an asset job run from
    the UI or a shell may have no asset selection: it planned all of its job's assets)."""
    planned = {
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
    }
    keys: set[AssetKey] = set()
    for entry in instance.all_logs(run_id, of_type=planned):
        event = entry.dagster_event
        if event is not None:
            keys.add(event.asset_key or event.asset_check_planned_data.asset_key)
    return keys


def is_permanent(instance: DagsterInstance, record: RunRecord) -> bool:
    """Whether a step of the run failed with a `PermanentFailure` (a configuration error)."""
    for entry in instance.all_logs(record.dagster_run.run_id, of_type=DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data if entry.dagster_event else None
        if data is not None and data.user_failure_data is not None:
            marker = data.user_failure_data.metadata.get(PERMANENT_FAILURE_KEY)
            if marker is not None and marker.value is True:
                return True
    return False


def is_rate_limited(instance: DagsterInstance, record: RunRecord) -> bool:
    if record.dagster_run.tags.get(RATE_LIMITED_TAG) == "true":
        return True
    return any(RATE_LIMIT_PATTERN.search(text) for text in failure_texts(instance, record.dagster_run.run_id))


def partitions_by_status(
    instance: DagsterInstance, obj: ObjectConfig, partition_keys: Sequence[str] | None = None
) -> dict[AssetPartitionStatus, dict[str, list[AssetKey]]]:
    """status -> partition key -> the object's assets (`salesforce/`, `notion/`) in that status,
    from the instance's partition status; all partitions when `partition_keys` is None."""
    partitions_def = daily_partitions(obj)
    keys = partitions_def.get_partition_keys() if partition_keys is None else partition_keys
    found: dict[AssetPartitionStatus, dict[str, list[AssetKey]]] = {}
    for asset_key in object_asset_keys(obj.name):
        statuses = instance.get_status_by_partition(asset_key, keys, partitions_def) or {}
        for partition_key, status in statuses.items():
            if status is not None:
                found.setdefault(status, {}).setdefault(partition_key, []).append(asset_key)
    return found


def find_failed_partitions(
    instance: DagsterInstance, config: SyncConfig, handled_run_ids: Collection[str] = ()
) -> tuple[list[FailedPartition], set[str]]:
    """Failed partitions of every `salesforce/*` and `notion/*` asset, grouped by object and day,
    and the keys (``Object|partition``) of partitions being materialized right now.

    Runs that Dagster's own run_retries will re-execute (a crashed worker) are left to it. A
    partition whose latest failed run is in `handled_run_ids` (already answered by a retry or an
    alert) keeps `rate_limited` and `permanent` False and `error` None: its failure events are not
    read again on every tick.
    """
    failed: list[FailedPartition] = []
    in_progress: set[str] = set()
    for obj in config.objects.values():
        statuses = partitions_by_status(instance, obj)
        in_progress |= {f"{obj.name}|{key}" for key in statuses.get(AssetPartitionStatus.IN_PROGRESS, {})}
        for partition_key, asset_keys in statuses.get(AssetPartitionStatus.FAILED, {}).items():
            records = _failed_runs(instance, asset_keys, partition_key)
            if not records or any(r.dagster_run.tags.get(WILL_RETRY_TAG) == "true" for r in records):
                continue
            latest = max(records, key=lambda r: r.end_time or r.update_timestamp.timestamp())
            lane = latest.dagster_run.tags.get(LANE_TAG, "backfill")
            unhandled = latest.dagster_run.run_id not in handled_run_ids
            failed.append(
                FailedPartition(
                    object_name=obj.name,
                    partition_key=partition_key,
                    asset_keys=tuple(asset_keys),
                    run_id=latest.dagster_run.run_id,
                    failed_at=latest.end_time or latest.update_timestamp.timestamp(),
                    rate_limited=unhandled and any(is_rate_limited(instance, record) for record in records),
                    permanent=unhandled and any(is_permanent(instance, record) for record in records),
                    lane=lane if lane in LANES else "backfill",
                    error=first_error_line(instance, latest.dagster_run.run_id) if unhandled else None,
                )
            )
    return failed, in_progress


def _failed_runs(
    instance: DagsterInstance, asset_keys: list[AssetKey], partition_key: str
) -> list[RunRecord]:
    """The failed runs behind the failed assets of one partition (usually one run for both)."""
    run_ids = set()
    for asset_key in asset_keys:
        info = instance.get_latest_planned_materialization_info(asset_key, partition_key)
        if info is not None:
            run_ids.add(info.run_id)
    records = [instance.get_run_record_by_id(run_id) for run_id in run_ids]
    return [r for r in records if r is not None and r.dagster_run.status == DagsterRunStatus.FAILURE]
