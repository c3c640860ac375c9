"""End to end through the real Dagster UI server: a partition backfill of two objects launched over
GraphQL, executed by the daemon's runs against both sandboxes, checked in the Notion sandbox.

The backfill's runs use the in-process executor (run config, as the launchpad allows): one process
per run instead of one per step keeps the test well under two minutes on two cores. The browser test
runs the default multiprocess executor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notion_sync_tests.e2e_helpers import Stack, running_stack

PARTITIONS = ["2026-11-19", "2026-11-20"]  # inside the sandbox data's 30 days (before 2026-11-21)
OBJECTS = ["Account", "Contact"]
BACKFILL_TIMEOUT_S = 150


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


@pytest.mark.timeout(300)
def test_backfill_two_objects_from_graphql(stack: Stack) -> None:
    started = time.monotonic()
    assets = [[system, name] for name in OBJECTS for system in ("salesforce", "notion")]
    backfill_id = stack.ui.launch_backfill(assets, PARTITIONS)

    backfill = stack.ui.wait_for_backfill(backfill_id, BACKFILL_TIMEOUT_S)
    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, stack.ui.log_tail())
    assert backfill["runs"] and {run["status"] for run in backfill["runs"]} == {"SUCCESS"}

    for name in OBJECTS:
        staged = stack.staged_records(name, PARTITIONS)
        rejected = stack.rejected_records(name)
        assert staged > 0
        assert set(rejected) <= {"validation_error"}, rejected  # only the sandbox's invalid data
        pages = stack.notion_pages(name)
        assert len(pages) == staged - sum(rejected.values()), name
    assert stack.notion.stats()["duplicates_total"] == 0
    print(
        f"backfill of {len(assets)} assets x {len(PARTITIONS)} partitions: {time.monotonic() - started:.0f} s"
    )
