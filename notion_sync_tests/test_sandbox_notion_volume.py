"""The sandbox Notion server's real-volume behaviours: the 10,000-result query cap, per-minute
timestamps, the seeding admin endpoint, search lag and a page's children."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import requests

from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.notion_store import INCOMPLETE, QUERY_RESULT_CAP
from notion_sync_tests.test_sandbox_notion import make_db, raw, sdk, text, unlimited

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
BY_CREATED = [{"timestamp": "created_time", "direction": "ascending"}]


def rows(count: int) -> list[dict]:
    return [{"Name": {"title": text(f"Row {n}")}} for n in range(count)]


def query_all(sandbox: NotionSandbox, source: str, body: dict) -> tuple[list[dict], list[dict]]:
    """Every page of one paginated query, and each answer's envelope (without ``results``)."""
    results, envelopes, body = [], [], dict(body)
    while True:
        answer = raw(sandbox, "POST", f"/v1/data_sources/{source}/query", json=body).json()
        results += answer.pop("results")
        envelopes.append(answer)
        if not answer["has_more"]:
            return results, envelopes
        body["start_cursor"] = answer["next_cursor"]


def test_a_query_is_cut_at_10000_results_and_says_so(notion_sandbox: NotionSandbox) -> None:
    sandbox = unlimited(notion_sandbox)
    source = make_db(sdk(sandbox), sandbox, "Big", {"Name": {"title": {}}})
    ids = sandbox.seed_pages(source, rows(QUERY_RESULT_CAP + 150), START)
    results, envelopes = query_all(sandbox, source, {"sorts": BY_CREATED})
    assert len(results) == QUERY_RESULT_CAP == len({page["id"] for page in results})
    last = envelopes[-1]
    assert (last["has_more"], last["next_cursor"], last["request_status"]) == (False, None, INCOMPLETE)
    assert all(envelope["request_status"] == INCOMPLETE for envelope in envelopes)
    # A filter that keeps the query under the cap reads the rest, with no incomplete status.
    since = results[-1]["created_time"]
    flt = {"timestamp": "created_time", "created_time": {"on_or_after": since}}
    rest, envelopes = query_all(sandbox, source, {"filter": flt, "sorts": BY_CREATED})
    assert "request_status" not in envelopes[-1]
    assert {page["id"] for page in results} | {page["id"] for page in rest} == set(ids)


def test_seeded_pages_share_minutes_and_sort_by_minute_only(notion_sandbox: NotionSandbox) -> None:
    sandbox = unlimited(notion_sandbox)
    source = make_db(sdk(sandbox), sandbox, "Seeded", {"Name": {"title": {}}})
    response = requests.post(
        f"{sandbox.url}/_sandbox/seed",
        json={"data_source_id": source, "pages": rows(500), "start": START.isoformat(), "per_minute": 180},
        timeout=30,
    )
    ids = response.json()["ids"]
    assert len(ids) == 500
    results, _ = query_all(sandbox, source, {"sorts": BY_CREATED})
    minutes = Counter(page["created_time"] for page in results)
    assert minutes == {
        "2026-11-02T09:00:00.000Z": 180,
        "2026-11-02T09:01:00.000Z": 180,
        "2026-11-02T09:02:00.000Z": 140,
    }
    assert [page["created_time"] for page in results] == sorted(minutes.elements())
    # Within a minute the order is not the order of creation (Notion keeps none).
    first_minute = [page["id"] for page in results[:180]]
    assert first_minute not in (ids[:180], sorted(ids[:180]))
    assert {page["id"] for page in results[:180]} == set(ids[:180])
    flt = {"timestamp": "created_time", "created_time": {"on_or_after": "2026-11-02T09:01:00.000Z"}}
    later, _ = query_all(sandbox, source, {"filter": flt, "sorts": BY_CREATED})
    assert {page["id"] for page in later} == set(ids[180:])


def test_pages_created_through_the_api_have_minute_timestamps(notion_sandbox: NotionSandbox) -> None:
    sandbox = unlimited(notion_sandbox)
    client = sdk(sandbox)
    source = make_db(client, sandbox, "Minutes", {"Name": {"title": {}}})
    page = client.pages.create(parent={"data_source_id": source}, properties=rows(1)[0])
    created = datetime.fromisoformat(page["created_time"])
    assert created.second == 0 and created.microsecond == 0
    assert datetime.now(UTC) - created < timedelta(minutes=1, seconds=5)


def test_search_lags_for_new_databases_but_children_do_not(notion_sandbox: NotionSandbox) -> None:
    sandbox = unlimited(notion_sandbox)  # speed 50: the default 60 s lag is 1.2 s of real time
    client = sdk(sandbox)
    database = client.databases.create(
        parent={"type": "page_id", "page_id": sandbox.parent_page_id},
        title=text("Fresh"),
        initial_data_source={"properties": {"Name": {"title": {}}}},
    )
    search = {"query": "Fresh", "filter": {"property": "object", "value": "data_source"}}
    assert raw(sandbox, "POST", "/v1/search", json=search).json()["results"] == []
    children = raw(sandbox, "GET", f"/v1/blocks/{sandbox.parent_page_id}/children").json()
    assert children["type"] == "block" and children["has_more"] is False
    [block] = children["results"]
    assert block["id"] == database["id"] and block["type"] == "child_database"
    assert block["child_database"] == {"title": "Fresh"}
    assert block["parent"] == {"type": "page_id", "page_id": sandbox.parent_page_id}
    sandbox.set_search_lag(0)
    [found] = raw(sandbox, "POST", "/v1/search", json=search).json()["results"]
    assert found["parent"]["database_id"] == database["id"]
    client.blocks.delete(block_id=database["id"])
    assert raw(sandbox, "GET", f"/v1/blocks/{sandbox.parent_page_id}/children").json()["results"] == []


def test_children_are_paginated(notion_sandbox: NotionSandbox) -> None:
    sandbox = unlimited(notion_sandbox)
    client = sdk(sandbox)
    made = [
        client.pages.create(parent={"page_id": sandbox.parent_page_id}, properties={"title": text(f"P{n}")})
        for n in range(3)
    ]
    made.append(
        client.databases.create(
            parent={"type": "page_id", "page_id": sandbox.parent_page_id},
            title=text("Db"),
            initial_data_source={"properties": {"Name": {"title": {}}}},
        )
    )
    seen, cursor = [], None
    while True:
        params = {"page_size": 3, **({"start_cursor": cursor} if cursor else {})}
        page = raw(sandbox, "GET", f"/v1/blocks/{sandbox.parent_page_id}/children", params=params).json()
        seen += [(block["type"], block["id"]) for block in page["results"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == [("child_page", m["id"]) for m in made[:3]] + [("child_database", made[3]["id"])]
