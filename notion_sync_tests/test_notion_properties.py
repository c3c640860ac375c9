"""Property mapping: Salesforce describe types → Notion schemas, values fitted to Notion's limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from notion_sync.config import SALESFORCE_ID_PROPERTY, parse_config
from notion_sync.notion.properties import (
    PropertySpec,
    content_hash,
    database_properties,
    notion_property_spec,
    page_properties,
    property_specs,
    property_value,
    rich_text,
)

CONFIG = parse_config(
    {
        "defaults": {"start_date": "2026-10-01"},
        "objects": {
            "Account": {"title_field": "Name", "fields": {"Name": "Name"}},
            "Contact": {
                "title_field": "Name",
                "fields": {"Name": "Full Name", "Email": "Email", "Score__c": "Score"},
                "relations": {"AccountId": "Account"},
            },
        },
    }
)


@pytest.mark.parametrize(
    ("sf_type", "schema"),
    [
        ("string", {"rich_text": {}}),
        ("textarea", {"rich_text": {}}),
        ("id", {"rich_text": {}}),
        ("reference", {"rich_text": {}}),  # a lookup that is not a configured relation
        ("currency", {"number": {"format": "dollar"}}),
        ("double", {"number": {"format": "number"}}),
        ("int", {"number": {"format": "number"}}),
        ("percent", {"number": {"format": "percent"}}),
        ("boolean", {"checkbox": {}}),
        ("date", {"date": {}}),
        ("datetime", {"date": {}}),
        ("picklist", {"select": {}}),
        ("multipicklist", {"multi_select": {}}),
        ("url", {"url": {}}),
        ("email", {"email": {}}),
        ("phone", {"phone_number": {}}),
        ("anyType", {"rich_text": {}}),
    ],
)
def test_describe_type_maps_to_notion_schema(sf_type: str, schema: dict) -> None:
    spec = notion_property_spec("F__c", "F", sf_type)
    assert database_properties([spec], {})["F"] == schema


def test_object_schema_has_title_relation_and_salesforce_id() -> None:
    specs = property_specs(
        CONFIG.objects["Contact"],
        {"Name": "string", "Email": "email", "Score__c": "percent", "AccountId": "reference"},
    )
    schema = database_properties(specs, {"Account": "ds-account"})
    assert schema["Full Name"] == {"title": {}}
    assert schema["Account"]["relation"]["data_source_id"] == "ds-account"
    assert schema[SALESFORCE_ID_PROPERTY] == {"rich_text": {}}
    assert specs[0].name == "Full Name"


def test_unknown_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"objects\.Contact.*Score__c"):
        property_specs(
            CONFIG.objects["Contact"], {"Name": "string", "Email": "email", "AccountId": "reference"}
        )


def test_long_text_is_split_into_2000_character_objects() -> None:
    chunks = rich_text("x" * 4500)
    assert [len(c["text"]["content"]) for c in chunks] == [2000, 2000, 500]


def test_text_beyond_100_objects_is_truncated_with_a_marker() -> None:
    chunks = rich_text("y" * 250_000)
    assert len(chunks) == 100
    assert all(len(c["text"]["content"]) <= 2000 for c in chunks)
    assert chunks[-1]["text"]["content"].endswith("[truncated]")


def test_text_split_counts_utf16_units_and_keeps_surrogate_pairs() -> None:
    chunks = rich_text("😀" * 1500)  # 3,000 UTF-16 units
    contents = [c["text"]["content"] for c in chunks]
    assert [len(c.encode("utf-16-le")) // 2 for c in contents] == [2000, 1000]
    assert "".join(contents) == "😀" * 1500


def test_multi_select_is_capped_cleaned_and_deduplicated() -> None:
    spec = PropertySpec("Regions__c", "Regions", "multi_select")
    raw = ";".join([f"R{i}" for i in range(150)] + ["R1", "a,b", "z" * 300, ""])
    options = property_value(spec, raw)["multi_select"]
    assert len(options) == 100
    names = [o["name"] for o in options]
    assert len(set(names)) == len(names)
    cleaned = property_value(spec, "a,b;" + "z" * 300)["multi_select"]
    assert cleaned == [{"name": "a;b"}, {"name": "z" * 100}]


def test_select_url_email_phone_limits() -> None:
    assert property_value(PropertySpec("S", "S", "select"), "x" * 150 + ",y")["select"]["name"] == "x" * 100
    assert len(property_value(PropertySpec("U", "U", "url"), "https://a.b/" + "p" * 3000)["url"]) == 2000
    assert len(property_value(PropertySpec("E", "E", "email"), "a" * 300 + "@b.c")["email"]) == 200
    assert len(property_value(PropertySpec("P", "P", "phone_number"), "1" * 300)["phone_number"]) == 200


def test_numbers_dates_checkbox_and_clearing() -> None:
    percent = notion_property_spec("P__c", "P", "percent")
    assert property_value(percent, 12.5) == {"number": 0.125}
    assert property_value(notion_property_spec("A", "A", "currency"), float("nan")) == {"number": None}
    when = datetime(2026, 11, 20, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    date_spec = PropertySpec("D", "D", "date")
    assert property_value(date_spec, when) == {"date": {"start": "2026-11-20T08:30:00+00:00"}}
    naive = datetime(2026, 11, 20, 10, 30)
    assert property_value(date_spec, naive)["date"]["start"].endswith("+00:00")
    assert property_value(date_spec, date(2026, 1, 2)) == {"date": {"start": "2026-01-02"}}
    assert property_value(PropertySpec("C", "C", "checkbox"), None) == {"checkbox": False}
    for kind in ("number", "date", "select", "url", "email", "phone_number"):
        assert property_value(PropertySpec("X", "X", kind), None) == {kind: None}
    assert property_value(PropertySpec("T", "T", "rich_text"), None) == {"rich_text": []}


def test_relation_values_are_capped_at_100() -> None:
    spec = PropertySpec("AccountId", "Account", "relation", relation_to="Account")
    assert len(property_value(spec, [f"p{i}" for i in range(120)])["relation"]) == 100


def test_page_properties_and_stable_hash() -> None:
    specs = property_specs(
        CONFIG.objects["Contact"],
        {"Name": "string", "Email": "email", "Score__c": "double", "AccountId": "reference"},
    )
    row = {
        "Id": "003000000000001AAA",
        "Name": "Ada",
        "Email": "ada@example.com",
        "Score__c": 3.0,
        "AccountId": "001000000000001AAA",
        "SystemModstamp": datetime.now(UTC),
    }
    props = page_properties(specs, row, {"AccountId": ["page-1"]})
    assert props[SALESFORCE_ID_PROPERTY] == {
        "rich_text": [{"type": "text", "text": {"content": "003000000000001AAA"}}]
    }
    assert props["Account"] == {"relation": [{"id": "page-1"}]}
    assert props["Full Name"]["title"][0]["text"]["content"] == "Ada"
    reordered = dict(reversed(list(props.items())))
    assert content_hash(props) == content_hash(reordered)
    assert content_hash(props) != content_hash(
        page_properties(specs, {**row, "Score__c": 4.0}, {"AccountId": ["page-1"]})
    )
