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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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
from notion_sync.salesforce.extract import read_deleted
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync.salesforce.soql import soql_datetime

MODSTAMP = "SystemModstamp"
clock = time.time  # when getDeleted is asked up to; tests may replace it
WINDOW_LIMIT = 2_000  # one REST page of (Id, SystemModstamp) pairs


@dataclass
class ChangeCursor:
    """The newest modstamp seen and the pairs seen within the lookback window (Id -> modstamp).

    `seen` None: a cursor written before the lookback existed (a bare modstamp), for which every
    record up to `newest` counts as seen.
    """

    newest: str
    seen: dict[str, str] | None = field(default_factory=dict)
    deletes_covered: str | None = None  # getDeleted's latestDateCovered of the last call

    @classmethod
    def parse(cls, text: str) -> ChangeCursor:
        if not text.startswith("{"):
            return cls(newest=text, seen=None)
        data = json.loads(text)
        return cls(newest=data["newest"], seen=data["seen"], deletes_covered=data.get("deletes_covered"))

    def dump(self) -> str:
        data = {"newest": self.newest, "seen": self.seen, "deletes_covered": self.deletes_covered}
        return json.dumps(data, sort_keys=True)

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


def _read_deletes(
    sf: Salesforce, object_name: str, previous: ChangeCursor, floor: datetime
) -> tuple[list[tuple[str, str]], str | None]:
    """(Id, deletedDate) from getDeleted since the last call, and the new `deletes_covered`.

    Hard deletes and Recycle Bin purges never show in queryAll. getDeleted counts whole minutes,
    so it is asked at most once a minute; each call starts a minute before the last one's
    latestDateCovered (Salesforce wants more than a minute), the overlap being deduplicated by
    the seen pairs like any change read again.
    """
    now = datetime.fromtimestamp(clock(), UTC)
    covered = parse_modstamp(previous.deletes_covered) if previous.deletes_covered else None
    if covered is not None and now - covered < timedelta(minutes=1):
        return [], previous.deletes_covered
    start = covered - timedelta(minutes=1) if covered else floor
    found = read_deleted(sf, object_name, start, now, now)
    if found is None:
        return [], previous.deletes_covered
    return found.records, format_modstamp(found.covered)


def _next_cursor(
    previous: ChangeCursor | None, listed: list[tuple[str, str]], lookback: int, deletes_covered: str | None
) -> ChangeCursor:
    """The newest modstamp and the pairs within its lookback window, at most WINDOW_LIMIT of them."""
    newest = max([stamp for _, stamp in listed] + ([previous.newest] if previous else []))
    floor = format_modstamp(_floor(newest, lookback))
    seen = dict(previous.seen or {}) if previous else {}
    seen.update(listed)
    kept = sorted(((stamp, record_id) for record_id, stamp in seen.items() if stamp > floor), reverse=True)
    kept = kept[:WINDOW_LIMIT]
    seen = {record_id: stamp for stamp, record_id in kept}
    return ChangeCursor(newest=newest, seen=seen, deletes_covered=deletes_covered)


def _changed_days(
    previous: ChangeCursor, window: list[tuple[str, str]], deletes: list[tuple[str, str]]
) -> tuple[list[str], str]:
    """The days touched by unseen pairs, and a digest of those pairs (for the run keys)."""
    unseen = sorted(
        (stamp, record_id) for record_id, stamp in window + deletes if previous.is_new(record_id, stamp)
    )
    days = {modstamp_day(stamp).isoformat() for stamp, _ in unseen}
    oldest_listed = window[-1][1] if window else previous.newest
    if len(window) >= WINDOW_LIMIT and oldest_listed > previous.newest:
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
        window = _list_window(sf, obj.name, floor)
        if previous is None:
            if not window:
                return SkipReason(f"no {obj.name} records yet")
            cursor = _next_cursor(None, window, obj.lookback_seconds, None)
            return SensorResult(
                cursor=cursor.dump(), skip_reason=f"started at {obj.name} modstamp {cursor.newest}"
            )
        assert floor is not None
        deletes, covered = _read_deletes(sf, obj.name, previous, floor)
        cursor = _next_cursor(previous, window + deletes, obj.lookback_seconds, covered)
        changed, digest = _changed_days(previous, window, deletes)
        if not changed:
            return SensorResult(
                cursor=cursor.dump(),
                skip_reason=f"no {obj.name} changes since {floor} (lookback {obj.lookback_seconds} s)",
            )
        days = [key for key in changed if partitions_def.has_partition_key(key)]
        busy = partitions_by_status(context.instance, obj, days).get(AssetPartitionStatus.IN_PROGRESS)
        if busy:
            return SkipReason(f"{obj.name} changed on {days}; waiting for partitions {sorted(busy)}")
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
