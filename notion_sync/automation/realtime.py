"""The near-real-time lane: the `realtime_changes` sensor, for every object with mode `realtime`.

Each object takes one of two paths, kept in the sensor's cursor and shown in its tick log and in
`notion-sync status`:

- ``cdc``: Change Data Capture through the Pub/Sub API. A tick subscribes to
  ``/data/<Object>ChangeEvent`` after the object's stored replay id, listens up to
  `realtime.listen_seconds` (returning a moment after the first batch), and launches the partitions
  of the days the events touched (their commit day, and the day of LastModifiedDate when the event
  carries it, for late commits). No REST call: CDC costs no API requests. DELETE events are
  deletes like any other change of the day (the sync trashes the page). Gap events (``GAP_*``) carry
  no trustworthy payload: their records are read again from the REST API (their SystemModstamp
  says the day); ``GAP_OVERFLOW`` (over 100,000 changes in one transaction) re-reads the window
  since its commit with the window query of the polling path.
- ``polling``: objects the Pub/Sub API refuses (not selected for CDC, delivery allocation spent),
  or all of them with `realtime.change_events: false`, are polled every
  `realtime.interval_seconds`, five objects to a Composite API call (:mod:`.changes`). CDC is
  tried again after `realtime.cdc_retry_minutes`.

Replay: the replay id of the last event processed is stored per object in the cursor, which Dagster
commits with the tick's run requests, so a restart (daemon, code server, deploy, a dropped stream)
resumes after it and nothing is lost; a tick that fails stores nothing and the next one reads the
same events again, launching the same run keys (``cdc:<Object>:<day>:<first replay id>``), which
Dagster does not launch twice. An object without a position yet (first start, after an expired
replay id, back from polling) subscribes at LATEST *and* runs the window query from its last known
modstamp in the same tick until its first event gives it a position, so no change falls between the
two: this is the fallback for a replay id older than the 72-hour retention.

A partition that is being materialized is not launched again (two runs of one partition must not
write the same pages at once): the launch waits in the cursor (`pending`) and goes out on a later
tick, after that run; the events are consumed meanwhile. Runs carry the ``realtime`` lane's tags.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from dagster._core.storage.partition_status_cache import AssetPartitionStatus
from simple_salesforce import Salesforce

from notion_sync.automation.changes import (
    COMPOSITE_QUERIES,
    MODSTAMP,
    ChangeCursor,
    CompositeError,
    Poll,
    PollAnswer,
    changed_days,
    composite_poll,
    deletes_due,
    list_window,
    next_cursor,
    window_floor,
)
from notion_sync.automation.failures import partitions_by_status
from notion_sync.automation.jobs import sync_job
from notion_sync.automation.lanes import lane_tags
from notion_sync.automation.modstamps import format_modstamp, modstamp_day
from notion_sync.automation.names import sync_job_name
from notion_sync.config import ObjectConfig, RealtimeConfig
from notion_sync.partitions import daily_partitions
from notion_sync.salesforce.pubsub import (
    LATEST,
    CdcUnavailable,
    ChangeEvent,
    ReplayExpired,
    Start,
    TopicResult,
)
from notion_sync.salesforce.resource import SalesforceResource

SENSOR_NAME = "realtime_changes"
CDC, POLLING = "cdc", "polling"
REPLAYS_TAG = "notion_sync/cdc_replays"  # first-last replay ids (hex) of the events behind a run
GAP_READ_CHUNK = 200  # record Ids per re-read query
clock = time.time  # tests replace it to skip waits


_NONE = TopicResult()


def topic(object_name: str) -> str:
    return f"/data/{object_name}ChangeEvent"


@dataclass
class ObjectState:
    """One object's path and position."""

    path: str = CDC
    replay: str | None = None  # hex replay id of the last event processed; None: no position yet
    modstamp: str | None = None  # newest change known (commit time or SystemModstamp)
    poll: str | None = None  # ChangeCursor of the window query (polling, and cdc without a position)
    polled_at: float = 0.0
    reason: str = ""  # why the object is polled
    retry_cdc_at: float = 0.0


@dataclass(frozen=True)
class Launch:
    """A run to request: object, day, run key, and the replay ids (first-last) of its events."""

    object: str
    day: str
    key: str
    replays: str = ""

    def joined(self, later: Launch) -> Launch:
        """One run for both (the earlier one's key): it extracts the day when it starts."""
        first, last = self.replays.partition("-")[0], later.replays.partition("-")[2]
        replays = f"{first}-{last}" if first and last else self.replays or later.replays
        return Launch(self.object, self.day, self.key, replays)


