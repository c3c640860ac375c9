"""Pages edited by hand in Notion: synced values that no longer show the staged record.

The weekly reconciliation reads every page of an object's data source; `DriftCheck` compares each
page, a chunk at a time as they are read, with its staged row in canonical form (`found_hash`, as
the state rebuild does). A page has drifted when its values differ from the staged row while
sync_state says the page was last written with that row (or found holding it): nobody but a
person can have changed it. A record changed in Salesforce since its last sync is not drift: its
next sync writes it anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import duckdb

from notion_sync.config import ObjectConfig
from notion_sync.notion import state
from notion_sync.notion.properties import PropertySpec, found_hash, property_specs
from notion_sync.notion.sync import (
    chunked,
    hashed_row,
    page_salesforce_id,
    relation_ids,
    staged_columns,
    written_with,
)
from notion_sync.staging import PARTITION_COLUMN, quote_ident

CHUNK = 1_000  # pages compared with one read of their staged rows


class DriftCheck:
    """Finds the drifted pages among the pages passed through `pages` (``found``: sf_id -> partition)."""

    def __init__(self, connect: state.Connect, obj: ObjectConfig) -> None:
        self.connect = connect
        self.obj = obj
        self.found: dict[str, str] = {}
        self.compared = 0
        with connect(read_only=True) as conn:
            self.specs, self.columns = _synced_fields(conn, obj)

    def pages(self, pages: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``pages`` unchanged, checked a chunk at a time on the way (nothing when never synced)."""
        for chunk in chunked(pages, CHUNK):
            if self.specs:
                self._check(chunk)
            yield from chunk

    def _check(self, pages: Sequence[dict[str, Any]]) -> None:
        by_record = {sf_id: page for page in pages if (sf_id := page_salesforce_id(page))}
        ids = sorted(by_record)
        select = ", ".join(quote_ident(column) for column in (*self.columns, PARTITION_COLUMN))
        with self.connect(read_only=True) as conn:
            cursor = conn.execute(
                f"SELECT {select} FROM {quote_ident(self.obj.staging_table)} "
                "WHERE Id IN (SELECT unnest(?::VARCHAR[]))",
                [ids],
            )
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
            states = state.page_states(conn, self.obj.name, ids)
            related = state.records_of_pages(conn, sorted(relation_ids(self.specs, pages)))
        for row in rows:
            sf_id, page = row["Id"], by_record[row["Id"]]
            current = states.get(sf_id)
            if row.get("IsDeleted") or current is None or current.in_trash or current.page_id != page["id"]:
                continue
            hashed = hashed_row(self.specs, row)
            if not written_with(self.specs, current, hashed):
                continue  # changed in Salesforce since its last sync: not drift
            self.compared += 1
            if found_hash(self.specs, page.get("properties", {}), related) != found_hash(self.specs, hashed):
                self.found[sf_id] = row[PARTITION_COLUMN].isoformat()


def _synced_fields(
    conn: duckdb.DuckDBPyConnection, obj: ObjectConfig
) -> tuple[list[PropertySpec], tuple[str, ...]]:
    """The object's property specs and staged columns; nothing when it was never staged and synced."""
    try:
        specs = property_specs(obj, state.field_types(conn, obj.name))
        return specs, staged_columns(conn, obj, specs)
    except (ValueError, duckdb.CatalogException):  # no describe types or no staged table yet
        return [], ()
