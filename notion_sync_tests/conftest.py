"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from notion_sync.sandbox.notion_server import NotionSandbox


@pytest.fixture
def notion_sandbox() -> Iterator[NotionSandbox]:
    """A fresh sandbox Notion server per test (cheap): speed 50, 3 rps, burst 10, no latency."""
    with NotionSandbox(speed=50, rps=3, burst=10, latency_ms=0) as sandbox:
        yield sandbox