@dataclass
class RealtimeCursor:
    objects: dict[str, ObjectState] = field(default_factory=dict)
    pending: list[Launch] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> RealtimeCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            objects={name: ObjectState(**state) for name, state in data["objects"].items()},
            pending=[Launch(**launch) for launch in data["pending"]],
        )

    def dump(self) -> str:
        data = {"objects": {n: asdict(s) for n, s in self.objects.items()}, "pending": self.pending}
        return json.dumps(data, sort_keys=True, default=asdict)


def _newer(current: str | None, stamp: str) -> str:
    return stamp if current is None or stamp > current else current


def _ms_stamp(ms: int) -> str:
    return format_modstamp(datetime.fromtimestamp(ms / 1000, UTC))


class Tick:
    """One evaluation: the cursor being updated, the launches found, and the tick log."""

    def __init__(
        self, objects: Sequence[ObjectConfig], realtime: RealtimeConfig, cursor: RealtimeCursor
    ) -> None:
        self.objects = {obj.name: obj for obj in objects}
        self.realtime = realtime
        self.cursor = cursor
        self.launches: list[Launch] = []
        self.log: dict[str, list[str]] = {name: [] for name in self.objects}
        self.now = clock()
        self.unauthenticated = False
        self.polled: set[str] = set()  # polled this tick, after the streams were opened
        for name in self.objects:
            state = cursor.objects.setdefault(
                name, ObjectState(path=CDC if realtime.change_events else POLLING)
            )
            if not realtime.change_events and state.path == CDC:
                self._to_polling(name, "realtime.change_events is off", retry=False)
            elif realtime.change_events and state.path == POLLING and state.retry_cdc_at <= self.now:
                state.path, state.replay, state.reason = CDC, None, ""

    def state(self, name: str) -> ObjectState:
        return self.cursor.objects[name]

    def _to_polling(self, name: str, reason: str, retry: bool = True) -> None:
        state = self.state(name)
        state.path, state.replay, state.reason = POLLING, None, reason
        state.retry_cdc_at = self.now + self.realtime.cdc_retry_minutes * 60 if retry else 0.0

    # ------------------------------------------------------------------------------- polling

    def due_polls(self) -> list[str]:
        """Objects polled this tick: those without a replay id (polling, or cdc still without a
        position) whose `interval_seconds` are up."""
        return [
            name
            for name in self.objects
            if self.state(name).replay is None
            and self.now - self.state(name).polled_at >= self.realtime.interval_seconds
        ]

    def poll(self, sf: Salesforce, names: list[str]) -> None:
        """Window queries (and getDeleted where due) of ``names``, five to a Composite call."""
        self.polled.update(names)
        for start in range(0, len(names), COMPOSITE_QUERIES):
            chunk = names[start : start + COMPOSITE_QUERIES]
            previous = {name: self._poll_cursor(name) for name in chunk}
            polls = {name: self._plan(name, previous[name]) for name in chunk}
            answers = composite_poll(sf, polls)
            for name in chunk:
                self._polled(name, previous[name], answers[name], len(chunk))

    def _plan(self, name: str, previous: ChangeCursor | None) -> Poll:
        """An object's poll: from its lookback floor (none on the first), getDeleted when due."""
        if previous is None:
            return Poll(floor=None)
        floor = window_floor(previous.newest, self.objects[name].lookback_seconds)
        return Poll(floor, deletes_due(previous, floor))

    def _poll_cursor(self, name: str) -> ChangeCursor | None:
        state = self.state(name)
        if state.poll:
            return ChangeCursor.parse(state.poll)
        return ChangeCursor(newest=state.modstamp, seen=None) if state.modstamp else None

    def _polled(
        self, name: str, previous: ChangeCursor | None, answer: PollAnswer | CompositeError, batch: int
    ) -> None:
        state = self.state(name)
        note = f"{batch} object(s) in one Composite call"
        if isinstance(answer, CompositeError):
            self.log[name].append(f"poll failed ({answer}); tried again next tick")
            return
        window, found = answer.window, answer.deletes
        deletes = found.records if found else []
        covered = (
            format_modstamp(found.covered) if found else (previous.deletes_covered if previous else None)
        )
        state.polled_at = self.now
        lookback = self.objects[name].lookback_seconds
        if previous is None:
            if window:
                cursor = next_cursor(None, window, lookback, None)
                state.poll, state.modstamp = cursor.dump(), cursor.newest
                self.log[name].append(f"polled ({note}): started at modstamp {cursor.newest}")
            else:
                self.log[name].append(f"polled ({note}): no records yet")
            return
        cursor = next_cursor(previous, window + deletes, lookback, covered)
        days, digest = changed_days(previous, window, deletes)
        state.poll, state.modstamp = cursor.dump(), _newer(state.modstamp, cursor.newest)
        self.launches += [Launch(name, day, f"changes:{name}:{day}:{cursor.newest}:{digest}") for day in days]
        self.log[name].append(f"polled ({note}): {len(days)} day(s) changed")

    # ----------------------------------------------------------------------------------- CDC

    def starts(self) -> dict[str, Start]:
        return {
            topic(name): Start.after(bytes.fromhex(self.state(name).replay))
            if self.state(name).replay
            else LATEST
            for name in self.objects
            if self.state(name).path == CDC
        }

    def received(self, name: str, result: TopicResult, rest: Callable[[], Salesforce]) -> None:
        """Apply one topic's result; ``rest`` gives the REST client (only gap events need it)."""
        state = self.state(name)
        error = result.error
        if isinstance(error, ReplayExpired) and not result.events:
            state.replay, state.poll, state.polled_at = None, None, 0.0
            self.log[name].append(
                f"replay id expired (72-hour retention): window query from modstamp {state.modstamp}, "
                "then change events from LATEST"
            )
            return
        if isinstance(error, CdcUnavailable):
            self._to_polling(name, str(error).split(" rpcId:")[0])
            if not result.events:
                return
        elif error is not None:
            self.log[name].append(f"Pub/Sub API error ({error}); read again next tick")
            self.unauthenticated |= error.code is not None and error.code.name == "UNAUTHENTICATED"
        events = result.events
        if not events:
            position = f"replay {state.replay}" if state.replay else "LATEST"
            self.log[name].append(f"cdc: no change events after {position}")
            return
        days: set[str] = set()
        for event in events:
            if event.is_gap:
                continue
            days.add(modstamp_day(_ms_stamp(event.commit_ms)).isoformat())
            modified = event.values.get("LastModifiedDate")
            if isinstance(modified, int):
                days.add(modstamp_day(_ms_stamp(modified)).isoformat())
        gaps = [event for event in events if event.is_gap]
        if gaps:
            days |= self._reread(rest(), name, gaps)
        first, last = events[0].replay_id.hex(), events[-1].replay_id.hex()
        self.launches += [
            Launch(name, day, f"cdc:{name}:{day}:{first}", f"{first}-{last}") for day in sorted(days)
        ]
        state.replay, state.poll = last, None
        state.modstamp = _newer(state.modstamp, _ms_stamp(max(event.commit_ms for event in events)))
        kinds = sorted({event.change_type for event in events})
        self.log[name].append(f"cdc: {len(events)} change event(s) {kinds}, {len(days)} day(s)")

    def _reread(self, sf: Salesforce, name: str, gaps: list[ChangeEvent]) -> set[str]:
        """Days of the records behind gap events, read from the REST API (queryAll: deletes too)."""
        days: set[str] = set()
        ids = sorted({record_id for event in gaps for record_id in event.record_ids})
        for start in range(0, len(ids), GAP_READ_CHUNK):
            listed = ", ".join(f"'{record_id}'" for record_id in ids[start : start + GAP_READ_CHUNK])
            query = f"SELECT Id, {MODSTAMP} FROM {name} WHERE Id IN ({listed})"
            records = sf.query_all(query, include_deleted=True)["records"]
            days |= {modstamp_day(record[MODSTAMP]).isoformat() for record in records}
        for event in gaps:
            if event.change_type == "GAP_OVERFLOW":
                since = datetime.fromtimestamp(event.commit_ms / 1000, UTC)
                floor = since - timedelta(seconds=self.objects[name].lookback_seconds)
                window = list_window(sf, name, floor.replace(microsecond=0))
                days |= {modstamp_day(stamp).isoformat() for _, stamp in window}
                days.add(since.date().isoformat())
        self.log[name].append(f"{len(gaps)} gap event(s): {len(ids)} record(s) and overflow windows re-read")
        return days

    # ------------------------------------------------------------------------------ launches

    def run_requests(self, context: SensorEvaluationContext) -> list[RunRequest]:
        """Pending launches first, then this tick's; one per (object, day); busy partitions wait."""
        chosen: dict[tuple[str, str], Launch] = {}
        for launch in [*self.cursor.pending, *self.launches]:
            obj = self.objects.get(launch.object)
            if obj is not None and daily_partitions(obj).has_partition_key(launch.day):
                earlier = chosen.get((launch.object, launch.day))
                chosen[(launch.object, launch.day)] = earlier.joined(launch) if earlier else launch
        requests, waiting = [], []
        for name, launches in _by_object(chosen.values()):
            days = [launch.day for launch in launches]
            busy = partitions_by_status(context.instance, self.objects[name], days).get(
                AssetPartitionStatus.IN_PROGRESS, {}
            )
            for launch in launches:
                if launch.day in busy:
                    waiting.append(launch)
                    self.log[name].append(f"{launch.day} is being materialized: launched after that run")
                    continue
                tags = lane_tags("realtime") | ({REPLAYS_TAG: launch.replays} if launch.replays else {})
                requests.append(
                    RunRequest(
                        run_key=launch.key, job_name=sync_job_name(name), partition_key=launch.day, tags=tags
                    )
                )
        self.cursor.pending = waiting
        return requests

    def summary(self) -> str:
        """Per object: its path (and why it is polled) and what this tick did."""
        parts = []
        for name, lines in self.log.items():
            state = self.state(name)
            path = f"{state.path}: {state.reason}" if state.reason else state.path
            parts.append(f"{name} [{path}] {'; '.join(lines)}")
        return " · ".join(parts)


