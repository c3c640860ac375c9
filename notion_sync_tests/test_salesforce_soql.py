"""Pure SOQL building: no Salesforce, no Dagster."""

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest

from notion_sync.salesforce import soql

START = datetime(2026, 11, 20, tzinfo=UTC)
END = START + timedelta(days=1)


def test_queryable_fields_drop_compound_parents_and_base64_but_keep_components():
    fields = [
        {"name": "Id", "type": "id"},
        {"name": "BillingAddress", "type": "address"},
        {"name": "BillingCity", "type": "string", "compoundFieldName": "BillingAddress"},
        {"name": "Location__c", "type": "location"},
        {"name": "Location__Latitude__s", "type": "double", "compoundFieldName": "Location__c"},
        {"name": "Body", "type": "base64"},
    ]
    names = [f["name"] for f in soql.queryable_fields(fields)]
    assert names == ["Id", "BillingCity", "Location__Latitude__s"]


def test_datetime_literal_is_utc_and_unquoted():
    assert soql.soql_datetime(START) == "2026-11-20T00:00:00Z"
    plus_two = datetime(2026, 11, 20, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert soql.soql_datetime(plus_two) == "2026-11-20T00:00:00Z"
    with pytest.raises(ValueError, match="no time zone"):
        soql.soql_datetime(datetime(2026, 11, 20))


def test_select_query_is_a_half_open_window_ordered_by_cursor_and_id():
    query = soql.select_query("Account", ["Id", "Name", "SystemModstamp"], START, END)
    assert query == (
        "SELECT Id, Name, SystemModstamp FROM Account WHERE SystemModstamp >= 2026-11-20T00:00:00Z "
        "AND SystemModstamp < 2026-11-21T00:00:00Z ORDER BY SystemModstamp, Id"
    )
    assert "ORDER BY" not in soql.select_query("Account", ["Id"], START, END, ordered=False)


def test_count_query():
    assert soql.count_query("Contact", START, END) == (
        "SELECT COUNT() FROM Contact WHERE SystemModstamp >= 2026-11-20T00:00:00Z "
        "AND SystemModstamp < 2026-11-21T00:00:00Z"
    )


def test_short_field_list_is_one_chunk():
    assert soql.chunk_fields(["Id", "Name", "Phone"]) == [["Id", "Name", "Phone"]]
    assert soql.chunk_fields(["Name"]) == [["Id", "Name"]]


def test_long_field_list_is_split_into_chunks_each_with_id_and_every_field_once():
    fields = ["Id"] + [f"Custom_Text_{i:02d}__c" for i in range(40)]
    chunks = soql.chunk_fields(fields, max_chars=200)
    assert len(chunks) > 1
    assert all(chunk[0] == "Id" for chunk in chunks)
    assert [f for chunk in chunks for f in chunk[1:]] == fields[1:]
    for chunk in chunks:
        assert len(quote(", ".join(chunk))) <= 200
