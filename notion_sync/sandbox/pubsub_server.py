"""The sandbox's Pub/Sub API: Change Data Capture events over gRPC (TLS), as Salesforce serves them.

Every create, update, delete and undelete made through the admin API of an object selected for
CDC (``enabled``; Account and Contact by default) becomes a change event on ``/data/<Object>ChangeEvent``
and ``/data/ChangeEvents``: an Avro payload (:mod:`.cdc_schema`) with its schema id, and a replay id
(8 bytes; increasing, not contiguous). Behaviour modelled on the real service:

- auth: every call carries ``accesstoken``, ``instanceurl`` and ``tenantid`` metadata; anything else
  is UNAUTHENTICATED with the ``error-code`` trailer ``sfdc.platform.eventbus.grpc.service.auth.error``;
- ``Subscribe`` flow control: never more events than requested (``num_requested`` above 100 is
  INVALID_ARGUMENT), ``pending_num_requested`` in each response, and an empty keepalive response with
  the latest replay id after ``keepalive_seconds`` (270) without events;
- retention: events older than 72 hours of the data's clock are purged; a CUSTOM replay id that is
  purged (or was never issued) is INVALID_ARGUMENT ``...subscription.fetch.replayid.corrupted``;
- delivery allocation (``allocation``: events left for the 24 h, None = unlimited): once spent, the
  stream ends RESOURCE_EXHAUSTED ``...subscription.limit.exceeded``, "You have exceeded the event
  delivery limit for your org.";
- an object not selected for CDC: ``GetTopic``/``Subscribe`` of its channel are NOT_FOUND (our reading
  of the documentation; the exact error code is not documented);
- gap events (``GAP_CREATE`` ... ``GAP_UNDELETE``: header only) and ``GAP_OVERFLOW`` on demand.
"""

from __future__ import annotations

import bisect
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from notion_sync.salesforce.pubsub import pubsub_api_pb2 as pb
from notion_sync.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from notion_sync.sandbox.cdc_schema import Commit, EventSchema, change_payload, encode, event_schema, header
from notion_sync.sandbox.sf_data import Change, SalesforceData

RETENTION_MS = 72 * 3_600_000
MAX_NUM_REQUESTED = 100
KEEPALIVE_SECONDS = 270.0
ALL_CHANGES = "/data/ChangeEvents"
ERROR_CODE = "error-code"
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
LIMIT_EXCEEDED = "sfdc.platform.eventbus.grpc.subscription.limit.exceeded"
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.subscription.topic.not.found"


def encode_replay(replay: int) -> bytes:
    return replay.to_bytes(8, "big")


def decode_replay(raw: bytes) -> int | None:
    return int.from_bytes(raw, "big") if len(raw) == 8 else None


@dataclass(frozen=True)
class StoredEvent:
    replay: int
    entity: str
    time_ms: int
    event: pb.ProducerEvent


class ReplayInvalid(Exception):
    """A CUSTOM replay id that is not (or no longer) in the stream."""