def _by_object(launches: Iterable[Launch]) -> list[tuple[str, list[Launch]]]:
    grouped: dict[str, list[Launch]] = {}
    for launch in launches:
        grouped.setdefault(launch.object, []).append(launch)
    return list(grouped.items())


def evaluate(
    context: SensorEvaluationContext,
    salesforce: SalesforceResource,
    objects: Sequence[ObjectConfig],
    realtime: RealtimeConfig,
) -> SensorResult:
    """One tick of `realtime_changes` (see the module docstring)."""
    tick = Tick(objects, realtime, RealtimeCursor.parse(context.cursor))
    clients: list[Salesforce] = []

    def rest() -> Salesforce:  # made on first use: a tick of change events alone makes no REST call
        if not clients:
            clients.append(salesforce.get_client().sf)
        return clients[0]

    starts = tick.starts()
    with salesforce.pubsub_client() if starts else nullcontext() as pubsub:
        listening = pubsub.open(starts, max_events=realtime.events_per_tick) if pubsub else None
        due = tick.due_polls()
        if due:
            tick.poll(rest(), due)
        results = listening.collect(wait_s=realtime.listen_seconds) if listening else {}
        # An object getting its first events closes the gap between its last poll and the LATEST
        # start of this tick's stream with one more poll (only when not polled this tick already).
        positioned = [
            n for n in tick.objects if tick.state(n).replay is None and results.get(topic(n), _NONE).events
        ]
        if closing := [name for name in positioned if name not in tick.polled]:
            tick.poll(rest(), closing)
        for name in tick.objects:
            if topic(name) in results:
                tick.received(name, results[topic(name)], rest)
        if tick.unauthenticated and pubsub:
            salesforce.renew_session(pubsub.auth.access_token)
    requests = tick.run_requests(context)
    summary = tick.summary()
    context.log.info(f"{SENSOR_NAME}: {summary}")
    return SensorResult(
        run_requests=requests, cursor=tick.cursor.dump(), skip_reason=None if requests else summary
    )


