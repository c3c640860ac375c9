"""The sandbox Salesforce, exercised through the real simple-salesforce client over HTTPS."""

from __future__ import annotations

import csv
import io
import re
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from notion_sync.sandbox import soql
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.sandbox.sf_data import DataError, SalesforceData, case_safe_id, make_id, parse_id

SF_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
ACCOUNT_FIELDS = "Id, Name, Type, AnnualRevenue, NumberOfEmployees, Regions__c, Active__c, SystemModstamp"
ALL_ACCOUNT_FIELDS = ", ".join(f.name for f in SalesforceData(1).sobjects["Account"].fields)


def client(sandbox: SalesforceSandbox, session_id: str | None = None) -> Salesforce:
    session = requests.Session()
    session.verify = str(sandbox.ca_file)
    # requests lets REQUESTS_CA_BUNDLE (set on many machines) override session.verify.
    session.trust_env = False
    return Salesforce(
        instance_url=sandbox.url, session_id=session_id or sandbox.session_id, session=session, version="62.0"
    )


@pytest.fixture(scope="module")
def sf(salesforce_sandbox: SalesforceSandbox) -> Salesforce:
    return client(salesforce_sandbox)


@pytest.fixture
def own_sandbox(tmp_path: Path) -> Iterator[SalesforceSandbox]:
    """A private sandbox for tests that edit data, faults or the budget."""
    with SalesforceSandbox(records=150, seed=11, workdir=tmp_path) as sandbox:
        yield sandbox


