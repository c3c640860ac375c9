"""Pure SOQL building: which fields to select and the queries for one partition window.

No I/O here, so every rule (compound fields, datetime literals, URL-length chunking) is unit-tested
without a Salesforce.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

# Compound parents (BillingAddress, a geolocation) are also exposed as component fields
# (BillingStreet, ..._Latitude__s); Bulk refuses to select the parents, so we read the components.
COMPOUND_TYPES = frozenset({"address", "location"})
# base64 bodies are not readable through a query result (Bulk refuses them, REST returns a URL).
UNQUERYABLE_TYPES = frozenset({"base64"})
CURSOR_FIELD = "SystemModstamp"
# Salesforce refuses request URIs over 16,384 bytes; keep room for the host, path and window filter.
MAX_QUERY_URL_CHARS = 16_384 - 2_000


def queryable_fields(describe_fields: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The describe entries a faithful mirror selects: all fields but compound parents and base64."""
    return [
        field
        for field in describe_fields
        if field["type"] not in COMPOUND_TYPES and field["type"] not in UNQUERYABLE_TYPES
    ]


def soql_datetime(moment: datetime) -> str:
    """A SOQL dateTime literal in UTC (`2026-11-20T00:00:00Z`); SOQL literals are unquoted."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; SOQL literals must be absolute")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_filter(start: datetime, end: datetime, field: str = CURSOR_FIELD) -> str:
    """Half-open `[start, end)` on the replication field (SystemModstamp unless the object lacks
    it), so adjacent windows never share a record."""
    return f"{field} >= {soql_datetime(start)} AND {field} < {soql_datetime(end)}"


def select_query(
    object_name: str,
    fields: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    ordered: bool = True,
    field: str = CURSOR_FIELD,
) -> str:
    """Every record of the window on `field` (of the object without one); ordered by (`field`, Id),
    or by Id without a window, so paging is deterministic.

    Bulk jobs are unordered anyway and gain nothing from ORDER BY, hence `ordered=False` for them.
    """
    query = f"SELECT {', '.join(fields)} FROM {object_name}{_where(start, end, field)}"
    order = f"{field}, Id" if start is not None else "Id"
    return f"{query} ORDER BY {order}" if ordered else query


def count_query(
    object_name: str, start: datetime | None = None, end: datetime | None = None, field: str = CURSOR_FIELD
) -> str:
    return f"SELECT COUNT() FROM {object_name}{_where(start, end, field)}"


def daily_count_query(object_name: str, start: datetime, end: datetime, field: str = CURSOR_FIELD) -> str:
    """Records per UTC day of `field` in `[start, end)` (date functions are UTC unless wrapped in
    convertTimezone()): AggregateResult rows of ``expr0`` (the day) and ``expr1`` (its count)."""
    return (
        f"SELECT DAY_ONLY({field}), COUNT(Id) FROM {object_name}{_where(start, end, field)} "
        f"GROUP BY DAY_ONLY({field})"
    )


def _where(start: datetime | None, end: datetime | None, field: str) -> str:
    return f" WHERE {window_filter(start, end, field)}" if start is not None and end is not None else ""


def chunk_fields(fields: Sequence[str], max_chars: int = MAX_QUERY_URL_CHARS) -> list[list[str]]:
    """Split a field list whose URL-encoded SELECT would be too long into chunks joined later by Id.

    Every chunk starts with `Id`; each field appears in exactly one chunk, in the original order.
    """
    others = [field for field in fields if field != "Id"]
    chunks: list[list[str]] = []
    current = ["Id"]
    size = len("Id")
    for field in others:
        cost = len(quote(", " + field))
        if size + cost > max_chars and len(current) > 1:
            chunks.append(current)
            current, size = ["Id"], len("Id")
        current.append(field)
        size += cost
    chunks.append(current)
    return chunks
