"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox


@pytest.fixture
def notion_sandbox() -> Iterator[NotionSandbox]:
    """A fresh sandbox Notion server per test (cheap): speed 50, 3 rps, burst 10, no latency."""
    with NotionSandbox(speed=50, rps=3, burst=10, latency_ms=0) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def salesforce_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalesforceSandbox]:
    """One sandbox Salesforce (HTTPS, 300 Accounts, 600 Contacts, 300 Opportunities, seed 7) per session.

    Shared: tests that edit records, the budget or faults must undo what they change, or use their own.
    """
    with SalesforceSandbox(records=300, seed=7, workdir=tmp_path_factory.mktemp("salesforce")) as sandbox:
        yield sandbox


@pytest.fixture
def own_salesforce_sandbox(tmp_path: Path) -> Iterator[SalesforceSandbox]:
    """A private sandbox Salesforce (100 Accounts) for tests that edit or delete records."""
    with SalesforceSandbox(records=100, seed=7, workdir=tmp_path / "salesforce") as sandbox:
        yield sandbox
