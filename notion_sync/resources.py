"""The resources every asset, check and sensor shares, configured from CONTRACT.md's environment."""

from __future__ import annotations

from dagster import ConfigurableResource

from notion_sync.notion.resource import NotionResource
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync.staging import StagingResource, duckdb_path


def build_resources() -> dict[str, ConfigurableResource]:
    return {
        "salesforce": SalesforceResource.from_env(),
        "notion": NotionResource.from_env(),
        "staging": StagingResource(path=str(duckdb_path())),
    }
