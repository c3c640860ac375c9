"""The project's three resources pointed at the sandbox servers, for in-process materializations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from notion_sync.notion.resource import NotionResource
from notion_sync.salesforce import SalesforceResource
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.staging import StagingResource


def sandbox_resources(salesforce: SalesforceSandbox, notion: NotionSandbox, workdir: Path) -> dict[str, Any]:
    """`salesforce`, `notion` and `staging`; the limiter and DuckDB files go in `workdir`."""
    return {
        "salesforce": SalesforceResource(
            instance_url=salesforce.url, session_id=salesforce.session_id, ca_bundle=str(salesforce.ca_file)
        ),
        "notion": NotionResource(
            token=notion.token,
            base_url=notion.url,
            parent_page_id=notion.parent_page_id,
            time_scale=notion.speed,
            limiter_path=str(workdir / "limiter.sqlite"),
            workers=4,
        ),
        "staging": StagingResource(path=str(workdir / "staging.duckdb")),
    }
