"""The project's three resources pointed at the sandbox servers, for in-process materializations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from notion_sync.notion.resource import NotionResource
from notion_sync.salesforce import SalesforceResource
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.staging import StagingResource


def salesforce_resource(sandbox: SalesforceSandbox, **overrides: Any) -> SalesforceResource:
    """Session login to `sandbox`; `overrides` are resource fields (e.g. ``backoff_s=0.01``)."""
    fields = {
        "instance_url": sandbox.url,
        "session_id": sandbox.session_id,
        "ca_bundle": str(sandbox.ca_file),
        "pubsub_endpoint": sandbox.pubsub_endpoint,
    }
    return SalesforceResource(**{**fields, **overrides})


def sandbox_resources(
    salesforce: SalesforceSandbox, notion: NotionSandbox, workdir: Path, **notion_overrides: Any
) -> dict[str, Any]:
    """`salesforce`, `notion` and `staging`; the limiter and DuckDB files go in `workdir`;
    `notion_overrides` are `NotionResource` fields (e.g. ``token="wrong"``)."""
    notion_fields = {
        "token": notion.token,
        "base_url": notion.url,
        "parent_page_id": notion.parent_page_id,
        "time_scale": notion.speed,
        "limiter_path": str(workdir / "limiter.sqlite"),
        "workers": 4,
    }
    return {
        "salesforce": salesforce_resource(salesforce),
        "notion": NotionResource(**{**notion_fields, **notion_overrides}),
        "staging": StagingResource(path=str(workdir / "staging.duckdb")),
    }
