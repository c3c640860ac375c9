"""Run tags shared by the jobs and sensors: the lane a run belongs to and its queue priority.

The run queue (dagster.yaml) dequeues higher `dagster/priority` first and caps the ``backfill``
lane, so a change picked up by the realtime lane never waits behind a large backfill.
"""

from __future__ import annotations

from typing import Literal

Lane = Literal["realtime", "scheduled", "backfill"]

LANE_TAG = "notion_sync/lane"
PRIORITY_TAG = "dagster/priority"
# Set by an asset (or by whoever launches a run) whose failure came from rate limiting.
RATE_LIMITED_TAG = "notion_sync/rate_limited"
RETRY_ATTEMPT_TAG = "notion_sync/retry_attempt"
RETRY_OF_TAG = "notion_sync/retry_of"

LANE_PRIORITY: dict[str, int] = {"realtime": 10, "scheduled": 0, "backfill": -1}


def lane_tags(lane: Lane) -> dict[str, str]:
    return {LANE_TAG: lane, PRIORITY_TAG: str(LANE_PRIORITY[lane])}