def describe_paths(cursor: str | None) -> list[str]:
    """One line per object of a stored `realtime_changes` cursor: its path, and why it is polled."""
    lines = []
    for name, state in sorted(RealtimeCursor.parse(cursor).objects.items()):
        if state.path == CDC:
            where = (
                f"replay id {state.replay}"
                if state.replay
                else "no position yet: polled until its first event"
            )
            lines.append(f"{name}: change events ({topic(name)}), {where}")
        else:
            lines.append(f"{name}: polling (Composite API, five objects a call): {state.reason}")
    return lines


def stored_cursor(instance: DagsterInstance) -> str | None:
    """The cursor the daemon stored for `realtime_changes`, if it ticked."""
    for instigator in instance.all_instigator_state():
        data = instigator.instigator_data
        if instigator.name == SENSOR_NAME and data is not None and getattr(data, "cursor", None):
            return data.cursor
    return None


def build_realtime_sensor(objects: Sequence[ObjectConfig], realtime: RealtimeConfig) -> SensorDefinition:
    @sensor(
        name=SENSOR_NAME,
        jobs=[sync_job(obj) for obj in objects],
        # The daemon starts a sensor's tick every 5 s at most; a tick listens up to listen_seconds.
        minimum_interval_seconds=1 if realtime.change_events else realtime.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launches the partitions of realtime objects changed in Salesforce, from Change Data "
        "Capture events (Pub/Sub API) or, for objects without them, from polling five objects to a "
        "Composite API call; in the high-priority realtime lane.",
    )
    def realtime_changes(context: SensorEvaluationContext, salesforce: SalesforceResource) -> SensorResult:
        return evaluate(context, salesforce, objects, realtime)

    return realtime_changes
