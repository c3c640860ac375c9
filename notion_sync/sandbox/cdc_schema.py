"""Change Data Capture event schemas and payloads for the sandbox's objects, in Salesforce's Avro shapes.

A change event (``<Object>ChangeEvent``) is an Avro record: ``ChangeEventHeader`` first, then one
optional field per object field that change events carry (not Id, IsDeleted, SystemModstamp or
formula fields). Compound fields are nested records (Account's ``BillingAddress`` holds Street,
City, ...; Contact's ``Name`` holds FirstName and LastName). Datetimes are epoch milliseconds
(``long``), dates days since 1970 (``int``).

``changedFields`` and ``nulledFields`` are bitmaps, as the Pub/Sub API sends them: ``"0x..."`` whose
bit *i* stands for the schema's top-level field *i*, and ``"<i>-0x..."`` for the fields of the
compound field at position *i*. The schema id is a fingerprint of the schema.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import fastavro

from notion_sync.sandbox.sf_data import Change, SObject, parse_datetime

CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
)
NAMESPACE = "com.sforce.eventbus"
_SKIPPED = frozenset({"Id", "IsDeleted", "SystemModstamp"})
_AVRO_TYPES = {
    "boolean": "boolean",
    "int": "int",
    "double": "double",
    "currency": "double",
    "percent": "double",
    "datetime": "long",
    "date": "int",
}
_COMPOUND_RECORDS = {"address": "Address", "Name": "Name"}


def _header_schema() -> dict[str, Any]:
    strings = {"type": "array", "items": "string"}
    return {
        "type": "record",
        "name": "ChangeEventHeader",
        "namespace": NAMESPACE,
        "fields": [
            {"name": "entityName", "type": "string"},
            {"name": "recordIds", "type": strings},
            {
                "name": "changeType",
                "type": {
                    "type": "enum",
                    "name": "ChangeType",
                    "namespace": NAMESPACE,
                    "symbols": CHANGE_TYPES,
                },
            },
            {"name": "changeOrigin", "type": "string"},
            {"name": "transactionKey", "type": "string"},
            {"name": "sequenceNumber", "type": "int"},
            {"name": "commitTimestamp", "type": "long"},
            {"name": "commitNumber", "type": "long"},
            {"name": "commitUser", "type": "string"},
            {"name": "nulledFields", "type": strings},
            {"name": "diffFields", "type": strings},
            {"name": "changedFields", "type": strings},
        ],
    }


def _optional(avro_type: Any) -> dict[str, Any]:
    return {"type": ["null", avro_type], "default": None}


@dataclass(frozen=True)
class Slot:
    """A top-level field of the event: a plain field, or a compound one made of ``parts``
    (``(avro name, Salesforce field)``)."""

    name: str
    field: str | None = None
    parts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EventSchema:
    """One object's change event schema, its id, and how record fields map to its slots."""

    obj: str
    schema: dict[str, Any]
    schema_id: str
    slots: tuple[Slot, ...]  # slots[0] is ChangeEventHeader

    @property
    def schema_json(self) -> str:
        return json.dumps(self.schema, separators=(",", ":"))


def event_schema(sobject: SObject) -> EventSchema:
    """The ``<Object>ChangeEvent`` schema of a sandbox object."""
    fields = [f for f in sobject.fields if f.name not in _SKIPPED and f.formula is None]
    compounds = {f.compound for f in fields if f.compound}
    avro_fields: list[dict[str, Any]] = [{"name": "ChangeEventHeader", "type": _header_schema()}]
    slots = [Slot("ChangeEventHeader")]
    for field in fields:
        if field.compound:
            continue
        if field.name in compounds:
            parts = tuple(
                (f.name.removeprefix(field.name.removesuffix("Address")), f.name)
                for f in fields
                if f.compound == field.name
            )
            record_name = _COMPOUND_RECORDS.get(field.type, _COMPOUND_RECORDS.get(field.name, field.name))
            nested = {
                "type": "record",
                "name": record_name,
                "namespace": NAMESPACE,
                "fields": [{"name": part, **_optional(_avro_type(sobject, sf))} for part, sf in parts],
            }
            avro_fields.append({"name": field.name, **_optional(nested)})
            slots.append(Slot(field.name, parts=parts))
        else:
            avro_fields.append({"name": field.name, **_optional(_AVRO_TYPES.get(field.type, "string"))})
            slots.append(Slot(field.name, field=field.name))
    schema = {
        "type": "record",
        "name": f"{sobject.name}ChangeEvent",
        "namespace": NAMESPACE,
        "fields": avro_fields,
    }
    digest = hashlib.md5(json.dumps(schema, sort_keys=True).encode()).digest()
    schema_id = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return EventSchema(sobject.name, schema, schema_id, tuple(slots))


