"""Salesforce → DuckDB staging: resource, SOQL building, extraction, assets and checks."""

from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync.salesforce.checks import build_salesforce_checks
from notion_sync.salesforce.resource import ApiBudgetExhausted, SalesforceAuthError, SalesforceResource

__all__ = [
    "ApiBudgetExhausted",
    "SalesforceAuthError",
    "SalesforceResource",
    "build_salesforce_asset",
    "build_salesforce_checks",
]
