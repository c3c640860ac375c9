"""Salesforce fields → Notion properties: schemas, values fitted to Notion's limits, content hashes.

Pure functions (no Dagster, no I/O) so the mapping is unit-testable on its own. Values that
exceed a Notion limit are fitted (split, truncated, cleaned) rather than rejected: one long
description must not cost a record its sync.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from notion_sync.config import SALESFORCE_ID_PROPERTY, ObjectConfig

TEXT_CHUNK = 2000  # characters per rich-text object
MAX_ITEMS = 100  # rich-text objects, multi_select options, relation pages
OPTION_NAME = 100  # characters of a select option name
URL_LENGTH = 2000
EMAIL_PHONE_LENGTH = 200
TRUNCATED = "… [truncated]"
# Notion refuses request bodies over 500 KB (413). The properties of one page, as UTF-8 JSON, are
# kept under this, which leaves room for the parent, relation page ids and the JSON around them.
PROPERTIES_BUDGET = 480_000

_NUMBER_FORMATS = {
    "currency": "dollar",
    "percent": "percent",
    "double": "number",
    "int": "number",
    "long": "number",
}
_SIMPLE_TYPES = {
    "boolean": "checkbox",
    "date": "date",
    "datetime": "date",
    "picklist": "select",
    "combobox": "select",
    "multipicklist": "multi_select",
    "url": "url",
    "email": "email",
    "phone": "phone_number",
}


@dataclass(frozen=True)
class PropertySpec:
    """How one Salesforce field is written to one Notion property."""

    field: str
    name: str
    type: str
    number_format: str | None = None
    percent: bool = False  # Salesforce stores 12.5 for 12.5 %; Notion's percent format wants 0.125
    relation_to: str | None = None  # parent object of a relation


def notion_property_spec(
    field: str, name: str, sf_type: str, *, title: bool = False, relation_to: str | None = None
) -> PropertySpec:
    """The Notion property type for a Salesforce describe type (unknown types become rich_text)."""
    if title:
        return PropertySpec(field, name, "title")
    if relation_to is not None:
        return PropertySpec(field, name, "relation", relation_to=relation_to)
    if sf_type in _NUMBER_FORMATS:
        return PropertySpec(
            field, name, "number", number_format=_NUMBER_FORMATS[sf_type], percent=sf_type == "percent"
        )
    return PropertySpec(field, name, _SIMPLE_TYPES.get(sf_type, "rich_text"))


def property_specs(obj: ObjectConfig, sf_types: Mapping[str, str]) -> list[PropertySpec]:
    """Every configured field of ``obj``, title first; ``sf_types`` maps a field to its describe type."""
    missing = sorted(set(obj.property_names()) - set(sf_types))
    if missing:
        raise ValueError(
            f"objects.{obj.name}: Salesforce describe has no field(s) {', '.join(missing)}; "
            "check the field API names in the sync config"
        )
    return [
        notion_property_spec(
            field, name, sf_types[field], title=field == obj.title_field, relation_to=obj.relations.get(field)
        )
        for field, name in obj.property_names().items()
    ]


def property_schema(spec: PropertySpec, data_source_ids: Mapping[str, str]) -> dict[str, Any]:
    """The schema of one property; ``data_source_ids`` maps a parent object to its data source."""
    if spec.type == "number":
        return {"number": {"format": spec.number_format}}
    if spec.type == "relation":
        return {
            "relation": {
                "data_source_id": data_source_ids[spec.relation_to],
                "type": "single_property",
                "single_property": {},
            }
        }
    return {spec.type: {}}


def database_properties(specs: Sequence[PropertySpec], data_source_ids: Mapping[str, str]) -> dict[str, Any]:
    """The full schema of an object's data source, ``Salesforce Id`` included."""
    schema = {spec.name: property_schema(spec, data_source_ids) for spec in specs}
    schema[SALESFORCE_ID_PROPERTY] = {"rich_text": {}}
    return schema


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, limit: int, marker: str = "") -> str:
    """``text`` cut to ``limit`` UTF-16 units (Notion counts like JavaScript), ending with ``marker``."""
    if _utf16_len(text) <= limit:
        return text
    return _utf16_chunks(text, limit - _utf16_len(marker))[0] + marker


