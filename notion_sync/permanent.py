"""Failures no retry can fix: a setting, a credential or a missing prerequisite that only a person can
correct.

:class:`PermanentFailure` is the one way the assets raise them. It bypasses Dagster's retry policies
(``allow_retries=False``) and carries the metadata ``notion_sync/permanent``, which Dagster stores in
the step's STEP_FAILURE event: the retry sensor reads it there and alerts at once instead of
re-launching the partition (each re-launch would only fail the same way).
"""

from __future__ import annotations

from typing import Any

from dagster import Failure

PERMANENT_FAILURE_KEY = "notion_sync/permanent"


class PermanentFailure(Failure):
    """A Dagster `Failure` that is not retried, in the run or by the retry sensor."""

    def __init__(self, description: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(
            description=description,
            metadata={PERMANENT_FAILURE_KEY: True, **(metadata or {})},
            allow_retries=False,
        )
