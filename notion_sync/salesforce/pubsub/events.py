"""What the Pub/Sub API client hands out (starts, events, errors, the session's headers), without
gRPC, protobuf or Avro: the realtime sensor and the Salesforce resource import these at definitions
load, and every run process loads the definitions; :mod:`.client` (about 60 MB once imported) is
loaded only where a channel is opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simple_salesforce import Salesforce

from notion_sync.salesforce.ids import org_id_of_session

if TYPE_CHECKING:
    import grpc

    from notion_sync.salesforce.pubsub import pubsub_api_pb2 as pb

DEFAULT_ENDPOINT = "api.pubsub.salesforce.com:7443"
# ReplayPreset of pubsub_api.proto
LATEST_PRESET, EARLIEST_PRESET, CUSTOM_PRESET = 0, 1, 2


class PubSubError(RuntimeError):
    """A Pub/Sub API call failed; ``code`` is the gRPC status, ``error_code`` Salesforce's trailer."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, error_code: str = "") -> None:
        super().__init__(message)
        self.code, self.error_code = code, error_code


class ReplayExpired(PubSubError):
    """The replay id is no longer retained (72 hours) or was never issued."""


class CdcUnavailable(PubSubError):
    """No change events for this object: not selected for CDC, or the delivery allocation is spent."""


@dataclass(frozen=True)
class PubSubAuth:
    """The session headers every call carries."""

    access_token: str
    instance_url: str
    tenant_id: str

    @classmethod
    def of(cls, sf: Salesforce) -> PubSubAuth:
        """The session of a logged-in simple-salesforce client."""
        return cls(sf.session_id, f"https://{sf.sf_instance}", org_id_of_session(sf.session_id))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            ("accesstoken", self.access_token),
            ("instanceurl", self.instance_url),
            ("tenantid", self.tenant_id),
        )


@dataclass(frozen=True)
class Start:
    """Where a subscription starts: LATEST (the tip), EARLIEST (all retained), or after ``replay_id``."""

    preset: int = LATEST_PRESET
    replay_id: bytes = b""

    @classmethod
    def after(cls, replay_id: bytes) -> Start:
        return cls(CUSTOM_PRESET, replay_id)

    def request(self, topic: str, num_requested: int) -> pb.FetchRequest:
        from notion_sync.salesforce.pubsub import pubsub_api_pb2 as pb

        return pb.FetchRequest(
            topic_name=topic, replay_preset=self.preset, replay_id=self.replay_id, num_requested=num_requested
        )


LATEST, EARLIEST = Start(LATEST_PRESET), Start(EARLIEST_PRESET)


@dataclass(frozen=True)
class ChangeEvent:
    """One decoded change event: its ``ChangeEventHeader`` and the field values it carries."""

    replay_id: bytes
    entity: str
    change_type: str
    record_ids: tuple[str, ...]
    commit_ms: int
    transaction_key: str
    changed_fields: tuple[str, ...]
    values: Mapping[str, Any]

    @property
    def is_gap(self) -> bool:
        """GAP_* and GAP_OVERFLOW: the payload cannot be trusted; re-read from the REST API."""
        return self.change_type.startswith("GAP_")


@dataclass
class TopicResult:
    """What one topic delivered within a listen, and the error that ended its stream, if any."""

    events: list[ChangeEvent] = field(default_factory=list)
    error: PubSubError | None = None
