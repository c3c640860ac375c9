"""A Salesforce Pub/Sub API client for Change Data Capture: :mod:`.client`.

``pubsub_api.proto`` is our own description of the API's messages (documented field numbers);
``pubsub_api_pb2*.py`` are generated from it by grpcio-tools and committed (``make proto`` regenerates
them; ``test_pubsub_generated_modules_match_the_proto`` fails when they are stale).

The package exports the plain types of :mod:`.events` at once and :class:`PubSubClient` on first
use: gRPC and the generated modules cost about 60 MB of RSS, which run processes that never open a
channel should not pay.
"""

from typing import Any

from notion_sync.salesforce.pubsub.events import (
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
    "EARLIEST",
    "LATEST",
    "CdcUnavailable",
    "ChangeEvent",
    "PubSubAuth",
    "PubSubClient",
    "PubSubError",
    "ReplayExpired",
    "Start",
    "TopicResult",
]


def __getattr__(name: str) -> Any:
    if name == "PubSubClient":
        from notion_sync.salesforce.pubsub.client import PubSubClient

        return PubSubClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
