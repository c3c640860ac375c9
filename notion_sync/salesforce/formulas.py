"""Refreshing staged formula fields.

Salesforce computes a formula field (describe: `calculated`) when it is read. A formula over other
records (`Account.Name` on a Contact) or `TODAY()` changes value without touching the record's
SystemModstamp, so neither the change sensor nor a partition's extraction notices: the staged
value, and the Notion property, go stale. A refresh reads `Id` plus the mapped formula fields of
every record in one query (REST up to the object's `bulk_threshold`, Bulk API 2.0 above, as an
extraction would), and sets the staged values that differ in one transaction. Each changed row
keeps its partition, whose Notion sync then writes it as an ordinary update.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from notion_sync.config import ObjectConfig
from notion_sync.salesforce.extract import (
    BULK_PAGE_RECORDS,
    REST_BATCH_SIZE,
    Method,
    check_configured_fields,
    choose_method,
    count_window,
    describe_object,
    spool_records,
    staging_columns,
)
from notion_sync.salesforce.resource import SalesforceClient
from notion_sync.staging import SPOOL_TABLE, Spool, StagingResource, ensure_table, update_values


@dataclass(frozen=True)
class FormulaRefresh:
    fields: list[str]  # the mapped formula fields (none: nothing was read)
    records: int = 0
    method: Method | None = None
    changed: dict[str, int] = field(default_factory=dict)  # partition key -> rows whose values changed


def mapped_formula_fields(obj: ObjectConfig, describe: Mapping[str, Any]) -> list[str]:
    """The synced fields that Salesforce computes (formulas), in config order."""
    calculated = {f["name"] for f in describe["fields"] if f.get("calculated")}
    return [name for name in obj.property_names() if name in calculated]


def _staged(staging: StagingResource, table: str) -> bool:
    with staging.connect(read_only=True) as conn:
        found = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
        return found.fetchone()[0] > 0


def refresh_formulas(
    client: SalesforceClient,
    staging: StagingResource,
    obj: ObjectConfig,
    *,
    log: logging.Logger,
    rest_batch_size: int = REST_BATCH_SIZE,
    bulk_page_records: int = BULK_PAGE_RECORDS,
) -> FormulaRefresh:
    """Read the object's mapped formula fields and stage the values that changed."""
    describe = describe_object(client.sf, obj.name)
    check_configured_fields(obj, describe)
    fields = mapped_formula_fields(obj, describe)
    if not fields or not _staged(staging, obj.staging_table):
        log.info(
            f"{obj.name}: {'no staged rows' if fields else 'no mapped formula fields'}, nothing to refresh"
        )
        return FormulaRefresh(fields)
    columns = [c for c in staging_columns(describe["fields"]) if c.name == "Id" or c.name in fields]
    method = choose_method(obj, count_window(client.sf, obj.name))
    log.info(f"{obj.name}: refreshing formula fields {', '.join(fields)} with {method.value}")
    began = datetime.now(UTC)
    with Spool.create(staging.path) as spool:
        _, method = spool_records(
            client,
            spool,
            obj.name,
            columns,
            None,
            method,
            (bulk_page_records, rest_batch_size),
            lambda pages, rows: log.debug(f"{obj.name}: page {pages} spooled, {rows} rows"),
            log,
        )
        records = spool.count(SPOOL_TABLE)
        spool.close()
        with staging.connect() as conn:
            ensure_table(conn, obj.staging_table, columns)  # a formula field mapped since the last run
            changed = update_values(conn, obj.staging_table, spool.path, fields, began)
    return FormulaRefresh(
        fields, records, method, {day.isoformat(): rows for day, rows in sorted(changed.items())}
    )
