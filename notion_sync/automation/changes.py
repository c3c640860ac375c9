"""The near-real-time lane: one change sensor per object with mode `realtime`.

Every `realtime.interval_seconds` the sensor lists the records changed since the newest change it
saw minus the object's `lookback_seconds` (``SELECT Id, SystemModstamp ... WHERE SystemModstamp >
<newest - lookback> ORDER BY SystemModstamp DESC LIMIT 2000`` through queryAll, so deletions count:
one cheap API call per tick) and launches the daily partitions of `sync_<Object>` touched by the
pairs (Id, SystemModstamp) it has not seen yet, in the ``realtime`` lane (`dagster/priority` 10,
above the backfill lane's -1).

The lookback is for late commits: a long transaction commits with a SystemModstamp earlier than
records already read. The cursor keeps the newest modstamp and every pair seen within the lookback
window, so a change read again is not launched again, and a late one is launched once. On its first
tick the sensor only records the current window (history is the backfills' job).

At most ``WINDOW_LIMIT`` pairs are listed per tick (one REST page). When more changed within the
window, the unlisted older ones are covered only if they are newer than the previous cursor (their
days are launched from the cursor's day on); a late commit behind 2,000 newer changes within the
lookback is left to the next backfill or reconcile of its day.

A partition that is already being materialized is not launched again (two runs of one partition
must not write the same pages at once): the cursor stays put and the change is launched on a
later tick, after that run ends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
from notion_sync.automation.modstamps import format_modstamp, modstamp_day, parse_modstamp, touched_days
from notion_sync.config import ObjectConfig, RealtimeConfig
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync.salesforce.soql import soql_datetime

MODSTAMP = "SystemModstamp"
WINDOW_LIMIT = 2_000  # one REST page of (Id, SystemModstamp) pairs


@dataclass
class ChangeCursor:
    """The newest modstamp seen and the pairs seen within the lookback window (Id -> modstamp).

    `seen` None: a cursor written before the lookback existed (a bare modstamp), for which every
    record up to `newest` counts as seen.
    """

    newest: str
    seen: dict[str, str] | None = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ChangeCursor:
        if not text.startswith("{"):
            return cls(newest=text, seen=None)
        data = json.loads(text)
        return cls(newest=data["newest"], seen=data["seen"])

    def dump(self) -> str:
        return json.dumps({"newest": self.newest, "seen": self.seen}, sort_keys=True)

    def is_new(self, record_id: str, stamp: str) -> bool:
        if self.seen is None:
            return stamp > self.newest
        return self.seen.get(record_id) != stamp


def _window_query(object_name: str, floor: datetime | None) -> str:
    where = f" WHERE {MODSTAMP} > {soql_datetime(floor)}" if floor else ""
    return (
        f"SELECT Id, {MODSTAMP} FROM {object_name}{where} "
        f"ORDER BY {MODSTAMP} DESC, Id DESC LIMIT {WINDOW_LIMIT}"
    )


def _floor(newest: str, lookback_seconds: int) -> datetime:
    """Start of the lookback window, in whole seconds as a SOQL literal can say it."""
    return (parse_modstamp(newest) - timedelta(seconds=lookback_seconds)).replace(microsecond=0)


def _list_window(sf: Salesforce, object_name: str, floor: datetime | None) -> list[tuple[str, str]]:
    """(Id, modstamp) of the records changed after `floor`, newest first, deleted ones included."""
    records = sf.query(_window_query(object_name, floor), include_deleted=True)["records"]
    return [(record["Id"], record[MODSTAMP]) for record in records]


def _next_cursor(previous: ChangeCursor | None, listed: list[tuple[str, str]], lookback: int) -> ChangeCursor:
    """The newest modstamp and the pairs within its lookback window, at most WINDOW_LIMIT of them."""
    newest = max([stamp for _, stamp in listed] + ([previous.newest] if previous else []))
    floor = format_modstamp(_floor(newest, lookback))
    seen = dict(previous.seen or {}) if previous else {}
    seen.update(listed)
    kept = sorted(((stamp, record_id) for record_id, stamp in seen.items() if stamp > floor), reverse=True)
    kept = kept[:WINDOW_LIMIT]
    return ChangeCursor(newest=newest, seen={record_id: stamp for stamp, record_id in kept})


def _changed_days(previous: ChangeCursor, listed: list[tuple[str, str]]) -> tuple[list[str], str]:
    """The days touched by unseen pairs, and a digest of those pairs (for the run keys)."""
    unseen = sorted((stamp, record_id) for record_id, stamp in listed if previous.is_new(record_id, stamp))
    days = {modstamp_day(stamp).isoformat() for stamp, _ in unseen}
    oldest_listed = listed[-1][1] if listed else previous.newest
    if len(listed) >= WINDOW_LIMIT and oldest_listed > previous.newest:
        days.update(touched_days(previous.newest, oldest_listed))  # unlisted changes since the cursor
    digest = hashlib.sha1(repr(unseen).encode()).hexdigest()[:12]
    return sorted(days), digest


def build_change_sensor(obj: ObjectConfig, realtime: RealtimeConfig) -> SensorDefinition:
    job = sync_job(obj)
    partitions_def = daily_partitions(obj)

    @sensor(
        name=f"changes_{obj.name}",
        jobs=[job],
        minimum_interval_seconds=realtime.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Launches the partitions of {obj.name} records changed in Salesforce since the "
        f"last tick (re-reading {obj.lookback_seconds} s back for late commits), in the high-priority "
        "realtime lane.",
    )
    def _changes(
        context: SensorEvaluationContext, salesforce: SalesforceResource
    ) -> SensorResult | SkipReason:
        previous = ChangeCursor.parse(context.cursor) if context.cursor else None
        sf = salesforce.get_client().sf
        floor = _floor(previous.newest, obj.lookback_seconds) if previous else None
        listed = _list_window(sf, obj.name, floor)
        if previous is None:
            if not listed:
                return SkipReason(f"no {obj.name} records yet")
            cursor = _next_cursor(None, listed, obj.lookback_seconds)
            return SensorResult(
                cursor=cursor.dump(), skip_reason=f"started at {obj.name} modstamp {cursor.newest}"
            )
        changed, digest = _changed_days(previous, listed)
        days = [key for key in changed if partitions_def.has_partition_key(key)]
        if not changed:
            return SensorResult(
                cursor=_next_cursor(previous, listed, obj.lookback_seconds).dump(),
                skip_reason=f"no {obj.name} changes since {floor} (lookback {obj.lookback_seconds} s)",
            )
        busy = partitions_by_status(context.instance, obj, days).get(AssetPartitionStatus.IN_PROGRESS)
        if busy:
            return SkipReason(f"{obj.name} changed on {days}; waiting for partitions {sorted(busy)}")
        cursor = _next_cursor(previous, listed, obj.lookback_seconds)
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=f"changes:{obj.name}:{day}:{cursor.newest}:{digest}",
                    partition_key=day,
                    tags=lane_tags("realtime"),
                )
                for day in days
            ],
            cursor=cursor.dump(),
        )

    return _changes
