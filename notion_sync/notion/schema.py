"""Provision or validate the Notion data source of an object before its pages are written.

- ``notion.database_id`` configured: discover its first data source, check the property types,
  add the properties it lacks.
- none configured: reuse the database created on an earlier run (``notion_targets``), else create
  one under ``NOTION_PARENT_PAGE_ID``. Recording it is what keeps a re-run from creating a second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from notion_sync.config import ObjectConfig
from notion_sync.notion import state
from notion_sync.notion.client import NotionClient
from notion_sync.notion.properties import PropertySpec, database_properties

Describe = Callable[[str], Mapping[str, Any]]  # object name -> Salesforce describe result


class SchemaError(ValueError):
    """The Notion database cannot hold the object as configured; the message says what to change."""


def salesforce_field_types(
    connect: state.Connect, obj: ObjectConfig, describe: Describe | None
) -> dict[str, str]:
    """Describe types of ``obj``'s fields, cached in ``sf_fields``; ``describe`` is called on a miss only."""
    with connect() as conn:
        state.ensure_tables(conn)
        types = state.field_types(conn, obj.name)
    if set(obj.property_names()) <= set(types) or describe is None:
        return types
    fields = [
        (field["name"], field["type"], field.get("label"), ",".join(field.get("referenceTo") or []) or None)
        for field in describe(obj.name)["fields"]
    ]
    with connect() as conn:
        state.save_field_types(conn, obj.name, fields)
    return {name: sf_type for name, sf_type, _, _ in fields}


def _normalise(notion_id: str | None) -> str:
    return (notion_id or "").replace("-", "")


def _relation_targets(
    connect: state.Connect, obj: ObjectConfig, specs: Sequence[PropertySpec]
) -> dict[str, str]:
    """Data source of every related parent; a self-relation resolves once this object's source exists."""
    targets: dict[str, str] = {}
    with connect() as conn:
        state.ensure_tables(conn)
        for parent in {spec.relation_to for spec in specs if spec.relation_to}:
            target = state.load_target(conn, parent)
            if target:
                targets[parent] = target[1]
            elif parent != obj.name:
                raise SchemaError(
                    f"objects.{obj.name}.relations: the Notion database of {parent} is not known yet; "
                    f"materialize notion/{parent} for this partition first"
                )
    return targets


def _locate(
    client: NotionClient,
    connect: state.Connect,
    obj: ObjectConfig,
    initial: Mapping[str, Any],
    parent_page_id: str | None,
) -> str:
    """The data source id of ``obj``: configured, recorded earlier, or newly created."""
    with connect() as conn:
        recorded = state.load_target(conn, obj.name)
    configured = obj.notion.database_id
    if recorded and (not configured or _normalise(recorded[0]) == _normalise(configured)):
        return recorded[1]
    if configured:
        database = client.retrieve_database(configured)
    elif parent_page_id:
        database = client.create_database(
            parent_page_id, obj.notion.title or f"Salesforce {obj.name}", dict(initial)
        )
    else:
        raise SchemaError(
            f"objects.{obj.name}: no notion.database_id configured and NOTION_PARENT_PAGE_ID is not set; "
            "set NOTION_PARENT_PAGE_ID to the page under which the database should be created, "
            f"or give objects.{obj.name}.notion.database_id"
        )
    sources = database.get("data_sources") or []
    if not sources:
        raise SchemaError(f"objects.{obj.name}: Notion database {database.get('id')} has no data source")
    with connect() as conn:
        state.save_target(conn, obj.name, database["id"], sources[0]["id"])
    return sources[0]["id"]


def _property_changes(
    obj: ObjectConfig, wanted: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, Any]:
    """Properties to add (and the title to rename); raises on a property of the wrong type."""
    changes: dict[str, Any] = {}
    for name, schema in wanted.items():
        expected = next(iter(schema))
        actual = current.get(name)
        if actual is None and expected == "title":
            existing = next(key for key, prop in current.items() if prop.get("type") == "title")
            changes[existing] = {"name": name}  # a data source has exactly one title property
        elif actual is None:
            changes[name] = schema
        elif actual.get("type") != expected:
            raise SchemaError(
                f"objects.{obj.name}: Notion property '{name}' is {actual.get('type')}, expected {expected}; "
                f"change its type in Notion or map the field to another property name"
            )
        elif expected == "relation" and _normalise(actual["relation"].get("data_source_id")) != _normalise(
            schema["relation"]["data_source_id"]
        ):
            raise SchemaError(
                f"objects.{obj.name}: Notion relation '{name}' points to data source "
                f"{actual['relation'].get('data_source_id')}, expected {schema['relation']['data_source_id']}"
            )
    return changes


def ensure_data_source(
    client: NotionClient,
    connect: state.Connect,
    obj: ObjectConfig,
    specs: Sequence[PropertySpec],
    parent_page_id: str | None,
) -> str:
    """Provision or validate ``obj``'s data source; returns its id."""
    targets = _relation_targets(connect, obj, specs)
    creatable = [spec for spec in specs if not spec.relation_to or spec.relation_to in targets]
    data_source_id = _locate(client, connect, obj, database_properties(creatable, targets), parent_page_id)
    wanted = database_properties(specs, {**targets, obj.name: data_source_id})
    current = client.retrieve_data_source(data_source_id).get("properties", {})
    changes = _property_changes(obj, wanted, current)
    if changes:
        client.update_data_source(data_source_id, changes)
    return data_source_id
