"""The sandbox Notion server, driven by the official SDK (notion-client 3.1) and by raw HTTP."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests
from notion_client import APIResponseError, Client
from notion_client.client import RetryOptions
from notion_client.helpers import collect_paginated_api

from notion_sync.sandbox.notion_server import NotionSandbox


def sdk(sandbox: NotionSandbox, **options: Any) -> Client:
    """The official client; retry delays capped so a Retry-After of 1 (virtual) s costs 20 ms."""
    options.setdefault("retry", RetryOptions(max_retries=5, max_retry_delay_ms=20))
    return Client(auth=sandbox.token, base_url=sandbox.url, **options)


def text(value: str) -> list[dict]:
    return [{"text": {"content": value}}]


def raw(
    sandbox: NotionSandbox,
    method: str,
    path: str,
    version: str | None = "2025-09-03",
    token: str | None = None,
    **kwargs: Any,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or sandbox.token}"}
    if version:
        headers["Notion-Version"] = version
    kwargs.setdefault("timeout", 10)
    return requests.request(method, sandbox.url + path, headers=headers, **kwargs)


def make_db(client: Client, sandbox: NotionSandbox, title: str, properties: dict) -> str:
    db = client.databases.create(
        parent={"type": "page_id", "page_id": sandbox.parent_page_id},
        title=text(title),
        initial_data_source={"properties": properties},
    )
    return db["data_sources"][0]["id"]


def unlimited(sandbox: NotionSandbox) -> NotionSandbox:
    sandbox.set_rate(rps=10_000, burst=10_000)
    return sandbox


@pytest.fixture
def crm(notion_sandbox: NotionSandbox) -> tuple[NotionSandbox, Client, str, str]:
    """Accounts and Contacts data sources; Contacts has every property type the sync uses."""
    sandbox = unlimited(notion_sandbox)
    client = sdk(sandbox)
    accounts = make_db(
        client, sandbox, "Accounts", {"Name": {"title": {}}, "Salesforce Id": {"rich_text": {}}}
    )
    contacts = make_db(
        client,
        sandbox,
        "Contacts",
        {
            "Name": {"title": {}},
            "Salesforce Id": {"rich_text": {}},
            "Score": {"number": {"format": "number"}},
            "Stage": {"select": {"options": [{"name": "New", "color": "blue"}]}},
            "Tags": {"multi_select": {}},
            "Birthday": {"date": {}},
            "Active": {"checkbox": {}},
            "Site": {"url": {}},
            "Mail": {"email": {}},
            "Phone": {"phone_number": {}},
            "Account": {"relation": {"data_source_id": accounts, "single_property": {}}},
            "Created": {"created_time": {}},
        },
    )
    return sandbox, client, accounts, contacts


def contact(client: Client, contacts: str, sf_id: str, **props: Any) -> dict:
    properties = {"Name": {"title": text(f"Contact {sf_id}")}, "Salesforce Id": {"rich_text": text(sf_id)}}
    properties.update(props)
    return client.pages.create(
        parent={"type": "data_source_id", "data_source_id": contacts}, properties=properties
    )


def api_error(call: Any, *args: Any, **kwargs: Any) -> APIResponseError:
    with pytest.raises(APIResponseError) as info:
        call(*args, **kwargs)
    return info.value


# ----------------------------------------------------------------------------------------- CRUD


def test_database_schema_and_discovery(crm: tuple) -> None:
    sandbox, client, accounts, contacts = crm
    source = client.data_sources.retrieve(contacts)
    assert source["object"] == "data_source"
    props = source["properties"]
    assert props["Name"] == {"id": "title", "name": "Name", "description": None, "type": "title", "title": {}}
    assert props["Account"]["relation"]["data_source_id"] == accounts
    assert props["Stage"]["select"]["options"][0]["name"] == "New"
    db = client.databases.retrieve(source["parent"]["database_id"])
    assert db["data_sources"] == [{"id": contacts, "name": "Contacts"}]
    assert "properties" not in db
    assert db["parent"] == {"type": "page_id", "page_id": sandbox.parent_page_id}

    updated = client.data_sources.update(
        contacts,
        properties={
            "Score": {"name": "Rating"},
            "Phone": None,
            "Region": {"select": {"options": [{"name": "EMEA"}]}},
        },
    )
    assert "Rating" in updated["properties"] and "Score" not in updated["properties"]
    assert updated["properties"]["Rating"]["id"] == props["Score"]["id"]
    assert "Phone" not in updated["properties"]
    assert updated["properties"]["Region"]["select"]["options"][0]["name"] == "EMEA"
    err = api_error(client.data_sources.update, contacts, properties={"Second": {"title": {}}})
    assert err.code == "validation_error"


def test_page_create_retrieve_query_update_trash(crm: tuple) -> None:
    sandbox, client, accounts, contacts = crm
    acme = client.pages.create(
        parent={"data_source_id": accounts},
        properties={"Name": {"title": text("Acme")}, "Salesforce Id": {"rich_text": text("001A")}},
    )
    page = contact(
        client,
        contacts,
        "003A",
        Score={"number": 42.5},
        Stage={"select": {"name": "Won"}},
        Tags={"multi_select": [{"name": "EMEA"}, {"name": "VIP"}]},
        Birthday={"date": {"start": "2026-12-01T09:00:00", "time_zone": "Europe/Berlin"}},
        Active={"checkbox": True},
        Site={"url": "https://acme.example"},
        Mail={"email": "a@acme.example"},
        Phone={"phone_number": "+1 555 0100"},
        Account={"relation": [{"id": acme["id"].replace("-", "")}]},
    )
    props = page["properties"]
    assert page["parent"] == {
        "type": "data_source_id",
        "data_source_id": contacts,
        "database_id": page["parent"]["database_id"],
    }
    assert props["Salesforce Id"]["rich_text"][0]["plain_text"] == "003A"
    assert props["Stage"]["select"]["name"] == "Won"  # unknown option auto-created
    assert [t["name"] for t in props["Tags"]["multi_select"]] == ["EMEA", "VIP"]
    assert props["Birthday"]["date"] == {
        "start": "2026-12-01T09:00:00.000+01:00",
        "end": None,
        "time_zone": None,
    }
    assert props["Account"] == {
        "id": props["Account"]["id"],
        "type": "relation",
        "relation": [{"id": acme["id"]}],
        "has_more": False,
    }
    assert page["created_time"].endswith(":00.000Z")
    contact(client, contacts, "003B", Score={"number": 7}, Active={"checkbox": False})
    contact(client, contacts, "003C", Stage={"select": {"name": "New"}})

    assert client.pages.retrieve(page["id"].replace("-", ""))["id"] == page["id"]

    def query(flt: dict) -> list[str]:
        results = client.data_sources.query(contacts, filter=flt)["results"]
        return sorted(p["properties"]["Salesforce Id"]["rich_text"][0]["plain_text"] for p in results)

    assert query({"property": "Salesforce Id", "rich_text": {"equals": "003B"}}) == ["003B"]
    assert query({"property": "Score", "number": {"greater_than": 10}}) == ["003A"]
    assert query({"property": "Active", "checkbox": {"equals": True}}) == ["003A"]
    assert query({"property": "Stage", "select": {"equals": "New"}}) == ["003C"]
    assert query({"property": "Birthday", "date": {"before": "2027-01-01"}}) == ["003A"]
    assert query({"property": "Mail", "email": {"is_empty": True}}) == ["003B", "003C"]
    assert query({"property": "Name", "title": {"starts_with": "contact 003"}}) == ["003A", "003B", "003C"]
    assert query(
        {
            "or": [
                {"property": "Score", "number": {"equals": 7}},
                {
                    "and": [
                        {"property": "Salesforce Id", "rich_text": {"equals": "003C"}},
                        {"property": "Tags", "multi_select": {"is_empty": True}},
                    ]
                },
            ]
        }
    ) == ["003B", "003C"]
    too_deep = {"and": [{"or": [{"and": [{"property": "Score", "number": {"equals": 1}}]}]}]}
    assert api_error(client.data_sources.query, contacts, filter=too_deep).code == "validation_error"
    ordered = client.data_sources.query(contacts, sorts=[{"property": "Score", "direction": "descending"}])
    assert [p["properties"]["Score"]["number"] for p in ordered["results"]] == [42.5, 7, None]
    slim = client.data_sources.query(contacts, filter_properties=[props["Score"]["id"]])["results"][0]
    assert list(slim["properties"]) == ["Score"]

    updated = client.pages.update(
        page["id"], properties={"Score": {"number": None}, "Tags": {"multi_select": []}}
    )
    assert updated["properties"]["Score"]["number"] is None
    assert updated["properties"]["Tags"]["multi_select"] == []
    assert client.pages.update(page["id"], in_trash=True)["in_trash"] is True
    assert query({"property": "Salesforce Id", "rich_text": {"equals": "003A"}}) == []
    assert client.pages.retrieve(page["id"])["in_trash"] is True
    err = api_error(client.pages.update, page["id"], properties={"Score": {"number": 1}})
    assert err.code == "validation_error" and "archived" in str(err)
    assert sandbox.pages(contacts, include_trashed=True)[0]["id"] == page["id"]
    assert len(sandbox.pages(contacts)) == 2

    block = client.blocks.delete(acme["id"])
    assert (block["object"], block["in_trash"], block["type"]) == ("block", True, "child_page")
    assert client.search(query="Contact 003B")["results"][0]["properties"]["Score"]["number"] == 7


def test_pagination_over_100_pages(notion_sandbox: NotionSandbox) -> None:
    sandbox = unlimited(notion_sandbox)
    client = sdk(sandbox)
    source = make_db(client, sandbox, "Many", {"Name": {"title": {}}})
    created = [
        client.pages.create(parent={"data_source_id": source}, properties={"Name": {"title": text(f"p{i}")}})[
            "id"
        ]
        for i in range(230)
    ]
    first = client.data_sources.query(source)
    assert len(first["results"]) == 100 and first["has_more"] and first["next_cursor"]
    pages = collect_paginated_api(client.data_sources.query, data_source_id=source, page_size=60)
    assert [p["id"] for p in pages] == created
    assert api_error(client.data_sources.query, source, page_size=101).code == "validation_error"
    assert api_error(client.data_sources.query, source, start_cursor="nope").code == "validation_error"


def test_relation_read_cap_and_property_item_pagination(crm: tuple) -> None:
    _, client, accounts, contacts = crm
    targets = [
        client.pages.create(
            parent={"data_source_id": accounts}, properties={"Name": {"title": text(f"a{i}")}}
        )["id"]
        for i in range(60)
    ]
    page = contact(client, contacts, "003R", Account={"relation": [{"id": t} for t in targets]})
    relation = client.pages.retrieve(page["id"])["properties"]["Account"]
    assert len(relation["relation"]) == 25 and relation["has_more"] is True
    items = collect_paginated_api(
        client.pages.properties.retrieve, page_id=page["id"], property_id=relation["id"], page_size=25
    )
    assert [i["relation"]["id"] for i in items] == targets
    title = client.pages.properties.retrieve(page["id"], "title")
    assert title["type"] == "property_item" and title["results"][0]["title"]["plain_text"] == "Contact 003R"
    assert (
        client.pages.properties.retrieve(page["id"], page["properties"]["Active"]["id"])["checkbox"] is False
    )
    too_many = [{"id": t} for t in targets] * 2
    err = api_error(contact, client, contacts, "003S", Account={"relation": too_many})
    assert "relation.length should be ≤ `100`, instead was `120`" in str(err)


# ----------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("props", "message"),
    [
        (
            {"Name": {"title": text("x" * 2345)}},
            "body failed validation: body.properties.Name.title[0].text.content.length should be ≤ `2000`, "
            "instead was `2345`.",
        ),
        (
            {"Salesforce Id": {"rich_text": text("x") * 101}},
            "rich_text.length should be ≤ `100`, instead was `101`",
        ),
        ({"Site": {"url": "https://x/" + "y" * 2000}}, "url.length should be ≤ `2000`"),
        ({"Mail": {"email": "a@" + "b" * 199}}, "email.length should be ≤ `200`, instead was `201`"),
        ({"Mail": {"email": "not-an-address"}}, "body.properties.Mail.email should be an email address"),
        ({"Phone": {"phone_number": "1" * 201}}, "phone_number.length should be ≤ `200`"),
        (
            {"Tags": {"multi_select": [{"name": f"t{i}"} for i in range(101)]}},
            "multi_select.length should be ≤ `100`",
        ),
        (
            {"Stage": {"select": {"name": "s" * 101}}},
            "select.name.length should be ≤ `100`, instead was `101`",
        ),
        ({"Nope": {"rich_text": text("x")}}, "Nope is not a property that exists."),
        ({"Score": {"rich_text": text("x")}}, "Score is expected to be number."),
        ({"Score": {"number": "12"}}, "body.properties.Score.number should be a number or `null`"),
        ({"Created": {"created_time": "2026-01-01T00:00:00Z"}}, "Cannot update property Created"),
        (
            {"Birthday": {"date": {"start": "2026-01-01", "time_zone": "Europe/Berlin"}}},
            "without a UTC offset",
        ),
        (
            {"Birthday": {"date": {"start": "2026-01-01T10:00:00+02:00", "time_zone": "Europe/Berlin"}}},
            "without a UTC offset",
        ),
        ({"Birthday": {"date": {"start": "yesterday"}}}, "should be a valid ISO 8601 date string"),
    ],
)
def test_validation_errors(crm: tuple, props: dict, message: str) -> None:
    _, client, _, contacts = crm
    err = api_error(contact, client, contacts, "003V", **props)
    assert (err.status, err.code) == (400, "validation_error")
    assert message in str(err)


def test_relation_target_must_belong_to_related_source(crm: tuple) -> None:
    _, client, _, contacts = crm
    other = contact(client, contacts, "003X")
    err = api_error(contact, client, contacts, "003Y", Account={"relation": [{"id": other["id"]}]})
    assert err.code == "validation_error" and "should be a page of data source" in str(err)


def test_http_level_errors(notion_sandbox: NotionSandbox) -> None:
    sandbox = notion_sandbox
    bad = raw(sandbox, "GET", "/v1/users", token="ntn_wrong")
    assert bad.status_code == 401
    assert set(bad.json()) == {"object", "status", "code", "message", "request_id"}
    assert (bad.json()["code"], bad.json()["message"]) == ("unauthorized", "API token is invalid.")
    missing = raw(sandbox, "GET", "/v1/users", version=None)
    assert (missing.status_code, missing.json()["code"]) == (400, "missing_version")
    legacy = raw(sandbox, "GET", "/v1/users", version="2022-06-28")
    assert legacy.status_code == 400 and "data source" in legacy.json()["message"]
    assert raw(sandbox, "GET", "/v1/users", version="1999-01-01").status_code == 400
    url = raw(sandbox, "GET", "/v1/invalid")
    assert (url.status_code, url.json()["code"], url.json()["message"]) == (
        400,
        "invalid_request_url",
        "Invalid request URL.",
    )
    bad_json = raw(sandbox, "POST", "/v1/search", data=b"{nope")
    assert (bad_json.status_code, bad_json.json()["code"]) == (400, "invalid_json")
    big = raw(
        sandbox,
        "POST",
        "/v1/pages",
        json={"parent": {"page_id": sandbox.parent_page_id}, "filler": "x" * 600_000},
    )
    assert big.status_code == 413
    missing_id = "0" * 32
    gone = raw(sandbox, "GET", f"/v1/pages/{missing_id}")
    assert (gone.status_code, gone.json()["code"]) == (404, "object_not_found")
    assert gone.json()["message"].startswith(
        "Could not find page with ID: 00000000-0000-0000-0000-000000000000."
    )
    client = sdk(sandbox)
    assert api_error(client.pages.retrieve, "1" * 32).code == "object_not_found"
    assert api_error(Client(auth="ntn_wrong", base_url=sandbox.url).users.me).code == "unauthorized"


def test_version_2026_rejects_archived(crm: tuple) -> None:
    sandbox, client, _, contacts = crm
    page = contact(client, contacts, "003Z")
    assert page["archived"] is False
    new = sdk(sandbox, notion_version="2026-03-11")
    err = api_error(new.pages.update, page["id"], archived=True)
    assert err.code == "validation_error" and "in_trash" in str(err)
    trashed = new.pages.update(page["id"], in_trash=True)
    assert trashed["in_trash"] is True and "archived" not in trashed
    assert "archived" not in new.data_sources.retrieve(contacts)
    assert (
        client.pages.update(page["id"], archived=False)["in_trash"] is False
    )  # still accepted in 2025-09-03


def test_real_write_answers_trash_block_limit_and_committed_503(notion_sandbox: NotionSandbox) -> None:
    """A page trashed in the app refuses edits and a second trashing (400); creates past the block
    limit answer 403; a committed 503 says so in additional_data."""
    sandbox = unlimited(notion_sandbox)
    client = sdk(sandbox)
    source = make_db(client, sandbox, "T", {"Name": {"title": {}}})
    page = client.pages.create(parent={"data_source_id": source}, properties={"Name": {"title": text("a")}})
    sandbox.trash_page(page["id"])
    for body in ({"properties": {"Name": {"title": text("b")}}}, {"in_trash": True}):
        refused = raw(sandbox, "PATCH", f"/v1/pages/{page['id']}", json=body)
        assert (refused.status_code, refused.json()["code"], refused.json()["message"]) == (
            400,
            "validation_error",
            "Can't edit block that is archived. You must unarchive the block before editing.",
        )
    restore = {"in_trash": False, "properties": {"Name": {"title": text("b")}}}
    restored = raw(sandbox, "PATCH", f"/v1/pages/{page['id']}", json=restore)
    assert restored.status_code == 200 and restored.json()["in_trash"] is False

    sandbox.inject(status=503, method="POST", path_prefix="/v1/pages", committed=True)
    create = {"parent": {"data_source_id": source}, "properties": {"Name": {"title": text("c")}}}
    saved = raw(sandbox, "POST", "/v1/pages", json=create)
    extra = saved.json()["additional_data"]
    assert saved.status_code == 503 and "Do not repeat the write." in extra["retry_guidance"]
    assert (
        client.pages.retrieve(extra["committed_resource_id"])["properties"]["Name"]["title"][0]["plain_text"]
        == "c"
    )

    sandbox.set_block_limit(4)  # root page, database, 2 pages: the limit is reached
    full = raw(sandbox, "POST", "/v1/pages", json=create)
    assert (full.status_code, full.json()["code"]) == (403, "restricted_resource")
    assert "block limit" in full.json()["message"]
    assert raw(sandbox, "PATCH", f"/v1/pages/{page['id']}", json={"in_trash": True}).status_code == 200


# ----------------------------------------------------------------------------------------- rate limit / speed


def test_sdk_retries_rate_limited_and_server_counts_429(notion_sandbox: NotionSandbox) -> None:
    sandbox = notion_sandbox
    sandbox.set_rate(rps=3, burst=2)
    client = sdk(sandbox)
    for _ in range(12):  # each retry waits min(Retry-After, 20 ms): refill 3 x 50 per real second
        client.users.me()
    stats = sandbox.stats()
    assert stats["rate_limited"] > 0
    assert stats["requests_by_route"]["GET /v1/users/me"]["200"] == 12
    assert stats["requests_by_status"]["429"] == stats["rate_limited"]


def test_429_envelope_and_retry_after_in_virtual_seconds() -> None:
    with NotionSandbox(rps=0.1, burst=1, speed=100) as sandbox:
        assert raw(sandbox, "GET", "/v1/users/me").status_code == 200
        limited = raw(sandbox, "GET", "/v1/users/me")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "10"  # 1 token per 10 virtual seconds
        assert limited.json() == {
            "object": "error",
            "status": 429,
            "code": "rate_limited",
            "message": "You have been rate limited. Please try again in a few minutes.",
            "request_id": limited.json()["request_id"],
            "additional_data": {"rate_limit_reason": "public_api_request_rate_limit", "retry_after": 10},
        }
        time.sleep(10 / 100 + 0.02)  # the client divides Retry-After by NOTION_TIME_SCALE
        assert raw(sandbox, "GET", "/v1/users/me").status_code == 200
        assert sandbox.env()["NOTION_TIME_SCALE"] == "100.0"


def test_rate_limiter_is_exact_under_concurrency() -> None:
    burst = 17
    with NotionSandbox(rps=0.001, burst=burst) as sandbox:  # no refill during the test
        statuses: Counter[int] = Counter()
        lock = threading.Lock()

        def worker() -> None:
            with requests.Session() as session:
                headers = {"Authorization": f"Bearer {sandbox.token}", "Notion-Version": "2025-09-03"}
                for _ in range(10):
                    status = session.get(
                        sandbox.url + "/v1/users/me", headers=headers, timeout=10
                    ).status_code
                    with lock:
                        statuses[status] += 1

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == {200: burst, 429: 80 - burst}
        assert sandbox.stats()["rate_limited"] == 80 - burst


def test_refill_follows_speed_and_stats_report_virtual_rate() -> None:
    rps, speed, burst = 5.0, 40.0, 3
    with NotionSandbox(rps=rps, burst=burst, speed=speed) as sandbox, requests.Session() as session:
        headers = {"Authorization": f"Bearer {sandbox.token}", "Notion-Version": "2025-09-03"}
        start = time.monotonic()
        ok = 0
        while time.monotonic() - start < 0.5:
            ok += session.get(sandbox.url + "/v1/users/me", headers=headers).status_code == 200
        elapsed = time.monotonic() - start
        assert burst + rps * speed * elapsed * 0.7 <= ok <= burst + rps * speed * elapsed + 1
        stats = sandbox.stats()
        assert stats["achieved_rps_virtual"] == pytest.approx(stats["achieved_rps_real"] / speed, rel=0.05)
        assert stats["achieved_rps_virtual"] <= rps * 1.5


def test_workspace_limit_is_shared_between_tokens() -> None:
    with NotionSandbox(rps=100, burst=100, workspace_rps=0.001) as sandbox:
        sandbox.set_rate(burst=4)
        sandbox.add_token("ntn_second")
        codes = [
            raw(sandbox, "GET", "/v1/users/me", token=tok).status_code
            for tok in [sandbox.token, "ntn_second"] * 3
        ]
        assert codes == [200, 200, 200, 200, 429, 429]
        limited = raw(sandbox, "GET", "/v1/users/me")
        assert limited.json()["additional_data"] == {
            "rate_limit_reason": "public_api_space_request_rate_limit",
            "retry_after": 1000,
        }


def test_latency_is_scaled_by_speed() -> None:
    with NotionSandbox(latency_ms=1000, speed=100, burst=100) as sandbox:
        start = time.monotonic()
        raw(sandbox, "GET", "/v1/users/me")
        assert 0.009 <= time.monotonic() - start < 0.5


# ----------------------------------------------------------------------------------------- faults


def test_injected_faults(crm: tuple) -> None:
    sandbox, client, _, contacts = crm
    sandbox.inject(status=500, path_prefix="/v1/pages", method="POST")
    err = api_error(contact, client, contacts, "003F")  # the SDK never retries a POST on 5xx
    assert (err.status, err.code) == (500, "internal_server_error")
    assert sandbox.pages(contacts) == []

    sandbox.inject(status=503, method="GET")
    assert client.data_sources.retrieve(contacts)["id"] == contacts  # GET is retried by the SDK

    sandbox.inject(status=529, retry_after=3)
    overloaded = raw(sandbox, "GET", "/v1/users/me")
    assert (overloaded.status_code, overloaded.json()["code"]) == (529, "service_overload")
    assert overloaded.headers["Retry-After"] == "3"
    assert sandbox.stats()["faults_injected"] == 3


def test_apply_write_fault_is_the_duplicate_trap(crm: tuple) -> None:
    sandbox, client, _, contacts = crm
    sandbox.inject(status=500, path_prefix="/v1/pages", method="POST", apply_write=True)
    err = api_error(contact, client, contacts, "003D")
    assert err.status == 500
    assert [
        p["properties"]["Salesforce Id"]["rich_text"][0]["plain_text"] for p in sandbox.pages(contacts)
    ] == ["003D"]
    contact(client, contacts, "003D")  # a naive retry creates a duplicate
    dup = sandbox.stats()["duplicates"]
    assert dup[contacts]["count"] == 1 and len(dup[contacts]["ids"]["003D"]) == 2
    assert sandbox.stats()["duplicates_total"] == 1
    client.pages.update(dup[contacts]["ids"]["003D"][1], in_trash=True)
    assert sandbox.stats()["duplicates"] == {}


def test_timeouts(crm: tuple) -> None:
    sandbox, client, _, contacts = crm
    body = {
        "parent": {"data_source_id": contacts},
        "properties": {"Salesforce Id": {"rich_text": text("003T")}},
    }
    sandbox.inject_timeout(seconds=None, path_prefix="/v1/pages")
    with pytest.raises(requests.Timeout):
        raw(sandbox, "POST", "/v1/pages", json=body, timeout=0.3)
    assert sandbox.pages(contacts) == []

    sandbox.inject_timeout(seconds=0.6, path_prefix="/v1/pages", apply_write=True)
    with pytest.raises(requests.Timeout):
        raw(sandbox, "POST", "/v1/pages", json=body, timeout=0.2)
    assert len(sandbox.pages(contacts)) == 1  # applied although the client saw a timeout
    assert client.data_sources.query(contacts)["results"][0]["id"] == sandbox.pages(contacts)[0]["id"]


# ----------------------------------------------------------------------------------------- admin + scale


def test_admin_endpoints(notion_sandbox: NotionSandbox) -> None:
    sandbox = notion_sandbox
    cfg = requests.post(sandbox.url + "/_sandbox/config", json={"rps": 7, "burst": 20, "speed": 10}).json()
    assert (cfg["rps"], cfg["burst"], cfg["speed"]) == (7, 20, 10)
    assert sandbox.env()["NOTION_TIME_SCALE"] == "10.0"
    pending = requests.post(sandbox.url + "/_sandbox/faults", json={"status": 503, "count": 2}).json()[
        "pending"
    ]
    assert pending[0]["count"] == 2
    assert [raw(sandbox, "GET", "/v1/users/me").status_code for _ in range(3)] == [503, 503, 200]
    stats = requests.get(sandbox.url + "/_sandbox/stats").json()
    assert stats["requests_total"] == 3 and stats["faults_injected"] == 2
    requests.post(sandbox.url + "/_sandbox/faults", json={"timeout": 0.01, "count": 1})
    requests.post(sandbox.url + "/_sandbox/reset", json={})
    assert requests.get(sandbox.url + "/_sandbox/stats").json()["requests_total"] == 0
    assert requests.get(sandbox.url + "/_sandbox/faults").json()["pending"] == []


def test_indexed_lookup_among_many_pages(notion_sandbox: NotionSandbox) -> None:
    sandbox = notion_sandbox
    client = sdk(unlimited(sandbox))
    source = make_db(client, sandbox, "Big", {"Name": {"title": {}}, "Salesforce Id": {"rich_text": {}}})
    for i in range(20_000):  # straight into the model: this test is about lookups, not HTTP
        sandbox.store.create_page(
            {
                "parent": {"data_source_id": source},
                "properties": {"Salesforce Id": {"rich_text": text(f"SF{i:06d}")}},
            },
            "2025-09-03",
        )
    found = client.data_sources.query(
        source, filter={"property": "Salesforce Id", "rich_text": {"equals": "SF012345"}}, page_size=1
    )
    assert len(found["results"]) == 1 and not found["has_more"]
    assert sandbox.stats()["pages_by_data_source"][source]["pages"] == 20_000
