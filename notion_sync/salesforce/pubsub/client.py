"""Subscribe to Change Data Capture channels through the Pub/Sub API (gRPC over TLS).

:meth:`PubSubClient.listen` opens one ``Subscribe`` stream per topic on one channel, each from its
own start (LATEST, or CUSTOM after a stored replay id), asks for at most 100 events a
``FetchRequest`` and more only once those arrived (flow control), and returns what came within
``wait_s`` (returning ``settle_s`` after the last batch). Nothing is acknowledged to the server: the
caller stores the replay id of the last event it processed and starts there next time, so events
read but not processed are simply delivered again.

Payloads are Avro (fastavro); schemas are fetched with ``GetSchema`` once per schema id per process.
Errors come back per topic: :class:`ReplayExpired` (the stored replay id is outside the 72-hour
retention), :class:`CdcUnavailable` (the object is not selected for CDC, or the org's delivery
allocation is spent), :class:`PubSubError` (anything else, e.g. the service unavailable).
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fastavro
import grpc

from notion_sync.salesforce.pubsub import pubsub_api_pb2 as pb
from notion_sync.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from notion_sync.salesforce.pubsub.events import (
    DEFAULT_ENDPOINT,
    EARLIEST,
    LATEST,
    CdcUnavailable,
    ChangeEvent,
    PubSubAuth,
    PubSubError,
    ReplayExpired,
    Start,
    TopicResult,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "EARLIEST",
    "LATEST",
    "CdcUnavailable",
    "ChangeEvent",
    "Listening",
    "PubSubAuth",
    "PubSubClient",
    "PubSubError",
    "ReplayExpired",
    "Start",
    "TopicResult",
    "bitmap_fields",
]
MAX_BATCH = 100  # the API's largest num_requested
REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
LIMIT_EXCEEDED = "sfdc.platform.eventbus.grpc.subscription.limit.exceeded"
_SCHEMAS: dict[str, Any] = {}  # schema id -> parsed Avro schema, for the whole process


def _error(error: grpc.RpcError, topic: str) -> PubSubError:
    code = error.code() if hasattr(error, "code") else None
    trailers = dict(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else {}
    error_code = str(trailers.get("error-code", ""))
    details = error.details() if hasattr(error, "details") else str(error)
    message = f"{topic}: {code.name if code else 'error'} {error_code} {details}".replace("  ", " ")
    if error_code == REPLAY_CORRUPTED:
        return ReplayExpired(message, code, error_code)
    if error_code == LIMIT_EXCEEDED or code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
        return CdcUnavailable(message, code, error_code)
    return PubSubError(message, code, error_code)


def bitmap_fields(bitmaps: list[str], schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Field names of ``changedFields``/``nulledFields``: ``0x..`` has bit i for top-level field i,
    ``i-0x..`` the bits of compound field i's own fields (reported as ``Parent.Child``)."""
    fields = schema["fields"]
    names: list[str] = []
    for bitmap in bitmaps:
        parent, _, bits = bitmap.rpartition("-")
        number = int(bits, 16)
        if parent:
            inner = fields[int(parent)]["type"][1]["fields"]
            prefix = fields[int(parent)]["name"] + "."
            names += [prefix + f["name"] for i, f in enumerate(inner) if number >> i & 1]
        else:
            names += [f["name"] for i, f in enumerate(fields) if number >> i & 1]
    return tuple(names)


class _Stream:
    """One ``Subscribe`` call: requests go in through a queue, responses come out in a thread."""

    def __init__(
        self, stub: pb_grpc.PubSubStub, topic: str, start: Start, first: int, metadata: Any, out: queue.Queue
    ) -> None:
        self.topic = topic
        self.requests: queue.Queue[pb.FetchRequest | None] = queue.Queue()
        self.requests.put(start.request(topic, first))
        self.call = stub.Subscribe(iter(self.requests.get, None), metadata=metadata)
        self.thread = threading.Thread(target=self._read, args=(out,), name=f"pubsub-{topic}", daemon=True)
        self.thread.start()

    def _read(self, out: queue.Queue) -> None:
        try:
            for response in self.call:
                out.put((self.topic, response))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                out.put((self.topic, _error(error, self.topic)))

    def ask(self, count: int) -> None:
        self.requests.put(pb.FetchRequest(num_requested=count))

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()
        self.thread.join(timeout=2)


