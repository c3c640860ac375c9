"""Salesforce → DuckDB staging: resource, SOQL building, extraction, assets and checks."""

from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.salesforce.checks import build_salesforce_checks
from notion_sync.salesforce.resource import (
    ApiBudgetExhausted,
    SalesforceAuthError,
    SalesforceConfigError,
    SalesforceResource,
)

__all__ = [
    "ApiBudgetExhausted",
    "SalesforceAuthError",
    "SalesforceConfigError",
    "SalesforceResource",
    "build_salesforce_asset",
    "build_salesforce_checks",
]
