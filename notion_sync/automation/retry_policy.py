"""When to re-launch a failed partition: the retry rules as one pure function.

The rules (the Apex NotionSyncRetryBatch): retry n waits `backoff_minutes[n-1]` after the failure
(1, 2, 4 minutes), a rate-limited failure waits at least `min_after_rate_limit_minutes` (5), rate-
limited failures are launched first, and after `max_attempts` (3) retries the partition raises an
alert instead. A permanent failure (a configuration error: a wrong token, a missing file, refused
credentials) raises the alert at once, without a retry. A partition that is neither failed nor in
progress any more has succeeded (or was wiped), which resets its count.

:func:`plan_retries` takes the clock as an argument and keeps its memory in a JSON-able
:class:`RetryState` (the sensor cursor), so it is tested without waiting and without Dagster.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, RunRequest

from notion_sync.automation.lanes import RETRY_ATTEMPT_TAG, RETRY_OF_TAG, Lane, lane_tags
from notion_sync.automation.names import sync_job_name
from notion_sync.config import RetryConfig


@dataclass(frozen=True)
class FailedPartition:
    """The latest failed run of one object's partition and what it tells about the failure."""

    object_name: str
    partition_key: str
    asset_keys: tuple[AssetKey, ...]
    run_id: str
    failed_at: float  # POSIX seconds
    rate_limited: bool = False
    lane: Lane = "backfill"
    error: str | None = None  # first line of the run's error, for the alert
    permanent: bool = False  # a configuration error: every retry would fail the same way

    @property
    def key(self) -> str:
        return f"{self.object_name}|{self.partition_key}"


@dataclass
class PartitionRetries:
    attempts: int = 0  # retries launched since the partition last succeeded
    handled_run_id: str | None = None  # failed run already answered by a retry or an alert


@dataclass
class RetryState:
    partitions: dict[str, PartitionRetries] = field(default_factory=dict)

    def to_cursor(self) -> str:
        return json.dumps(
            {key: [entry.attempts, entry.handled_run_id] for key, entry in sorted(self.partitions.items())}
        )

    @classmethod
    def from_cursor(cls, cursor: str | None) -> RetryState:
        data = json.loads(cursor) if cursor else {}
        return cls({key: PartitionRetries(attempts, run_id) for key, (attempts, run_id) in data.items()})


def retry_delay_s(policy: RetryConfig, attempt: int, rate_limited: bool) -> float:
    """Seconds between a failure and retry number `attempt` (1-based)."""
    minutes = policy.backoff_minutes[min(attempt, len(policy.backoff_minutes)) - 1]
    if rate_limited:
        minutes = max(minutes, policy.min_after_rate_limit_minutes)
    return minutes * 60


def retry_run_key(failure: FailedPartition, attempt: int) -> str:
    """Unique per failed run: a retry re-using a run key would be skipped silently by Dagster."""
    return f"retry:{failure.object_name}:{failure.partition_key}:{attempt}:{failure.run_id}"


def _permanent_alert(failures: Sequence[FailedPartition]) -> str:
    """One run's partitions that failed with an error no retry can fix, and that error."""
    days: dict[str, list[str]] = {}
    for failure in failures:
        days.setdefault(failure.object_name, []).append(failure.partition_key)
    where = " and ".join(
        f"{name} partition {keys[0]}"
        if len(keys) == 1
        else f"{name} partitions {min(keys)} to {max(keys)} ({len(keys)})"
        for name, keys in days.items()
    )
    first = failures[0]
    return (
        f"{where} failed with an error no retry can fix (run {first.run_id})"
        f"{f': {first.error}' if first.error else ''}; no automatic retry: fix the cause, then "
        f"materialize {'the partition' if len(failures) == 1 else 'them'} again."
    )


def plan_retries(
    failures: Sequence[FailedPartition],
    in_progress: Collection[str],
    state: RetryState,
    now: float,
    policy: RetryConfig,
) -> tuple[list[RunRequest], RetryState, list[str]]:
    """Retries due at `now` (rate-limited first, then oldest failure), the new state, alert texts:
    one per partition out of retries, one per run that failed permanently (a backfill range fails
    many days in one run).

    `in_progress` holds the keys (``Object|partition``) of partitions being materialized, whose
    counts are kept until their run ends.
    """
    failed = {failure.key: failure for failure in failures}
    new_state = RetryState(
        {key: entry for key, entry in state.partitions.items() if key in failed or key in in_progress}
    )
    due: list[tuple[FailedPartition, int]] = []
    alerts: list[str] = []
    permanent: dict[str, list[FailedPartition]] = {}  # run id -> its failed partitions
    for failure in failures:
        entry = new_state.partitions.get(failure.key, PartitionRetries())
        if entry.handled_run_id == failure.run_id:
            continue
        attempt = entry.attempts + 1
        if failure.permanent:
            permanent.setdefault(failure.run_id, []).append(failure)
            new_state.partitions[failure.key] = PartitionRetries(entry.attempts, failure.run_id)
        elif attempt > policy.max_attempts:
            alerts.append(
                f"{failure.object_name} partition {failure.partition_key} still fails after "
                f"{entry.attempts} retries (last run {failure.run_id}"
                f"{', rate limited' if failure.rate_limited else ''})"
                f"{f': {failure.error}' if failure.error else ''}; no more automatic retries."
            )
            new_state.partitions[failure.key] = PartitionRetries(entry.attempts, failure.run_id)
        elif now >= failure.failed_at + retry_delay_s(policy, attempt, failure.rate_limited):
            due.append((failure, attempt))
            new_state.partitions[failure.key] = PartitionRetries(attempt, failure.run_id)
    alerts = [_permanent_alert(run_failures) for run_failures in permanent.values()] + alerts
    due.sort(key=lambda item: (not item[0].rate_limited, item[0].failed_at))
    requests = [
        RunRequest(
            run_key=retry_run_key(failure, attempt),
            job_name=sync_job_name(failure.object_name),
            partition_key=failure.partition_key,
            asset_selection=list(failure.asset_keys),
            tags={**lane_tags(failure.lane), RETRY_ATTEMPT_TAG: str(attempt), RETRY_OF_TAG: failure.run_id},
        )
        for failure, attempt in due
    ]
    return requests, new_state, alerts