def _utf16_chunks(text: str, size: int) -> list[str]:
    """Split into pieces of at most ``size`` UTF-16 units without cutting a surrogate pair."""
    if len(text) <= size and _utf16_len(text) <= size:  # the common case: one piece
        return [text]
    if len(text) == _utf16_len(text):  # no astral characters: plain slicing is exact
        return [text[i : i + size] for i in range(0, len(text), size)]
    units = text.encode("utf-16-le")
    chunks, start = [], 0
    while start < len(units):
        end = min(start + 2 * size, len(units))
        if end < len(units) and 0xD8 <= units[end - 1] <= 0xDB:  # would end on a high surrogate
            end -= 2
        chunks.append(units[start:end].decode("utf-16-le"))
        start = end
    return chunks


def rich_text(value: Any) -> list[dict[str, Any]]:
    """Text as ≤100 rich-text objects of ≤2,000 characters; beyond that, truncated with a marker."""
    if value is None or value == "":
        return []
    text = _fit(str(value), TEXT_CHUNK * MAX_ITEMS, TRUNCATED)
    return [{"type": "text", "text": {"content": chunk}} for chunk in _utf16_chunks(text, TEXT_CHUNK)]


def option_name(value: Any) -> str:
    """A select option name: no commas (Notion rejects them), at most 100 characters."""
    return _fit(str(value).replace(",", ";").strip(), OPTION_NAME)


def _multi_select(value: Any) -> list[dict[str, str]]:
    names = dict.fromkeys(option_name(part) for part in str(value or "").split(";"))
    return [{"name": name} for name in names if name][:MAX_ITEMS]


def _date(value: Any) -> dict[str, Any] | None:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {"start": aware.astimezone(UTC).isoformat()}
    if isinstance(value, date):
        return {"start": value.isoformat()}
    return {"start": str(value)}


