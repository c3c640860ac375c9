"""Property mapping: Salesforce describe types → Notion schemas, values fitted to Notion's limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from notion_sync.config import SALESFORCE_ID_PROPERTY, parse_config
from notion_sync.notion.properties import (
    FOUND_PREFIX,
    PropertySpec,
    content_hash,
    database_properties,
    found_hash,
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


@pytest.mark.parametrize(
    "text", ["a" + "😀" * 1500, "ab" + "😀" * 2100 + "é" * 3, "x" * 4001, "😀" + "y" * 1999]
)
def test_text_split_never_cuts_a_surrogate_pair_whatever_the_alignment(text: str) -> None:
    contents = [c["text"]["content"] for c in rich_text(text)]
    assert "".join(contents) == text
    units = [len(c.encode("utf-16-le")) // 2 for c in contents]
    assert all(0 < u <= 2000 for u in units) and all(u >= 1999 for u in units[:-1])


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


def _as_notion_returns(spec: PropertySpec, value: dict) -> dict:
    """A request value as real Notion echoes it on a page (shapes of the recorded responses)."""
    kind, body = spec.type, value[spec.type]
    annotations = {"bold": False, "italic": False, "strikethrough": False, "underline": False, "code": False}
    if kind in ("title", "rich_text"):
        body = [
            {
                **item,
                "text": {**item["text"], "link": None},
                "annotations": {**annotations, "color": "default"},
                "plain_text": item["text"]["content"],
                "href": None,
            }
            for item in body
        ]
    elif kind == "number" and body is not None and body == int(body):
        body = int(body)  # 12500.0 comes back as 12500
    elif kind == "date" and body:
        start = body["start"]
        if "T" in start:  # Notion answers 2026-11-20T12:00:00.123+00:00
            start = datetime.fromisoformat(start).isoformat(timespec="milliseconds")
        body = {"start": start, "end": None, "time_zone": None}
    elif kind == "select" and body:
        body = {"id": "abcd", "name": body["name"], "color": "blue"}
    elif kind == "multi_select":
        body = [{"id": f"id{i}", "name": option["name"], "color": "gray"} for i, option in enumerate(body)]
    elif kind == "relation":
        body = [{"id": f"page-{item['id']}"} for item in body]
        return {"id": "rel", "type": kind, kind: body, "has_more": False}
    return {"id": "prop", "type": kind, kind: body}


def test_a_page_read_back_from_notion_has_the_found_hash_of_its_payload():
    specs = [
        notion_property_spec("Name", "Name", "string", title=True),
        notion_property_spec("Notes", "Notes", "textarea"),
        notion_property_spec("Revenue", "Revenue", "currency"),
        notion_property_spec("Share", "Share", "percent"),
        notion_property_spec("Seen", "Seen", "datetime"),
        notion_property_spec("Born", "Born", "date"),
        notion_property_spec("Stage", "Stage", "picklist"),
        notion_property_spec("Regions", "Regions", "multipicklist"),
        notion_property_spec("Active", "Active", "boolean"),
        notion_property_spec("Site", "Site", "url"),
        notion_property_spec("AccountId", "Account", "reference", relation_to="Account"),
    ]
    row = {
        "Id": "003000000000000001",
        "Name": "Ada",
        "Notes": "x" * 4500,
        "Revenue": 12500.0,
        "Share": 12.5,
        "Seen": datetime(2026, 11, 20, 12, 0, 0, 123000, tzinfo=UTC),
        "Born": date(1990, 1, 2),
        "Stage": "Won",
        "Regions": "EMEA;APAC",
        "Active": True,
        "Site": None,
        "AccountId": "001000000000000009",
    }
    payload = page_properties(specs, row, {"AccountId": [row["AccountId"]]})
    page = {name: _as_notion_returns(spec, payload[name]) for spec in specs for name in [spec.name]}
    page[SALESFORCE_ID_PROPERTY] = _as_notion_returns(
        notion_property_spec("Id", SALESFORCE_ID_PROPERTY, "string"), payload[SALESFORCE_ID_PROPERTY]
    )
    parents = {"page-001000000000000009": "001000000000000009"}
    assert found_hash(specs, page, parents) == found_hash(specs, payload)
    assert found_hash(specs, page, parents).startswith(FOUND_PREFIX)
    for changed in (
        {"Revenue": 12500.5},
        {"Notes": "y"},
        {"Seen": datetime(2026, 11, 20, 12, tzinfo=UTC)},
        {"Regions": "EMEA"},
        {"AccountId": "001000000000000008"},
    ):
        other = page_properties(specs, {**row, **changed}, {"AccountId": [{**row, **changed}["AccountId"]]})
        assert found_hash(specs, other) != found_hash(specs, page, parents), changed
    assert found_hash(specs, page, {}) != found_hash(specs, payload)  # an unknown related page
    page["Account"]["has_more"] = True
    assert found_hash(specs, page, parents) != found_hash(specs, payload)  # cut off at 25 references