def bulk_rows(pages: Iterator[str]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for page in pages:
        rows.extend(csv.DictReader(io.StringIO(page)))
    return rows


# ------------------------------------------------------------------------------------ transport


def test_https_with_generated_ca(salesforce_sandbox: SalesforceSandbox) -> None:
    env = salesforce_sandbox.env()
    assert env["SALESFORCE_INSTANCE_URL"] == salesforce_sandbox.url.rstrip("/")
    assert env["SALESFORCE_INSTANCE_URL"].startswith("https://127.0.0.1:")
    assert Path(env["SALESFORCE_CA_BUNDLE"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    versions = requests.get(f"{salesforce_sandbox.url}/services/data/", verify=env["SALESFORCE_CA_BUNDLE"])
    listed = {v["version"] for v in versions.json()}
    assert {"58.0", "59.0", "60.0", "61.0", "62.0"} <= listed
    assert {"version": "62.0", "label": "Winter '25", "url": "/services/data/v62.0"} in versions.json()
    untrusted = requests.Session()
    untrusted.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        untrusted.get(f"{salesforce_sandbox.url}/services/data/")


def test_login_proxy_tunnels_salesforce_login_hosts_only(salesforce_sandbox: SalesforceSandbox) -> None:
    env = salesforce_sandbox.password_env()
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": env["HTTPS_PROXY"]}
    session.verify = env["SALESFORCE_CA_BUNDLE"]
    # The certificate names the login host: TLS verification passes through the tunnel.
    assert session.get("https://test.salesforce.com/services/data/", timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.ProxyError, match="403"):
        session.get("https://example.com/", timeout=10)
    with pytest.raises(requests.exceptions.ProxyError, match="403"):
        session.get("https://login.salesforce.com:8443/", timeout=10)


def test_bad_session_is_401(salesforce_sandbox: SalesforceSandbox) -> None:
    with pytest.raises(SalesforceExpiredSession) as raised:
        client(salesforce_sandbox, session_id="00Dwrong!token").query("SELECT Id FROM Account")
    assert raised.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


# ---------------------------------------------------------------------------------------- query


def test_query_returns_salesforce_shapes(sf: Salesforce) -> None:
    result = sf.query(
        f"SELECT {ACCOUNT_FIELDS}, BillingAddress FROM Account ORDER BY SystemModstamp, Id LIMIT 50",
        include_deleted=True,  # Accounts 0 and 1 have fixed names; either may be deleted
    )
    assert result["totalSize"] == 50 and result["done"] is True and "nextRecordsUrl" not in result
    first = result["records"][0]
    assert list(first) == ["attributes", *ACCOUNT_FIELDS.split(", "), "BillingAddress"]
    assert first["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v62.0/sobjects/Account/{first['Id']}",
    }
    assert first["Name"] == "Müller & Søn"
    assert result["records"][1]["Name"] == "東京 Trading"
    records = result["records"]
    assert all(SF_DATETIME.match(r["SystemModstamp"]) for r in records)
    assert all(isinstance(r["Active__c"], bool) for r in records)
    assert any(r["AnnualRevenue"] is None for r in records)
    assert all(isinstance(r["AnnualRevenue"], float) for r in records if r["AnnualRevenue"] is not None)
    assert all(isinstance(r["NumberOfEmployees"], int) for r in records if r["NumberOfEmployees"] is not None)
    assert any(";" in (r["Regions__c"] or "") for r in records)
    address = next(r["BillingAddress"] for r in records if r["BillingAddress"])
    assert set(address) == {
        "city",
        "country",
        "geocodeAccuracy",
        "latitude",
        "longitude",
        "postalCode",
        "state",
        "street",
    }
    stamps = [(r["SystemModstamp"], r["Id"]) for r in records]
    assert stamps == sorted(stamps)


def test_query_excludes_deleted_query_all_includes_them(sf: Salesforce) -> None:
    live = sf.query("SELECT COUNT() FROM Account")
    everything = sf.query("SELECT COUNT() FROM Account", include_deleted=True)
    assert live["records"] == [] and live["done"] is True
    assert 0 < everything["totalSize"] - live["totalSize"] < 20  # ~2% of 300
    deleted = sf.query_all("SELECT Id, IsDeleted FROM Account WHERE IsDeleted = true", include_deleted=True)
    assert deleted["totalSize"] == everything["totalSize"] - live["totalSize"]
    assert all(r["IsDeleted"] is True for r in deleted["records"])
    assert sf.query("SELECT Id FROM Account WHERE IsDeleted = true")["totalSize"] == 0


def test_query_more_pages_with_next_records_url(sf: Salesforce) -> None:
    options = {"Sforce-Query-Options": "batchSize=200"}
    first = sf.query("SELECT Id, SystemModstamp FROM Contact ORDER BY SystemModstamp, Id", headers=options)
    assert len(first["records"]) == 200 and first["done"] is False
    assert re.fullmatch(r"/services/data/v62\.0/query/01g\w{15}-200", first["nextRecordsUrl"])
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True, headers=options)
    assert len(second["records"]) == 200
    assert second["nextRecordsUrl"].endswith("-400")
    everything = sf.query_all("SELECT Id, SystemModstamp FROM Contact ORDER BY SystemModstamp, Id")
    ids = [r["Id"] for r in everything["records"]]
    assert len(ids) == len(set(ids)) == first["totalSize"]
    assert ids[:400] == [r["Id"] for r in first["records"] + second["records"]]


def test_aggregate_counts_by_utc_day_as_salesforce_answers_them(sf: Salesforce) -> None:
    query = (
        "SELECT DAY_ONLY(SystemModstamp), COUNT(Id) FROM Account WHERE SystemModstamp >= "
        "2026-11-01T00:00:00Z AND SystemModstamp < 2026-11-21T00:00:00Z GROUP BY DAY_ONLY(SystemModstamp)"
    )
    answer = sf.query(query, include_deleted=True)
    expected: dict[str, int] = {}
    for record in sf.query_all_iter(
        "SELECT SystemModstamp FROM Account WHERE SystemModstamp >= 2026-11-01T00:00:00Z "
        "AND SystemModstamp < 2026-11-21T00:00:00Z",
        include_deleted=True,
    ):
        expected[record["SystemModstamp"][:10]] = expected.get(record["SystemModstamp"][:10], 0) + 1
    assert len(expected) >= 10, expected
    assert answer["done"] is True and answer["totalSize"] == len(answer["records"]) == len(expected)
    assert all(r["attributes"] == {"type": "AggregateResult"} for r in answer["records"])
    assert {r["expr0"]: r["expr1"] for r in answer["records"]} == expected
    # queryAll counts deleted records, query does not
    live = sf.query(query)["records"]
    assert sum(r["expr1"] for r in live) < sum(expected.values())
    # no GROUP BY: one row, even when nothing matches
    empty = sf.query("SELECT COUNT(Id) FROM Account WHERE Name = 'no such name'")
    assert [{k: v for k, v in r.items() if k != "attributes"} for r in empty["records"]] == [{"expr0": 0}]


@pytest.mark.parametrize(
    ("query", "code", "needle"),
    [
        (
            "SELECT SystemModstamp, COUNT(Id) FROM Account GROUP BY SystemModstamp",
            "INVALID_FIELD",
            "field 'SystemModstamp' can not be grouped in a query call",
        ),
        (
            "SELECT Name, COUNT(Id) FROM Account",
            "MALFORMED_QUERY",
            "Field must be grouped or aggregated: Name",
        ),
        (
            "SELECT DAY_ONLY(Name), COUNT(Id) FROM Account GROUP BY DAY_ONLY(Name)",
            "MALFORMED_QUERY",
            "DAY_ONLY",
        ),
    ],
)
def test_aggregate_errors_like_salesforce(sf: Salesforce, query: str, code: str, needle: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(query)
    [error] = raised.value.content
    assert error["errorCode"] == code and needle in error["message"]


def test_bulk2_refuses_aggregate_queries(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest, match="Aggregate"):
        list(
            sf.bulk2.Account.query(
                "SELECT DAY_ONLY(CreatedDate), COUNT(Id) FROM Account GROUP BY DAY_ONLY(CreatedDate)", wait=0
            )
        )


def test_default_page_is_2000_records(tmp_path: Path) -> None:
    with SalesforceSandbox(records=1100, workdir=tmp_path) as sandbox:
        sf = client(sandbox)
        first = sf.query("SELECT Id FROM Contact")
        assert len(first["records"]) == 2000 and first["nextRecordsUrl"].endswith("-2000")
        rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
        assert rest["done"] is True and len(rest["records"]) == first["totalSize"] - 2000


def test_order_limit_and_filters(sf: Salesforce) -> None:
    newest = sf.query("SELECT Id, SystemModstamp FROM Account ORDER BY SystemModstamp DESC, Id DESC LIMIT 5")
    stamps = [r["SystemModstamp"] for r in newest["records"]]
    assert stamps == sorted(stamps, reverse=True) and len(stamps) == 5
    by_name = sf.query("SELECT Name FROM Account WHERE Name != null ORDER BY Name LIMIT 20")["records"]
    assert [r["Name"] for r in by_name] == sorted(r["Name"] for r in by_name)
    some = [r["Id"] for r in sf.query("SELECT Id FROM Account LIMIT 3")["records"]]
    in_list = sf.query(f"SELECT Id FROM Account WHERE Id IN ('{some[0]}', '{some[2]}')")["records"]
    assert [r["Id"] for r in in_list] == [some[0], some[2]]
    ranged = sf.query(f"SELECT Id FROM Account WHERE Id > '{some[0]}' AND Id <= '{some[2]}'")["records"]
    assert [r["Id"] for r in ranged] == some[1:]
    either = sf.query(
        "SELECT COUNT() FROM Opportunity WHERE (StageName = 'Closed Won' OR IsWon = true) "
        "AND NOT (Amount < 0)"
    )
    won = sf.query("SELECT COUNT() FROM Opportunity WHERE IsWon = true")
    assert either["totalSize"] == won["totalSize"] > 0


def test_sobject_record_get(sf: Salesforce) -> None:
    contact = sf.Contact.get(make_id("003", 3))
    assert contact["Id"] == make_id("003", 3) and "Email" in contact and "AccountId" in contact
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(make_id("003", 10**6))


# -------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("query", "code", "needle"),
    [
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
        ("SELECT Id Name FROM Account", "MALFORMED_QUERY", "unexpected token: 'Name'"),
        ("SELECT Id, Foo FROM Account", "INVALID_FIELD", "No such column 'Foo' on entity 'Account'"),
        ("SELECT Id FROM Acount", "INVALID_TYPE", "sObject type 'Acount' is not supported"),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > '2026-11-20T00:00:00Z'",
            "INVALID_FIELD",
            "must be of type dateTime and should not be enclosed in quotes",
        ),
        ("SELECT Id FROM Account WHERE Description = 'x'", "INVALID_FIELD", "can not be filtered"),
    ],
)
def test_query_errors_like_salesforce(sf: Salesforce, query: str, code: str, needle: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(query)
    assert raised.value.status == 400
    [error] = raised.value.content
    assert error["errorCode"] == code and needle in error["message"]


def test_long_uri_is_414_so_clients_must_split_fields(tmp_path: Path) -> None:
    with SalesforceSandbox(records=20, workdir=tmp_path, custom_fields=900) as sandbox:
        sf = client(sandbox)
        fields = [f["name"] for f in sf.Account.describe()["fields"] if f["type"] != "address"]
        with pytest.raises(SalesforceGeneralError) as raised:
            sf.query(f"SELECT {', '.join(fields)} FROM Account")
        assert raised.value.status == 414
        half = len(fields) // 2
        for chunk in (fields[:half], ["Id", *fields[half:]]):
            assert sf.query(f"SELECT {', '.join(chunk)} FROM Account")["totalSize"] > 0


# ------------------------------------------------------------------------------------ describe


def test_describe_has_salesforce_field_shapes(sf: Salesforce) -> None:
    describe = sf.Account.describe()
    assert describe["name"] == "Account" and describe["keyPrefix"] == "001"
    fields = {f["name"]: f for f in describe["fields"]}
    assert {"Custom_Text_01__c", "Custom_Text_40__c"} <= set(fields)
    assert fields["Custom_Text_40__c"]["type"] == "string" and fields["Custom_Text_40__c"]["length"] == 255
    assert fields["Custom_Text_40__c"]["custom"] is True and fields["Name"]["custom"] is False
    assert fields["BillingAddress"]["type"] == "address"
    components = {name for name, f in fields.items() if f["compoundFieldName"] == "BillingAddress"}
    assert {
        "BillingStreet",
        "BillingCity",
        "BillingState",
        "BillingPostalCode",
        "BillingCountry",
        "BillingLatitude",
        "BillingLongitude",
    } <= components
    expected_types = {
        "Id": "id",
        "Type": "picklist",
        "Industry": "picklist",
        "AnnualRevenue": "currency",
        "NumberOfEmployees": "int",
        "Website": "url",
        "Phone": "phone",
        "Description": "textarea",
        "Active__c": "boolean",
        "Regions__c": "multipicklist",
        "Rating_Score__c": "percent",
        "SystemModstamp": "datetime",
        "IsDeleted": "boolean",
    }
    assert {name: fields[name]["type"] for name in expected_types} == expected_types
    assert fields["Description"]["length"] == 32000 and fields["Description"]["filterable"] is False
    assert "Customer - Direct" in [p["value"] for p in fields["Type"]["picklistValues"]]
    assert fields["Revenue_Per_Employee__c"]["calculated"] is True
    assert fields["Name"]["nillable"] is False and fields["Phone"]["nillable"] is True
    contact = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert contact["AccountId"]["type"] == "reference" and contact["AccountId"]["referenceTo"] == ["Account"]
    assert contact["AccountId"]["relationshipName"] == "Account"
    assert {contact[n]["type"] for n in ("Email", "Birthdate", "HasOptedOutOfEmail")} == {
        "email",
        "date",
        "boolean",
    }
    opportunity = {f["name"]: f["type"] for f in sf.Opportunity.describe()["fields"]}
    assert opportunity["CloseDate"] == "date" and opportunity["Products__c"] == "multipicklist"
    described = {o["name"]: o for o in sf.describe()["sobjects"]}
    assert set(described) == {"Account", "Contact", "Opportunity", "AccountHistory"}
    assert described["AccountHistory"]["createable"] is False and described["Account"]["createable"] is True
    with pytest.raises(SalesforceResourceNotFound):
        sf.Widget__c.describe()


# ---------------------------------------------------------------------------------------- bulk


def test_bulk2_query_matches_rest(sf: Salesforce) -> None:
    fields = "Id, Name, Description, Active__c, AnnualRevenue, Regions__c, SystemModstamp"
    pages = list(sf.bulk2.Account.query(f"SELECT {fields} FROM Account", max_records=120, wait=0))
    assert len(pages) == 3  # 294 live accounts at 120 per page
    assert pages[0].startswith('"Id","Name","Description","Active__c"')
    rows = bulk_rows(iter(pages))
    rest = {r["Id"]: r for r in sf.query_all(f"SELECT {fields} FROM Account")["records"]}
    assert len(rows) == len(rest)
    for row in rows:
        expected = rest[row["Id"]]
        assert row["Name"] == expected["Name"]
        assert row["Description"] == (expected["Description"] or "")
        assert row["Active__c"] == ("true" if expected["Active__c"] else "false")
        assert row["SystemModstamp"] == expected["SystemModstamp"]
    assert any(len(r["Description"]) > 2000 and "\n" in r["Description"] for r in rows)
    assert any(r["AnnualRevenue"] == "" for r in rows)


def test_bulk2_query_all_includes_deleted(sf: Salesforce) -> None:
    live = bulk_rows(sf.bulk2.Account.query("SELECT Id, IsDeleted FROM Account", wait=0))
    everything = bulk_rows(sf.bulk2.Account.query_all("SELECT Id, IsDeleted FROM Account", wait=0))
    assert {r["IsDeleted"] for r in live} == {"false"}
    assert len(everything) > len(live) and {r["IsDeleted"] for r in everything} == {"true", "false"}


def test_bulk2_refuses_compound_fields(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        list(sf.bulk2.Account.query("SELECT Id, BillingAddress FROM Account", wait=0))
    assert raised.value.content == [
        {"message": "Selecting compound data not supported in Bulk Query", "errorCode": "API_ERROR"}
    ]


def test_bulk2_job_lifecycle_and_locator(salesforce_sandbox: SalesforceSandbox) -> None:
    http = requests.Session()
    http.verify, http.trust_env = str(salesforce_sandbox.ca_file), False
    http.headers["Authorization"] = f"Bearer {salesforce_sandbox.session_id}"
    jobs = f"{salesforce_sandbox.url}/services/data/v62.0/jobs/query"
    created = http.post(jobs, json={"operation": "query", "query": "SELECT Id FROM Opportunity"}).json()
    assert created["state"] == "UploadComplete" and created["id"].startswith("750")
    while (state := http.get(f"{jobs}/{created['id']}").json())["state"] != "JobComplete":
        assert state["state"] == "InProgress"
    total, locator, seen = state["numberRecordsProcessed"], "", 0
    while True:
        params = {"maxRecords": 100, **({"locator": locator} if locator else {})}
        page = http.get(f"{jobs}/{created['id']}/results", params=params)
        assert page.headers["Content-Type"].startswith("text/csv")
        assert re.fullmatch(r"api-usage=\d+/1000000", page.headers["Sforce-Limit-Info"])
        count = int(page.headers["Sforce-NumberOfRecords"])
        assert count == len(page.text.strip().splitlines()) - 1
        seen += count
        locator = page.headers["Sforce-Locator"]
        if locator == "null":
            break
    assert (
        seen
        == total
        == http.get(
            f"{salesforce_sandbox.url}/services/data/v62.0/query",
            params={"q": "SELECT COUNT() FROM Opportunity"},
        ).json()["totalSize"]
    )
    assert http.delete(f"{jobs}/{created['id']}").status_code == 204
    assert http.get(f"{jobs}/{created['id']}").status_code == 404


# ------------------------------------------------------------------------------ limits, budget


def test_limits_header_and_budget_exhaustion(tmp_path: Path) -> None:
    with SalesforceSandbox(records=10, workdir=tmp_path, api_budget=5) as sandbox:
        sf = client(sandbox)
        assert sf.limits()["DailyApiRequests"] == {"Max": 5, "Remaining": 4}
        sf.query("SELECT Id FROM Account")
        assert sf.api_usage["api-usage"].used == 2 and sf.api_usage["api-usage"].total == 5
        sf.query("SELECT Id FROM Account")
        sf.query("SELECT Id FROM Account")
        sf.query("SELECT Id FROM Account")
        with pytest.raises(SalesforceRefusedRequest) as raised:
            sf.query("SELECT Id FROM Account")
        assert raised.value.status == 403
        assert raised.value.content == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
        reset = requests.post(
            f"{sandbox.url}/_sandbox/budget", json={"remaining": 3}, verify=str(sandbox.ca_file)
        )
        assert reset.json() == {"used": 2, "max": 5}
        assert sf.limits()["DailyApiRequests"]["Remaining"] == 2
        assert sandbox.stats()["requests"]["query"] == 5


def test_injected_faults(own_sandbox: SalesforceSandbox) -> None:
    sf = client(own_sandbox)
    admin = f"{own_sandbox.url}/_sandbox/faults"
    requests.post(admin, json={"status": 503, "count": 2}, verify=str(own_sandbox.ca_file)).raise_for_status()
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as raised:
            sf.query("SELECT Id FROM Account")
        assert raised.value.status == 503
    assert sf.query("SELECT Id FROM Account")["totalSize"] > 0

    first = sf.query("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=200"})
    own_sandbox.inject_fault(drop=1)
    with pytest.raises(requests.exceptions.RequestException):
        sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    again = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)  # a retry gets the same page
    assert len(again["records"]) == first["totalSize"] - 200 > 0
    assert own_sandbox.stats()["statuses"]["503"] == 2


# ------------------------------------------------------------------------------------ composite

BASE = "/services/data/v62.0"
PAGE_200 = {"Sforce-Query-Options": "batchSize=200"}


def composite(sf: Salesforce, *subrequests: dict) -> list[dict]:
    body = {"allOrNone": False, "compositeRequest": list(subrequests)}
    return sf.restful("composite", method="POST", json=body)["compositeResponse"]


def get(reference: str, url: str, headers: dict | None = None) -> dict:
    sub = {"method": "GET", "url": url, "referenceId": reference}
    return sub | ({"httpHeaders": headers} if headers else {})


def test_composite_pages_a_query_by_reference_for_one_api_call(tmp_path: Path) -> None:
    with SalesforceSandbox(records=500, workdir=tmp_path) as sandbox:
        sf = client(sandbox)
        query = "SELECT Id, SystemModstamp FROM Contact ORDER BY SystemModstamp, Id"
        expected = [r["Id"] for r in sf.query_all(query, include_deleted=True)["records"]]
        assert len(expected) > 800
        used = sandbox.stats()["api_usage"]["used"]
        answers = composite(
            sf,
            get("p0", f"{BASE}/queryAll/?q={query}", PAGE_200),
            *(get(f"p{i}", f"@{{p{i - 1}.nextRecordsUrl}}", PAGE_200) for i in range(1, 4)),
        )
        assert sandbox.stats()["api_usage"]["used"] == used + 1  # the whole series is one call
        assert sandbox.stats()["requests"]["composite:queryMore"] == 3
    assert [a["httpStatusCode"] for a in answers] == [200] * 4
    assert [a["referenceId"] for a in answers] == ["p0", "p1", "p2", "p3"]
    assert all(len(a["body"]["records"]) == 200 for a in answers)  # the subrequest's batchSize header
    assert answers[3]["body"]["nextRecordsUrl"].startswith(f"{BASE}/queryAll/")
    assert answers[3]["body"]["nextRecordsUrl"].endswith("-800")
    assert [r["Id"] for a in answers for r in a["body"]["records"]] == expected[:800]


def test_composite_reference_to_a_missing_value_fails_only_its_dependents(
    own_sandbox: SalesforceSandbox,
) -> None:
    sf = client(own_sandbox)
    answers = composite(
        sf,
        get("small", f"{BASE}/query/?q=SELECT Id FROM Account ORDER BY Id LIMIT 3"),
        get("after_last", "@{small.nextRecordsUrl}"),  # done: no next page to reference
        get("bad", f"{BASE}/query/?q=SELECT Nope FROM Account"),
        get("after_bad", f"{BASE}/sobjects/Account/@{{bad.records[0].Id}}"),
        get("first", f"{BASE}/sobjects/Account/@{{small.records[0].Id}}"),  # nested fields resolve
        get("out_of_range", f"{BASE}/sobjects/Account/@{{small.records[7].Id}}"),
    )
    status = {a["referenceId"]: a["httpStatusCode"] for a in answers}
    assert status == {
        "small": 200,
        "after_last": 400,
        "bad": 400,
        "after_bad": 400,
        "first": 200,
        "out_of_range": 400,
    }
    halted = [
        a["body"][0] for a in answers if a["referenceId"] in ("after_last", "after_bad", "out_of_range")
    ]
    assert [error["errorCode"] for error in halted] == ["PROCESSING_HALTED"] * 3
    assert "small.nextRecordsUrl" in halted[0]["message"]
    assert answers[4]["body"]["Id"] == answers[0]["body"]["records"][0]["Id"]


def test_composite_limits_query_operations_and_subrequests(own_sandbox: SalesforceSandbox) -> None:
    sf = client(own_sandbox)
    query = f"{BASE}/queryAll/?q=SELECT Id FROM Contact"
    deleted = f"{BASE}/sobjects/Account/deleted/?start=2026-11-01T00:00:00Z&end=2026-11-02T00:00:00Z"
    five = [
        get("q", query),
        get("m1", "@{q.nextRecordsUrl}", PAGE_200),
        get("a", f"{BASE}/query/?q=SELECT Id FROM Account"),
    ]
    five += [get("m2", f"{BASE}/query/01gDn0000000001AAA-200"), get("m3", "@{m1.nextRecordsUrl}")]
    with pytest.raises(SalesforceMalformedRequest) as six:  # queryMore by reference counts as a query
        composite(sf, *five, get("m4", "@{m3.nextRecordsUrl}"))
    assert six.value.content[0]["errorCode"] == "INVALID_BATCH_REQUEST"
    with pytest.raises(SalesforceMalformedRequest):
        composite(sf, *(get(f"d{i}", deleted) for i in range(26)))
    assert len(composite(sf, *five, *(get(f"d{i}", deleted) for i in range(20)))) == 25
    with pytest.raises(SalesforceMalformedRequest) as inherited:
        composite(sf, get("q", query, {"Authorization": "Bearer x"}))
    assert "Authorization" in inherited.value.content[0]["message"]


# ---------------------------------------------------------------------------------- admin edits


def test_admin_update_delete_create_seen_by_modstamp_queries(own_sandbox: SalesforceSandbox) -> None:
    sf = client(own_sandbox)
    admin = f"{own_sandbox.url}/_sandbox/records"
    ca = str(own_sandbox.ca_file)
    target = sf.query("SELECT Id, SystemModstamp FROM Account ORDER BY SystemModstamp LIMIT 1")["records"][0]
    window = f"SystemModstamp = {target['SystemModstamp']}"

    updated = requests.post(
        f"{admin}/Account/{target['Id']}", json={"Name": "Renamed GmbH"}, verify=ca
    ).json()
    assert updated["Name"] == "Renamed GmbH" and updated["SystemModstamp"] > target["SystemModstamp"]
    assert updated["LastModifiedDate"] == updated["SystemModstamp"]
    changed = sf.query(f"SELECT Id, Name FROM Account WHERE SystemModstamp >= {updated['SystemModstamp']}")
    assert [(r["Id"], r["Name"]) for r in changed["records"]] == [(target["Id"], "Renamed GmbH")]
    assert target["Id"] not in {
        r["Id"] for r in sf.query(f"SELECT Id FROM Account WHERE {window}")["records"]
    }

    assert requests.delete(f"{admin}/Account/{target['Id']}", verify=ca).json()["success"] is True
    since = f"SystemModstamp >= {updated['SystemModstamp']}"
    assert sf.query(f"SELECT Id FROM Account WHERE {since}")["totalSize"] == 0
    gone = sf.query(f"SELECT Id, IsDeleted FROM Account WHERE {since}", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in gone] == [(target["Id"], True)]

    created = requests.post(
        f"{admin}/Contact", json={"LastName": "Nguyễn", "AccountId": target["Id"]}, verify=ca
    )
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert parse_id("003", new_id) == own_sandbox.data.counts["Contact"]
    [row] = sf.query(f"SELECT Id, Name, AccountId FROM Contact WHERE Id = '{new_id}'")["records"]
    assert row["Name"] == "Nguyễn" and row["AccountId"] == target["Id"]

    own_sandbox.update("Contact", new_id, {"FirstName": "Anh"})
    assert own_sandbox.get("Contact", new_id)["Name"] == "Anh Nguyễn"
    bad = requests.post(f"{admin}/Contact/{new_id}", json={"Nope__c": 1}, verify=ca)
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"
    own_sandbox.delete("Contact", new_id, hard=True)
    assert (
        sf.query(f"SELECT COUNT() FROM Contact WHERE Id = '{new_id}'", include_deleted=True)["totalSize"] == 0
    )
    assert own_sandbox.stats()["requests"] == {"query": 5, "queryAll": 2}


def test_a_late_commit_gets_a_past_modstamp(own_sandbox: SalesforceSandbox) -> None:
    """A long transaction commits with the SystemModstamp of its write, older than records read since."""
    sf = client(own_sandbox)
    admin = f"{own_sandbox.url}/_sandbox/records"
    first, late = (r["Id"] for r in sf.query("SELECT Id FROM Account ORDER BY Id LIMIT 2")["records"])
    read = own_sandbox.update("Account", first, {"Phone": "+1 555 0110"})["SystemModstamp"]
    committed = requests.post(
        f"{admin}/Account/{late}",
        params={"modstamp": "2026-11-20T10:00:00.000+0000"},
        json={"Phone": "+1 555 0111"},
        verify=str(own_sandbox.ca_file),
    ).json()
    assert committed["SystemModstamp"] == "2026-11-20T10:00:00.000+0000" < read
    after = sf.query(f"SELECT Id FROM Account WHERE SystemModstamp > {read}")["records"]
    assert after == []  # invisible to a reader that only looks forward
    window = "SystemModstamp >= 2026-11-20T10:00:00Z AND SystemModstamp < 2026-11-20T10:00:01Z"
    assert late in {r["Id"] for r in sf.query(f"SELECT Id FROM Account WHERE {window}")["records"]}


def test_get_deleted_lists_hard_and_soft_deletes_of_the_last_30_days(own_sandbox: SalesforceSandbox) -> None:
    sf = client(own_sandbox)
    now = datetime.now(UTC)
    ago = (now - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    purged, binned = (
        r["Id"] for r in sf.query("SELECT Id FROM Account WHERE IsDeleted = false LIMIT 2")["records"]
    )
    own_sandbox.delete("Account", purged, hard=True, modstamp=ago)
    own_sandbox.delete("Account", binned)  # just now: not covered until its minute is over
    assert (
        sf.query(f"SELECT COUNT() FROM Account WHERE Id = '{purged}'", include_deleted=True)["totalSize"] == 0
    )

    result = sf.Account.deleted(now - timedelta(minutes=10), now)
    assert set(result) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    assert result["deletedRecords"] == [{"id": purged, "deletedDate": ago}]
    assert result["latestDateCovered"] == now.strftime("%Y-%m-%dT%H:%M:00.000+0000")

    start = now - timedelta(days=29)
    base = sf.Account.deleted(start, now)["deletedRecords"]  # with the generated soft deletes
    since = start.strftime("%Y-%m-%dT%H:%M:00Z")
    soft = sf.query(
        f"SELECT Id, SystemModstamp FROM Account WHERE IsDeleted = true AND SystemModstamp >= {since}",
        include_deleted=True,
    )
    expected = {(r["Id"], r["SystemModstamp"]) for r in soft["records"] if r["Id"] != binned}
    assert expected  # generated deletes are in the log too
    assert {(r["id"], r["deletedDate"]) for r in base} == expected | {(purged, ago)}

    with pytest.raises(SalesforceMalformedRequest) as too_old:
        sf.Account.deleted(now - timedelta(days=31), now)
    assert too_old.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    assert "30 days" in too_old.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest, match="more than one minute"):
        sf.Account.deleted(now - timedelta(seconds=30), now)


# ---------------------------------------------------------------------------------- generator


def test_generator_is_deterministic_per_seed() -> None:
    a, b, other = SalesforceData(200, 7), SalesforceData(200, 7), SalesforceData(200, 8)
    for obj, count in a.counts.items():
        sample = range(0, count, 17)
        assert [a.generate(obj, i) for i in sample] == [b.generate(obj, i) for i in sample]
        assert [a.generate(obj, i) for i in sample] != [other.generate(obj, i) for i in sample]
    assert a.counts == {"Account": 200, "Contact": 400, "Opportunity": 200, "AccountHistory": 200}


def test_ids_are_case_safe_and_ordered() -> None:
    assert case_safe_id("001D000000IqhSL") == "001D000000IqhSLIAZ"  # Salesforce's documented example
    ids = [make_id("001", i) for i in (0, 1, 61, 62, 10**6, 62**5)]
    assert ids == sorted(ids) and all(len(i) == 18 and case_safe_id(i[:15]) == i for i in ids)
    assert [parse_id("001", i) for i in ids] == [0, 1, 61, 62, 10**6, 62**5]
    assert parse_id("003", ids[0]) is None and parse_id("001", ids[2][:17] + "x") is None


def test_contacts_reference_accounts_and_some_emails_are_invalid(
    sf: Salesforce, salesforce_sandbox: SalesforceSandbox
) -> None:
    data = salesforce_sandbox.data
    bad = data.invalid_email_ids()
    assert 3 <= len(bad) <= 10
    emails = {
        r["Id"]: r["Email"]
        for r in sf.query_all("SELECT Id, Email FROM Contact", include_deleted=True)["records"]
    }
    assert all(
        "@" not in emails[i] or " " in emails[i] or emails[i].startswith("@") or emails[i].endswith("@")
        for i in bad
    )
    contacts = sf.query_all("SELECT AccountId FROM Contact")["records"]
    account_ids = {make_id("001", i) for i in range(data.records)}
    assert sum(r["AccountId"] is None for r in contacts) > 0
    assert all(r["AccountId"] in account_ids for r in contacts if r["AccountId"])
    assert SalesforceData(300, 7, invalid_emails=False).invalid_email_ids() == []


def test_edge_timestamps_sit_on_partition_boundaries(
    sf: Salesforce, salesforce_sandbox: SalesforceSandbox
) -> None:
    edges = salesforce_sandbox.data.edge_records("Account")
    assert len(edges) >= 2 * 25  # one pair per UTC midnight in the 30 days
    before, after = edges[0], edges[1]
    assert before["SystemModstamp"].endswith("T23:59:59.999+0000")
    assert after["SystemModstamp"].endswith("T00:00:00.000+0000")
    day = after["SystemModstamp"][:10]
    window = f"SystemModstamp >= {day}T00:00:00Z AND SystemModstamp < {day}T23:59:59.999Z"
    in_day = [
        r["Id"]
        for r in sf.query(
            f"SELECT Id FROM Account WHERE {window} ORDER BY SystemModstamp, Id", include_deleted=True
        )["records"]
    ]
    assert in_day[0] == after["Id"] and before["Id"] not in in_day
    exact = sf.query(
        f"SELECT Id FROM Account WHERE SystemModstamp = {before['SystemModstamp']}", include_deleted=True
    )
    assert [r["Id"] for r in exact["records"]] == [before["Id"]]
    over_http = requests.get(
        f"{salesforce_sandbox.url}/_sandbox/edges/Account", verify=salesforce_sandbox.ca_file
    )
    assert over_http.json() == edges


def test_million_records_are_lazy(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        with SalesforceSandbox(records=1_000_000, workdir=tmp_path) as sandbox:
            sf = client(sandbox)
            window = "SystemModstamp >= 2026-11-20T00:00:00Z AND SystemModstamp < 2026-11-20T06:00:00Z"
            count = sf.query(f"SELECT COUNT() FROM Account WHERE {window}", include_deleted=True)["totalSize"]
            assert 8_000 < count < 9_000  # 1,000,000 over 30 days: ~8,333 per 6 hours
            page = sf.query(
                f"SELECT Id, Name, SystemModstamp FROM Account WHERE {window} ORDER BY SystemModstamp, Id"
            )
            assert len(page["records"]) == 2000 and page["records"][0]["SystemModstamp"] >= "2026-11-20T00"
            last = sf.query("SELECT Id FROM Account ORDER BY Id DESC LIMIT 1")["records"][0]["Id"]
            assert parse_id("001", last) == 999_999
            data = sandbox.data
            assert data.counts["Contact"] == 2_000_000
            assert sum(map(len, data.snapshot("Account").values())) == 0  # no stored records
            assert sum(len(e) for e in data._edges.values()) <= len(data.counts) * 2 * 30  # edge pairs only
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 50 * 1024 * 1024
    finally:
        tracemalloc.stop()


def _raw_responses(sandbox: SalesforceSandbox, edit: bool) -> list[bytes]:
    """Every byte of REST pages (native and in-memory ORDER BY, query and queryAll) and Bulk 2.0 CSV
    pages (two dialects), after admin edits if ``edit``."""
    sandbox.data.clock = lambda: 1_790_000_000.0  # edits stamp "now": the same in both sandboxes
    if edit:
        sandbox.update("Account", make_id("001", 5), {"Name": "Edited after caching"})
        sandbox.delete("Account", make_id("001", 6))
        sandbox.delete("Account", make_id("001", 7), hard=True)
        sandbox.create("Account", {"Name": "Created after caching"})
    session = requests.Session()
    session.verify, session.trust_env = str(sandbox.ca_file), False
    session.headers["Authorization"] = f"Bearer {sandbox.session_id}"
    session.headers["Sforce-Query-Options"] = "batchSize=300"
    base = f"{sandbox.url}/services/data/v62.0"
    bodies: list[bytes] = []
    for endpoint, query in (
        ("queryAll", f"SELECT {ALL_ACCOUNT_FIELDS} FROM Account"),
        ("query", "SELECT Id, Name, BillingAddress FROM Account WHERE IsDeleted = false ORDER BY Name DESC"),
    ):
        response = session.get(f"{base}/{endpoint}", params={"q": query})
        bodies.append(response.content)
        while not response.json()["done"]:
            response = session.get(sandbox.url + response.json()["nextRecordsUrl"])
            bodies.append(response.content)
    fields = ALL_ACCOUNT_FIELDS.replace(", BillingAddress", "")
    for delimiter, line_ending in (("COMMA", "LF"), ("PIPE", "CRLF")):
        job = session.post(
            f"{base}/jobs/query",
            json={
                "operation": "queryAll",
                "query": f"SELECT {fields} FROM Account",
                "columnDelimiter": delimiter,
                "lineEnding": line_ending,
            },
        ).json()
        while session.get(f"{base}/jobs/query/{job['id']}").json()["state"] != "JobComplete":
            pass
        locator = ""
        while locator != "null":
            response = session.get(
                f"{base}/jobs/query/{job['id']}/results",
                params={"maxRecords": 400, **({"locator": locator} if locator else {})},
            )
            bodies.append(response.content)
            locator = response.headers["Sforce-Locator"]
    return bodies


def test_render_cache_serves_the_same_bytes_and_admin_edits_win(tmp_path: Path) -> None:
    cache = tmp_path / "render-cache"
    options = {"records": 1_000, "seed": 3, "days": 2, "bulk_processing_seconds": 0}
    fields = ALL_ACCOUNT_FIELDS.replace(", BillingAddress", "")
    everything = f"SELECT {ALL_ACCOUNT_FIELDS} FROM Account"
    with SalesforceSandbox(**options, workdir=tmp_path / "plain") as plain:
        expected = [_raw_responses(plain, edit=False), _raw_responses(plain, edit=True)]
    with SalesforceSandbox(**options, workdir=tmp_path / "cached", render_cache=cache) as cached:
        assert cached.warm(f"SELECT {fields} FROM Account", bulk=True) == 1  # 1,000 records: one block
        assert cached.warm(f"SELECT {fields} FROM Account", bulk=True) == 0  # already on disk
        assert cached.warm(everything, bulk=False, version="62.0") == 1
        assert cached.stats()["render_cache"] == {"blocks_written": 2}
        assert _raw_responses(cached, edit=False) == expected[0]
        stats = cached.stats()["render_cache"]
        assert stats["records_rendered"] == 0 and stats["records_cached"] > 3 * 1_000 + 900
        assert stats["blocks_written"] == 4  # ORDER BY Name fields, PIPE/CRLF CSV: cached on first serve
        cached.reset_stats()
        # Served from the cache before the edits, and after them the edited, soft-deleted, purged and
        # created records are as in the uncached sandbox: overrides win.
        assert _raw_responses(cached, edit=True) == expected[1]
        stats = cached.stats()["render_cache"]
        assert stats["records_rendered"] > 0 and stats["records_cached"] > 3 * 990 + 900
    before, after = b"".join(expected[0]), b"".join(expected[1])
    assert b"Edited after caching" in after and b"Created after caching" in after
    assert b"Edited after caching" not in before
    with SalesforceSandbox(**options, workdir=tmp_path / "again", render_cache=cache) as again:
        assert again.warm(everything, bulk=False, version="62.0") == 0  # shared on disk
    with SalesforceSandbox(**{**options, "seed": 4}, workdir=tmp_path / "other", render_cache=cache) as other:
        assert other.warm(everything, bulk=False, version="62.0") == 1  # other data


def test_a_history_object_has_created_date_and_no_system_modstamp(own_sandbox: SalesforceSandbox) -> None:
    sf = client(own_sandbox)
    fields = {f["name"] for f in sf.AccountHistory.describe()["fields"]}
    assert "CreatedDate" in fields and not fields & {"SystemModstamp", "LastModifiedDate"}
    day = "CreatedDate >= 2026-11-20T00:00:00Z AND CreatedDate < 2026-11-21T00:00:00Z"
    rows = sf.query(f"SELECT Id, CreatedDate, Field FROM AccountHistory WHERE {day} ORDER BY CreatedDate, Id")
    assert rows["totalSize"] > 0 and all(r["CreatedDate"].startswith("2026-11-20") for r in rows["records"])
    with pytest.raises(SalesforceMalformedRequest) as bad:
        sf.query("SELECT Id FROM AccountHistory WHERE SystemModstamp >= 2026-11-20T00:00:00Z")
    assert bad.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(DataError, match="cannot be updated"):
        own_sandbox.update("AccountHistory", rows["records"][0]["Id"], {"Field": "Phone"})


def test_a_cross_object_formula_follows_its_account_without_a_modstamp(tmp_path: Path) -> None:
    with SalesforceSandbox(records=50, workdir=tmp_path / "sf", render_cache=tmp_path / "cache") as sandbox:
        sf = client(sandbox)
        field = next(f for f in sf.Contact.describe()["fields"] if f["name"] == "Account_Name__c")
        assert field["calculated"] is True and field["calculatedFormula"] == "Account.Name"
        assert field["type"] == "string" and field["updateable"] is False
        contact = next(
            r["Id"]
            for r in sf.query("SELECT Id, AccountId FROM Contact WHERE AccountId != null")["records"]
            if not sandbox.get("Account", r["AccountId"])["IsDeleted"]
        )
        query = f"SELECT Id, AccountId, Account_Name__c, SystemModstamp FROM Contact WHERE Id = '{contact}'"
        before = sf.query(query)["records"][0]
        assert before["Account_Name__c"] == sandbox.get("Account", before["AccountId"])["Name"]
        sandbox.update("Account", before["AccountId"], {"Name": "Renamed Holdings"})
        after = sf.query(query)["records"][0]  # the render cache does not serve the old name
        assert after["Account_Name__c"] == "Renamed Holdings"
        assert after["SystemModstamp"] == before["SystemModstamp"]  # the Contact itself did not change
        sandbox.update("Contact", contact, {"Title": "CFO"})  # an edited record computes it as well
        sandbox.update("Account", before["AccountId"], {"Name": "Renamed Again"})
        assert sf.query(query)["records"][0]["Account_Name__c"] == "Renamed Again"
        with pytest.raises(DataError) as refused:
            sandbox.update("Contact", contact, {"Account_Name__c": "x"})
        assert refused.value.error_code == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_soql_parser_grammar() -> None:
    query = soql.parse(
        "select id, NAME from account where (SystemModstamp >= 2026-11-20T00:00:00.000+0000 "
        "and IsDeleted = false) order by SystemModstamp asc nulls last, Id limit 10 offset 5"
    )
    bound = soql.bind(query, SalesforceData(5).fields)
    assert (bound.sobject, bound.fields, bound.limit, bound.offset) == ("Account", ["Id", "Name"], 10, 5)
    assert bound.order == [("SystemModstamp", False), ("Id", False)]
    comparisons, pure = bound.conjuncts()
    assert pure and {(c.field, c.op, c.value) for c in comparisons} == {
        ("SystemModstamp", ">=", "2026-11-20T00:00:00.000+0000"),
        ("IsDeleted", "=", False),
    }
    assert soql.normalize_datetime("2026-11-20T01:00:00+01:00") == "2026-11-20T00:00:00.000+0000"
    with pytest.raises(soql.SoqlError):
        soql.parse("SELECT Id FROM Account LIMIT x")