class PubSubClient:
    """A channel to the Pub/Sub API with the session's headers; close it (or use ``with``)."""

    def __init__(self, endpoint: str, auth: PubSubAuth, ca_bundle: str | None = None) -> None:
        roots = Path(ca_bundle).read_bytes() if ca_bundle else None
        self.channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates=roots))
        self.stub = pb_grpc.PubSubStub(self.channel)
        self.auth = auth
        self.metadata = auth.metadata()

    def __enter__(self) -> PubSubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def get_topic(self, topic: str) -> pb.TopicInfo:
        try:
            return self.stub.GetTopic(pb.TopicRequest(topic_name=topic), metadata=self.metadata, timeout=30)
        except grpc.RpcError as error:
            raise _error(error, topic) from None

    def schema(self, schema_id: str) -> Any:
        """The parsed Avro schema of an id, from the process cache or ``GetSchema``."""
        parsed = _SCHEMAS.get(schema_id)
        if parsed is None:
            try:
                info = self.stub.GetSchema(
                    pb.SchemaRequest(schema_id=schema_id), metadata=self.metadata, timeout=30
                )
            except grpc.RpcError as error:
                raise _error(error, f"schema {schema_id}") from None
            parsed = _SCHEMAS[schema_id] = fastavro.parse_schema(json.loads(info.schema_json))
        return parsed

    def decode(self, consumer: pb.ConsumerEvent) -> ChangeEvent:
        schema = self.schema(consumer.event.schema_id)
        record = fastavro.schemaless_reader(io.BytesIO(consumer.event.payload), schema)
        head = record.pop("ChangeEventHeader")
        return ChangeEvent(
            replay_id=consumer.replay_id,
            entity=head["entityName"],
            change_type=head["changeType"],
            record_ids=tuple(head["recordIds"]),
            commit_ms=head["commitTimestamp"],
            transaction_key=head["transactionKey"],
            changed_fields=bitmap_fields(head["changedFields"], schema),
            values={name: value for name, value in record.items() if value is not None},
        )

    def listen(
        self, starts: Mapping[str, Start], *, wait_s: float, settle_s: float = 0.3, max_events: int = 1_000
    ) -> dict[str, TopicResult]:
        """Events of each topic after its start: :meth:`open` then :meth:`Listening.collect`."""
        return self.open(starts, max_events=max_events).collect(wait_s=wait_s, settle_s=settle_s)

    def open(self, starts: Mapping[str, Start], *, max_events: int = 1_000) -> Listening:
        """Start one subscription per topic now (a LATEST start is fixed at this moment)."""
        return Listening(self, starts, max_events)


class Listening:
    """Open subscriptions, collected once: at most ``max_events`` per topic."""

    def __init__(self, client: PubSubClient, starts: Mapping[str, Start], max_events: int) -> None:
        self.client = client
        self.max_events = max_events
        self.out: queue.Queue[tuple[str, pb.FetchResponse | PubSubError]] = queue.Queue()
        first = min(MAX_BATCH, max_events)
        self.streams = {
            topic: _Stream(client.stub, topic, start, first, client.metadata, self.out)
            for topic, start in starts.items()
        }

    def collect(self, *, wait_s: float, settle_s: float = 0.3) -> dict[str, TopicResult]:
        """What came within ``wait_s`` seconds, returning ``settle_s`` after the last batch when
        something came (or at once when every stream failed); then the streams are closed."""
        results = {topic: TopicResult() for topic in self.streams}
        try:
            for topic, item in _drain(self.out, time.monotonic() + wait_s, settle_s):
                result = results[topic]
                if isinstance(item, PubSubError):
                    result.error = item
                    if all(r.error for r in results.values()):
                        break
                    continue
                result.events += [self.client.decode(consumer) for consumer in item.events]
                wanted = self.max_events - len(result.events)
                if item.events and item.pending_num_requested == 0 and wanted > 0:
                    self.streams[topic].ask(min(MAX_BATCH, wanted))
        finally:
            for stream in self.streams.values():
                stream.close()
        return results


def _drain(out: queue.Queue, deadline: float, settle_s: float) -> Iterator[tuple[str, Any]]:
    """Items from ``out`` until ``deadline``, or until ``settle_s`` passed without a batch of events."""
    until = deadline
    while True:
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        try:
            topic, item = out.get(timeout=remaining)
        except queue.Empty:
            return
        yield topic, item
        if isinstance(item, pb.FetchResponse) and item.events:
            until = min(deadline, time.monotonic() + settle_s)