def _avro_type(sobject: SObject, name: str) -> str:
    return _AVRO_TYPES.get(sobject.field_map()[name].type, "string")


def _avro_value(value: Any, avro_type: str) -> Any:
    if value is None:
        return None
    if avro_type == "long":
        return parse_datetime(value)
    if avro_type == "int" and isinstance(value, str):
        return (date.fromisoformat(value) - date(1970, 1, 1)).days
    return value


def _bitmap(positions: Iterable[int]) -> str:
    number = sum(1 << position for position in set(positions))
    digits = format(number, "X")
    return "0x" + digits.zfill(len(digits) + len(digits) % 2)


def _bitmaps(schema: EventSchema, names: set[str]) -> list[str]:
    """``changedFields``/``nulledFields`` for record fields ``names``: top level first, then compounds."""
    top: list[int] = []
    nested: list[str] = []
    for position, slot in enumerate(schema.slots):
        if slot.field in names:
            top.append(position)
        inner = [i for i, (_, field) in enumerate(slot.parts) if field in names]
        if inner:
            top.append(position)
            nested.append(f"{position}-{_bitmap(inner)}")
    return [_bitmap(top), *nested] if top else []


@dataclass
class Commit:
    """Header values the bus assigns to one committed transaction."""

    number: int
    user: str = "005Dn000000SANDBOX"
    origin: str = "com/salesforce/api/rest/62.0"


def encode(schema: EventSchema, header: Mapping[str, Any], values: Mapping[str, Any]) -> bytes:
    """An event payload: Avro binary without a container header, as the Pub/Sub API sends it."""
    record: dict[str, Any] = {"ChangeEventHeader": dict(header)}
    avro_types = {f["name"]: f["type"][1] for f in schema.schema["fields"][1:]}
    for slot in schema.slots[1:]:
        if slot.parts:
            nested_types = {f["name"]: f["type"][1] for f in avro_types[slot.name]["fields"]}
            nested = {part: _avro_value(values.get(field), nested_types[part]) for part, field in slot.parts}
            record[slot.name] = nested if any(v is not None for v in nested.values()) else None
        elif slot.field is not None:
            record[slot.name] = _avro_value(values.get(slot.field), avro_types[slot.name])
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema.schema), record)
    return buffer.getvalue()


def header(
    schema: EventSchema,
    change_type: str,
    record_ids: list[str],
    commit: Commit,
    commit_ms: int,
    *,
    changed: Iterable[str] = (),
    nulled: Iterable[str] = (),
) -> dict[str, Any]:
    return {
        "entityName": schema.obj,
        "recordIds": record_ids,
        "changeType": change_type,
        "changeOrigin": commit.origin,
        "transactionKey": str(uuid.uuid4()),
        "sequenceNumber": 1,
        "commitTimestamp": commit_ms,
        "commitNumber": commit.number,
        "commitUser": commit.user,
        "nulledFields": _bitmaps(schema, set(nulled)),
        "diffFields": [],
        "changedFields": _bitmaps(schema, set(changed)),
    }


def change_payload(schema: EventSchema, change: Change, commit: Commit) -> bytes:
    """The payload of an admin change: an UPDATE carries the fields it wrote, CREATE and UNDELETE
    every non-null field, DELETE none."""
    record_id = change.record["Id"]
    if change.change_type == "UPDATE":
        written = set(change.fields)
        values = {name: change.record.get(name) for name in written}
        nulled = {name for name in written if change.record.get(name) is None}
        head = header(schema, "UPDATE", [record_id], commit, change.commit_ms, changed=written, nulled=nulled)
    elif change.change_type == "DELETE":
        values = {}
        head = header(schema, "DELETE", [record_id], commit, change.commit_ms)
    else:
        values = {name: change.record.get(name) for name in change.fields}
        head = header(schema, change.change_type, [record_id], commit, change.commit_ms)
    return encode(schema, head, values)