def _blank(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def property_value(spec: PropertySpec, value: Any) -> dict[str, Any]:
    """One Notion property value; ``None`` (or an empty string) clears the property."""
    kind = spec.type
    if kind in ("title", "rich_text"):
        return {kind: rich_text(value)}
    if kind == "checkbox":
        return {"checkbox": bool(value) if not _blank(value) else False}
    if kind == "relation":
        return {"relation": [{"id": page_id} for page_id in (value or [])][:MAX_ITEMS]}
    if kind == "multi_select":
        return {"multi_select": _multi_select(value)}
    if _blank(value):
        return {kind: None}
    if kind == "number":
        return {"number": value / 100 if spec.percent else value}
    if kind == "date":
        return {"date": _date(value)}
    if kind == "select":
        name = option_name(value)
        return {"select": {"name": name} if name else None}
    if kind == "url":
        return {"url": _fit(str(value), URL_LENGTH)}
    if kind in ("email", "phone_number"):
        return {kind: _fit(str(value), EMAIL_PHONE_LENGTH)}
    raise ValueError(f"unsupported Notion property type {kind!r} for {spec.field}")


def page_properties(
    specs: Sequence[PropertySpec], row: Mapping[str, Any], relations: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """A staged row as the ``properties`` of a page; ``relations`` maps a reference field to page ids."""
    properties = {
        spec.name: property_value(
            spec, relations.get(spec.field, ()) if spec.type == "relation" else row.get(spec.field)
        )
        for spec in specs
    }
    properties[SALESFORCE_ID_PROPERTY] = {"rich_text": rich_text(row["Id"])}
    return fit_body(properties)


def body_bytes(value: Any) -> int:
    """Bytes of ``value`` as the client sends it: UTF-8 JSON, compact (see `NotionClient`)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode())


def _texts(properties: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (kind, text) of the title and rich_text values longer than the TRUNCATED marker."""
    texts = {}
    for name, value in properties.items():
        for kind in ("title", "rich_text"):
            text = "".join(item["text"]["content"] for item in value.get(kind) or ())
            if len(text) > len(TRUNCATED):
                texts[name] = (kind, text)
    return texts


def fit_body(properties: dict[str, Any], budget: int = PROPERTIES_BUDGET) -> dict[str, Any]:
    """Shorten the longest texts, ending them with the TRUNCATED marker, until ``properties`` take at
    most ``budget`` bytes: 100 pieces of 2,000 CJK characters are 600 KB of UTF-8, over Notion's
    500 KB per request. Each text loses only what the body is over."""
    while (excess := body_bytes(properties) - budget) > 0:
        texts = _texts(properties)
        if not texts:  # nothing left to shorten (cannot happen within Notion's per-property limits)
            return properties
        name = max(texts, key=lambda key: len(texts[key][1].encode()))
        kind, encoded = texts[name][0], texts[name][1].encode()
        keep = encoded[: max(0, len(encoded) - excess - len(TRUNCATED.encode()))]
        properties[name] = {kind: rich_text(keep.decode(errors="ignore") + TRUNCATED)}
    return properties


def content_hash(properties: Mapping[str, Any]) -> str:
    """A stable digest of a page payload: equal payloads give equal hashes whatever the key order."""
    payload = json.dumps(properties, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


# --- Pages found in Notion --------------------------------------------------------------------
#
# When sync_state is rebuilt from Notion, a page's content hash is unknown: the page was written by
# an earlier sync, but Notion echoes values in its own form (rich text with annotations, options
# with ids and colours, `12500` for `12500.0`, dates with milliseconds). Both forms reduce to one
# canonical value per property, and a found page is recorded with the hash of that, prefixed
# FOUND_PREFIX, so that a record Notion already shows as staged costs no request.

FOUND_PREFIX = "found:"


def _canonical_instant(start: str) -> str:
    try:
        if "T" not in start:
            return date.fromisoformat(start).isoformat()
        moment = datetime.fromisoformat(start)
    except ValueError:
        return start
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _canonical_value(kind: str, value: Any) -> Any:
    """A property value as a request sends it or as Notion returns it, reduced to one form."""
    if kind in ("title", "rich_text"):
        return "".join((item.get("text") or {}).get("content", "\ufffd") for item in value or [])
    if kind == "multi_select":
        return [option["name"] for option in value or []]
    if kind == "select":
        return value["name"] if value else None
    if kind == "relation":
        return [item["id"] for item in value or []]
    if kind == "number":
        return None if value is None else float(value)
    if kind == "date":
        return _canonical_instant(value["start"]) if value else None
    return value  # checkbox, url, email, phone_number


def found_hash(
    specs: Sequence[PropertySpec],
    properties: Mapping[str, Any],
    relation_ids: Mapping[str, str] | None = None,
) -> str:
    """FOUND_PREFIX + a digest of the synced properties in canonical form.

    ``properties`` is a request payload (relations named by parent Salesforce Id, as hashed by
    :func:`content_hash`) or a page's ``properties`` from Notion; then ``relation_ids`` maps its
    related page ids to Salesforce Ids. A relation cut off at 25 references (``has_more``) or to an
    unknown page never matches, so such a record is written.
    """
    canonical: dict[str, Any] = {}
    for spec in [*specs, PropertySpec("Id", SALESFORCE_ID_PROPERTY, "rich_text")]:
        prop = properties.get(spec.name) or {}
        value = _canonical_value(spec.type, prop.get(spec.type))
        if spec.type == "relation" and relation_ids is not None:
            value = [relation_ids.get(page_id, f"page:{page_id}") for page_id in value]
            value += ["has_more"] if prop.get("has_more") else []
        canonical[spec.name] = value
    return FOUND_PREFIX + content_hash(canonical)