class EventBus:
    """The org's retained change events, in commit order."""

    def __init__(self, data: SalesforceData, enabled: Iterable[str] = ("Account", "Contact")) -> None:
        self.data = data
        self.enabled = set(enabled)
        self.schemas = {name: event_schema(sobject) for name, sobject in data.sobjects.items()}
        self.by_id: dict[str, EventSchema] = {s.schema_id: s for s in self.schemas.values()}
        self.allocation: int | None = None
        self.delivered = 0
        self.keepalive_seconds = KEEPALIVE_SECONDS
        self._events: list[StoredEvent] = []
        self._replays: list[int] = []
        self._latest = 4_096
        self._purged_through = self._latest
        self._commits = 0
        self.changed = threading.Condition()
        data.listeners.append(self._on_change)

    # ------------------------------------------------------------------------------ publishing

    def _next_commit(self) -> Commit:
        self._commits += 1
        return Commit(number=10_000_000 + self._commits)

    def _on_change(self, change: Change) -> None:
        if change.obj in self.enabled:
            schema = self.schemas[change.obj]
            with self.changed:
                self._append(schema, change_payload(schema, change, self._next_commit()), change.commit_ms)

    def publish_gap(self, obj: str, record_ids: list[str], change_type: str = "GAP_UPDATE") -> None:
        """A gap event: Salesforce could not build the change event (header only, no field values)."""
        if not change_type.startswith("GAP_") or change_type == "GAP_OVERFLOW":
            raise ValueError(f"not a gap change type: {change_type}")
        self._publish_header(obj, change_type, record_ids)

    def publish_overflow(self, obj: str) -> None:
        """An overflow event: one transaction changed more than 100,000 records (no record ids)."""
        self._publish_header(obj, "GAP_OVERFLOW", [])

    def _publish_header(self, obj: str, change_type: str, record_ids: list[str]) -> None:
        schema = self.schemas[obj]
        now = int(self.data.clock() * 1000)
        with self.changed:
            payload = encode(schema, header(schema, change_type, record_ids, self._next_commit(), now), {})
            self._append(schema, payload, now)

    def _append(self, schema: EventSchema, payload: bytes, time_ms: int) -> None:
        with self.changed:
            self._latest += 1 + self._commits % 3  # replay ids increase but are not contiguous
            event = pb.ProducerEvent(id=str(uuid.uuid4()), schema_id=schema.schema_id, payload=payload)
            self._events.append(StoredEvent(self._latest, schema.obj, time_ms, event))
            self._replays.append(self._latest)
            self._purge()
            self.changed.notify_all()

    # ------------------------------------------------------------------------------- reading

    def _purge(self) -> None:
        """Drop events past the retention (call with ``changed`` held)."""
        horizon = int(self.data.clock() * 1000) - RETENTION_MS
        keep = next((i for i, e in enumerate(self._events) if e.time_ms >= horizon), len(self._events))
        if keep:
            self._purged_through = self._events[keep - 1].replay
            del self._events[:keep]
            del self._replays[:keep]

    @property
    def latest(self) -> int:
        return self._latest

    def start(self, preset: int, replay_id: bytes) -> int:
        """The replay id after which a new subscription delivers."""
        with self.changed:
            self._purge()
            if preset == pb.LATEST:
                return self._latest
            if preset == pb.EARLIEST:
                return self._purged_through
            replay = decode_replay(replay_id)
            index = bisect.bisect_left(self._replays, replay) if replay is not None else 0
            if replay is None or index == len(self._replays) or self._replays[index] != replay:
                raise ReplayInvalid(replay)
            return replay

    def after(self, entities: set[str], replay: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` retained events of ``entities`` after ``replay`` (call with ``changed`` held)."""
        out: list[StoredEvent] = []
        for event in self._events[bisect.bisect_right(self._replays, replay) :]:
            if len(out) >= limit:
                break
            if event.entity in entities:
                out.append(event)
        return out

    def entities(self, topic: str) -> set[str] | None:
        """The objects a channel carries; None when it is not a channel of a selected object."""
        if topic == ALL_CHANGES:
            return set(self.enabled)
        name = topic.removeprefix("/data/").removesuffix("ChangeEvent")
        if topic.startswith("/data/") and topic.endswith("ChangeEvent") and name in self.enabled:
            return {name}
        return None


class PubSubService(pb_grpc.PubSubServicer):
    """``GetTopic``, ``GetSchema`` and ``Subscribe`` over :class:`EventBus`."""

    def __init__(self, bus: EventBus, tenant_id: str, authorize: Callable[[dict[str, str]], bool]) -> None:
        self.bus = bus
        self.tenant_id = tenant_id
        self.authorize = authorize  # the call's metadata (accesstoken, instanceurl, tenantid) -> allowed?

    def _abort(self, context: grpc.ServicerContext, status: grpc.StatusCode, code: str, message: str) -> None:
        rpc_id = str(uuid.uuid4())
        context.set_trailing_metadata(((ERROR_CODE, code), ("rpc-id", rpc_id)))
        context.abort(status, f"{message} rpcId: {rpc_id}")

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        if not self.authorize(dict(context.invocation_metadata())):
            self._abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                AUTH_ERROR,
                "Authentication exception: check the accesstoken, instanceurl and tenantid headers.",
            )

    def _entities(self, topic: str, context: grpc.ServicerContext) -> set[str]:
        entities = self.bus.entities(topic)
        if entities is None:
            self._abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                TOPIC_NOT_FOUND,
                f"Topic {topic} not found: select the object for Change Data Capture.",
            )
        return entities  # type: ignore[return-value]

    def GetTopic(self, request: pb.TopicRequest, context: grpc.ServicerContext) -> pb.TopicInfo:
        self._authenticate(context)
        entities = self._entities(request.topic_name, context)
        schema_id = self.bus.schemas[next(iter(entities))].schema_id if len(entities) == 1 else ""
        return pb.TopicInfo(
            topic_name=request.topic_name,
            tenant_guid=self.tenant_id,
            can_publish=False,
            can_subscribe=True,
            schema_id=schema_id,
            rpc_id=str(uuid.uuid4()),
        )

    def GetSchema(self, request: pb.SchemaRequest, context: grpc.ServicerContext) -> pb.SchemaInfo:
        self._authenticate(context)
        schema = self.bus.by_id.get(request.schema_id)
        if schema is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Schema {request.schema_id} not found")
        return pb.SchemaInfo(
            schema_json=schema.schema_json, schema_id=schema.schema_id, rpc_id=str(uuid.uuid4())
        )

    def _check_requested(self, request: pb.FetchRequest, context: grpc.ServicerContext) -> None:
        if not 0 <= request.num_requested <= MAX_NUM_REQUESTED:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"num_requested must be between 0 and {MAX_NUM_REQUESTED}, got {request.num_requested}",
            )

    def Subscribe(
        self, request_iterator: Iterator[pb.FetchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.FetchResponse]:
        self._authenticate(context)
        first = next(request_iterator, None)
        if first is None:
            return
        entities = self._entities(first.topic_name, context)
        self._check_requested(first, context)
        bus = self.bus
        try:
            position = bus.start(first.replay_preset, first.replay_id)
        except ReplayInvalid:
            self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                REPLAY_CORRUPTED,
                "The Replay ID validation failed. Ensure that the replay_id field value in FetchRequest is "
                "valid and refers to an event that is within the retention window.",
            )
        pending = [first.num_requested]
        errors: list[str] = []

        def read_requests() -> None:
            try:
                for request in request_iterator:
                    if request.topic_name and request.topic_name != first.topic_name:
                        errors.append("topic_name differs from the first FetchRequest's")
                    elif not 0 <= request.num_requested <= MAX_NUM_REQUESTED:
                        errors.append(f"num_requested must be at most {MAX_NUM_REQUESTED}")
                    with bus.changed:
                        pending[0] += request.num_requested
                        bus.changed.notify_all()
            except Exception:  # the client went away
                pass
            with bus.changed:
                bus.changed.notify_all()

        threading.Thread(target=read_requests, name="pubsub-requests", daemon=True).start()
        last_sent = time.monotonic()
        while context.is_active():
            with bus.changed:
                events = (
                    bus.after(entities, position, min(pending[0], MAX_NUM_REQUESTED)) if pending[0] else []
                )
                if not events and not errors:
                    bus.changed.wait(timeout=0.25)
                    events = (
                        bus.after(entities, position, min(pending[0], MAX_NUM_REQUESTED))
                        if pending[0]
                        else []
                    )
                events = self._within_allocation(events, context)
                pending[0] -= len(events)
                left = pending[0]
            if errors:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, errors[0])
            if events:
                position = events[-1].replay
                last_sent = time.monotonic()
                yield pb.FetchResponse(
                    events=[
                        pb.ConsumerEvent(event=e.event, replay_id=encode_replay(e.replay)) for e in events
                    ],
                    latest_replay_id=encode_replay(position),
                    rpc_id=str(uuid.uuid4()),
                    pending_num_requested=left,
                )
            elif time.monotonic() - last_sent >= bus.keepalive_seconds:
                last_sent = time.monotonic()
                yield pb.FetchResponse(
                    latest_replay_id=encode_replay(position),
                    rpc_id=str(uuid.uuid4()),
                    pending_num_requested=left,
                )

    def _within_allocation(
        self, events: list[StoredEvent], context: grpc.ServicerContext
    ) -> list[StoredEvent]:
        """Count deliveries against the allocation; end the stream once it is spent (``changed`` held)."""
        bus = self.bus
        if events and bus.allocation is not None:
            left = bus.allocation - bus.delivered
            if left <= 0:
                self._abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    LIMIT_EXCEEDED,
                    "You have exceeded the event delivery limit for your org.",
                )
            events = events[:left]
        bus.delivered += len(events)
        return events


class PubSubServer:
    """The gRPC server on ``127.0.0.1:<port>`` (0: any free port), TLS with the sandbox's certificate."""

    def __init__(self, service: PubSubService, credentials: grpc.ServerCredentials, port: int = 0) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="pubsub"))
        pb_grpc.add_PubSubServicer_to_server(service, self._server)
        self.port = self._server.add_secure_port(f"127.0.0.1:{port}", credentials)

    def start(self) -> PubSubServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0).wait()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


def describe(bus: EventBus) -> dict[str, Any]:
    """The bus's state for ``GET /_sandbox/cdc``."""
    with bus.changed:
        return {
            "enabled": sorted(bus.enabled),
            "retained": len(bus._events),
            "latest_replay": bus.latest,
            "allocation": bus.allocation,
            "delivered": bus.delivered,
        }
