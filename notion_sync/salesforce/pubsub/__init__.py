"""A Salesforce Pub/Sub API client for Change Data Capture: :mod:`.client`.

``pubsub_api.proto`` is our own description of the API's messages (documented field numbers);
``pubsub_api_pb2*.py`` are generated from it by grpcio-tools and committed (``make proto`` regenerates
them; ``test_pubsub_generated_modules_match_the_proto`` fails when they are stale).
"""

from notion_sync.salesforce.pubsub.client import (
    EARLIEST,
    LATEST,
    CdcUnavailable,
    ChangeEvent,
    PubSubAuth,
    PubSubClient,
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
