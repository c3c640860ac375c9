"""NotionClient against the sandbox Notion server over real sockets (sped up), plus pipeline and resource."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest
from dagster import EnvVar

from notion_sync.notion.client import ApiCall, NotionClient, endpoint_of, parse_retry_after
from notion_sync.notion.errors import (
    AmbiguousWriteError,
    NotionApiError,
    PermanentNotionError,
    TransientNotionError,
)
from notion_sync.notion.pipeline import run_pipelined
from notion_sync.notion.rate_limit import SqliteRateLimiter
from notion_sync.notion.resource import NotionConfigError, NotionResource

SCHEMA = {
    "Name": {"title": {}},
    "Salesforce Id": {"rich_text": {}},
    "Amount": {"number": {"format": "dollar"}},
}


def _props(sf_id: str, name: str = "Acme", amount: float | None = None) -> dict:
    props = {
        "Name": {"title": [{"text": {"content": name}}]},
        "Salesforce Id": {"rich_text": [{"text": {"content": sf_id}}]},
    }
    if amount is not None:
        props["Amount"] = {"number": amount}
    return props


def _sf_id(i: int) -> str:
    return f"001{i:015d}"


@pytest.fixture
def calls() -> list[ApiCall]:
    return []


@pytest.fixture
def make_client(notion_sandbox, tmp_path, calls):
    made: list[NotionClient] = []

    def make(**kwargs) -> NotionClient:
        speed = notion_sandbox.speed
        limiter = kwargs.pop("limiter", None) or SqliteRateLimiter(
            tmp_path / f"bucket{len(made)}.sqlite", "k", rate=3.0, burst=2, time_scale=speed
        )
        client = NotionClient(
            kwargs.pop("token", notion_sandbox.token),
            base_url=kwargs.pop("base_url", notion_sandbox.url),
            limiter=limiter,
            time_scale=speed,
            on_call=calls.append,
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client) -> NotionClient:
    return make_client()


@pytest.fixture
def data_source(client, notion_sandbox) -> str:
    db = client.create_database(notion_sandbox.parent_page_id, "Accounts", SCHEMA)
    return db["data_sources"][0]["id"]


def _requests(sandbox, route: str) -> dict[str, int]:
    return sandbox.stats()["requests_by_route"].get(route, {})


# -- success paths --------------------------------------------------------------------------------
def test_databases_data_sources_and_pages_round_trip(client, notion_sandbox, calls):
    db = client.create_database(notion_sandbox.parent_page_id, "Accounts", SCHEMA)
    assert client.retrieve_database(db["id"])["data_sources"] == db["data_sources"]
    ds_id = db["data_sources"][0]["id"]
    source = client.update_data_source(ds_id, {"Stage": {"select": {"options": [{"name": "New"}]}}})
    assert "Stage" in source["properties"]
    assert set(client.retrieve_data_source(ds_id)["properties"]) >= {
        "Name",
        "Salesforce Id",
        "Amount",
        "Stage",
    }

    page = client.create_page(ds_id, _props(_sf_id(1), amount=10))
    assert page["parent"]["data_source_id"] == ds_id
    updated = client.update_page(page["id"], properties={"Amount": {"number": 20}})
    assert updated["properties"]["Amount"]["number"] == 20
    assert client.retrieve_page(page["id"])["properties"]["Amount"]["number"] == 20
    assert [p["id"] for p in client.find_pages_by_property(ds_id, "Salesforce Id", _sf_id(1))] == [page["id"]]
    assert client.find_pages_by_property(ds_id, "Salesforce Id", _sf_id(2)) == []

    trashed = client.update_page(page["id"], in_trash=True)
    assert trashed["in_trash"] is True
    assert client.find_pages_by_property(ds_id, "Salesforce Id", _sf_id(1)) == []
    assert notion_sandbox.stats()["pages_by_data_source"][ds_id]["trashed"] == 1

    endpoints = {(c.method, c.endpoint) for c in calls}
    assert ("PATCH", "/v1/pages/{id}") in endpoints
    assert ("POST", "/v1/data_sources/{id}/query") in endpoints
    assert all(c.status == 200 and not c.rate_limited and c.duration_ms >= 0 for c in calls)
    assert len(calls) == notion_sandbox.stats()["requests_total"]


def test_update_page_writes_in_trash_never_archived(client, data_source, monkeypatch):
    page = client.create_page(data_source, _props(_sf_id(1)))
    sent: list[dict] = []
    original = client.session.request

    def spy(method, url, **kwargs):
        sent.append(json.loads(kwargs["data"]))  # UTF-8 JSON bytes (see the body size test)
        return original(method, url, **kwargs)

    monkeypatch.setattr(client.session, "request", spy)
    client.update_page(page["id"], in_trash=True)
    client.update_page(page["id"], in_trash=False)
    client.update_page(page["id"], properties={"Amount": {"number": 1}})
    assert sent == [{"in_trash": True}, {"in_trash": False}, {"properties": {"Amount": {"number": 1}}}]


def test_query_follows_next_cursor(client, data_source, notion_sandbox):
    for i in range(7):
        client.create_page(data_source, _props(_sf_id(i)))
    notion_sandbox.reset_stats()
    pages = list(
        client.query_data_source(
            data_source, page_size=3, sorts=[{"property": "Name", "direction": "ascending"}]
        )
    )
    assert len(pages) == 7 and len({p["id"] for p in pages}) == 7
    assert _requests(notion_sandbox, "POST /v1/data_sources/{id}/query") == {"200": 3}
    flt = {"property": "Salesforce Id", "rich_text": {"equals": _sf_id(3)}}
    assert len(list(client.query_data_source(data_source, filter=flt))) == 1


def test_version_header_is_sent(make_client, notion_sandbox):
    newer = make_client(version="2026-03-11")
    db = newer.create_database(notion_sandbox.parent_page_id, "Accounts", SCHEMA)
    assert newer.session.headers["Notion-Version"] == "2026-03-11"
    assert "archived" not in db  # the sandbox answers 2026-03-11 without `archived`
    default = make_client()
    assert "archived" in default.retrieve_database(db["id"])
    notion_sandbox.reset_stats()
    with pytest.raises(PermanentNotionError) as info:
        make_client(version="1999-01-01").retrieve_database(db["id"])
    assert info.value.status == 400 and "Notion-Version" in info.value.message
    assert notion_sandbox.stats()["requests_total"] == 1


# -- rate limiting ---------------------------------------------------------------------------------
def test_429_storm_eventually_succeeds_and_retry_after_pauses_the_limiter(
    make_client, notion_sandbox, tmp_path, calls
):
    notion_sandbox.set_rate(rps=3, burst=1)  # tight bucket...
    limiter = SqliteRateLimiter(
        tmp_path / "fast.sqlite", "k", rate=30.0, burst=5, time_scale=notion_sandbox.speed
    )
    client = make_client(limiter=limiter)  # ...and a client configured ten times too fast
    results = list(run_pipelined(range(20), lambda _: client.request("GET", "/v1/users/me"), workers=6))
    assert all(not isinstance(r, BaseException) for _, r in results)
    stats = notion_sandbox.stats()
    assert stats["rate_limited"] > 0 and stats["requests_by_status"]["200"] == 20
    state = limiter._read()
    assert state.epoch > 0 and state.paused_until > 0  # Retry-After paused the shared bucket
    assert limiter.current_rate() < 30.0  # and the adaptive rate went down
    limited = [c for c in calls if c.rate_limited]
    assert limited and all(
        c.status == 429 and c.retry_after >= 1 and c.error_code == "rate_limited" for c in limited
    )


def test_429_storm_is_spread_over_the_queue_not_absorbed_by_one_request(
    client, data_source, notion_sandbox, calls
):
    """15 consecutive 429s (Retry-After 1) on 4 workers, default ``max_retries`` (6).

    A request answered 429 queues behind the requests already waiting for the limiter, so the storm
    is shared out (about 15 / 4 each). It used to take the first slot after every pause and meet the
    next 429 itself, until one request ran out of retries.
    """
    assert client.max_retries == 6
    local = threading.local()

    def on_call(call: ApiCall) -> None:
        calls.append(call)
        local.limited += call.rate_limited

    client.on_call = on_call

    def create(i: int) -> int:
        local.limited = 0
        client.create_page(data_source, _props(_sf_id(i)))
        return local.limited

    notion_sandbox.reset_stats()
    notion_sandbox.inject(status=429, count=15, retry_after=1, path_prefix="/v1/pages")
    results = [r for _, r in run_pipelined(range(12), create, workers=4)]
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sum(results) >= 15 and max(results) <= 6  # every create within its retries, fairly shared
    stats = notion_sandbox.stats()
    assert stats["rate_limited"] <= 15 + 2  # the injected storm, (almost) nothing of our own on top
    assert stats["pages_by_data_source"][data_source]["pages"] == 12 and stats["duplicates_total"] == 0


def test_529_is_retried_even_for_creates(client, data_source, notion_sandbox):
    notion_sandbox.inject(status=529, count=2, path_prefix="/v1/pages", method="POST")
    page = client.create_page(data_source, _props(_sf_id(1)))
    assert page["object"] == "page"
    assert _requests(notion_sandbox, "POST /v1/pages") == {"529": 2, "200": 1}
    assert notion_sandbox.stats()["duplicates_total"] == 0


@pytest.mark.parametrize(("status", "method"), [(500, "GET"), (503, "GET"), (502, "PATCH"), (503, "PATCH")])
def test_server_errors_are_retried_for_reads_and_updates(client, data_source, notion_sandbox, status, method):
    page = client.create_page(data_source, _props(_sf_id(1)))
    notion_sandbox.inject(status=status, count=2, path_prefix="/v1/pages/", method=method)
    if method == "GET":
        assert client.retrieve_page(page["id"])["id"] == page["id"]
    else:
        assert (
            client.update_page(page["id"], properties={"Amount": {"number": 5}})["properties"]["Amount"][
                "number"
            ]
            == 5
        )
    assert _requests(notion_sandbox, f"{method} /v1/pages/{{id}}") == {str(status): 2, "200": 1}


def test_transient_errors_give_up_after_max_retries(make_client, notion_sandbox):
    client = make_client(max_retries=2)
    notion_sandbox.inject(status=503, count=10)
    with pytest.raises(TransientNotionError) as info:
        client.request("GET", "/v1/users/me")
    assert info.value.status == 503 and info.value.code == "service_unavailable"
    assert notion_sandbox.stats()["requests_by_status"] == {"503": 3}


# -- ambiguous creates -----------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 502, 504])
def test_create_with_applied_5xx_is_ambiguous_and_not_repeated(client, data_source, notion_sandbox, status):
    notion_sandbox.inject(status=status, count=1, path_prefix="/v1/pages", method="POST", apply_write=True)
    with pytest.raises(AmbiguousWriteError) as info:
        client.create_page(data_source, _props(_sf_id(1)))
    assert isinstance(info.value, TransientNotionError) and info.value.status == status
    assert _requests(notion_sandbox, "POST /v1/pages") == {str(status): 1}  # sent once, never retried
    found = client.find_pages_by_property(data_source, "Salesforce Id", _sf_id(1))
    assert len(found) == 1  # the write was applied: the caller's lookup finds it, no second page
    assert notion_sandbox.stats()["pages_by_data_source"][data_source]["pages"] == 1


def test_create_timeout_is_ambiguous(make_client, data_source, notion_sandbox):
    client = make_client(timeout=(2.0, 0.3))
    notion_sandbox.inject_timeout(
        count=1, seconds=None, path_prefix="/v1/pages", method="POST", apply_write=True
    )
    with pytest.raises(AmbiguousWriteError) as info:
        client.create_page(data_source, _props(_sf_id(1)))
    assert info.value.status == 0 and info.value.code == "timeout"
    assert len(client.find_pages_by_property(data_source, "Salesforce Id", _sf_id(1))) == 1
    assert notion_sandbox.stats()["duplicates_total"] == 0


def test_read_timeout_is_retried_for_reads(make_client, notion_sandbox, calls):
    client = make_client(timeout=(2.0, 0.3))
    notion_sandbox.inject_timeout(count=1, seconds=None, method="GET")
    assert client.request("GET", "/v1/users/me")["object"] == "user"
    assert [(c.status, c.error_code) for c in calls] == [(0, "timeout"), (200, None)]


def test_connection_refused_is_transient_and_not_ambiguous(make_client, calls):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = make_client(base_url=f"http://127.0.0.1:{port}", max_retries=1)
    with pytest.raises(TransientNotionError) as info:
        client.create_page(str(uuid.uuid4()), _props(_sf_id(1)))
    assert not isinstance(info.value, AmbiguousWriteError)  # never reached the server: safe to retry
    assert info.value.status == 0 and info.value.code == "connection_error"
    assert len(calls) == 2


# -- permanent errors ----------------------------------------------------------------------------
def test_permanent_errors_raise_once(make_client, client, data_source, notion_sandbox):
    notion_sandbox.reset_stats()
    with pytest.raises(PermanentNotionError) as bad:
        client.create_page(data_source, {"Nope": {"rich_text": []}, **_props(_sf_id(1))})
    assert bad.value.status == 400 and bad.value.code == "validation_error"
    with pytest.raises(PermanentNotionError) as missing:
        client.retrieve_page(str(uuid.uuid4()))
    assert missing.value.status == 404 and missing.value.code == "object_not_found"
    with pytest.raises(PermanentNotionError) as unauthorized:
        make_client(token="ntn_wrong_token").retrieve_data_source(data_source)
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"
    for error in (bad.value, missing.value, unauthorized.value):
        assert error.request_id and error.method and error.path.startswith("/v1/")
    stats = notion_sandbox.stats()
    assert stats["requests_by_status"] == {"400": 1, "404": 1, "401": 1}  # each sent exactly once


def test_token_never_in_logs_or_exceptions(make_client, notion_sandbox, caplog, calls):
    token = notion_sandbox.token
    caplog.set_level(logging.DEBUG)
    client = make_client(max_retries=1, timeout=(2.0, 0.3))
    ds = client.create_database(notion_sandbox.parent_page_id, "Accounts", SCHEMA)["data_sources"][0]["id"]
    errors: list[BaseException] = []
    # The server echoes an unknown property name in its message: name one after the token.
    for call in (
        lambda: client.create_page(ds, {token: {"rich_text": []}, **_props(_sf_id(1))}),
        lambda: client.retrieve_page(str(uuid.uuid4())),
        lambda: make_client(token=token + "x").retrieve_data_source(ds),
        lambda: client.request("GET", "/v1/users/me"),
        lambda: client.create_page(ds, _props(_sf_id(2))),
    ):
        if len(errors) == 3:
            notion_sandbox.inject(status=503, count=5)
        if len(errors) == 4:
            notion_sandbox.inject_timeout(count=1, seconds=None, apply_write=True)
        try:
            call()
        except NotionApiError as exc:
            errors.append(exc)
    assert len(errors) == 5
    assert any("***" in e.message for e in errors)  # the echoed token was redacted
    texts = [caplog.text, repr(client), repr(client.limiter.__dict__), *map(repr, calls)]
    texts += [str(e) for e in errors] + [repr(e) for e in errors] + [str(e.__cause__) for e in errors]
    for text in texts:
        assert token not in text


# -- helpers ---------------------------------------------------------------------------------------
def test_endpoint_normalisation_and_retry_after_parsing():
    page = "59833787-2cf9-4fdf-8782-e53db20768a5"
    assert endpoint_of(f"/v1/pages/{page}") == "/v1/pages/{id}"
    assert endpoint_of(f"/v1/pages/{page.replace('-', '')}/properties/a%3Bb?page_size=5") == (
        "/v1/pages/{id}/properties/{id}"
    )
    assert endpoint_of(f"/v1/data_sources/{page}/query") == "/v1/data_sources/{id}/query"
    assert endpoint_of("/v1/users/me") == "/v1/users/me"
    assert (
        parse_retry_after("3") == 3.0
        and parse_retry_after(None) is None
        and parse_retry_after("soon") is None
    )
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0  # a date in the past: no wait


def test_errors_pickle_and_classify():
    import pickle

    error = AmbiguousWriteError(
        504, "gateway_timeout", "late", method="POST", path="/v1/pages", retry_after=2
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is AmbiguousWriteError and copy.status == 504 and copy.retry_after == 2
    assert "POST /v1/pages: 504 gateway_timeout: late" in str(copy)


# -- pipeline ----------------------------------------------------------------------------------------
def test_pipeline_yields_every_item_and_exceptions_in_place():
    def work(i: int) -> int:
        if i % 7 == 3:
            raise ValueError(f"bad {i}")
        time.sleep(0.001 * (i % 5))
        return i * i

    results = dict(run_pipelined(range(100), work, workers=8))
    assert set(results) == set(range(100))
    for i, result in results.items():
        if i % 7 == 3:
            assert isinstance(result, ValueError) and str(result) == f"bad {i}"
        else:
            assert result == i * i


def test_pipeline_yields_in_completion_order():
    order = [item for item, _ in run_pipelined([0.2, 0.0, 0.1], lambda s: time.sleep(s), workers=3)]
    assert order == [0.0, 0.1, 0.2]


def test_pipeline_yields_the_successes_that_finished_with_a_failure_first():
    """A consumer stopping at the first exception must still see every write that completed with it."""
    finished = threading.Semaphore(0)

    def work(i: int) -> int:
        try:
            if i == 0:
                raise RuntimeError("crashed")
            return i
        finally:
            finished.release()

    def items():
        yield from range(4)
        for _ in range(4):  # the pipeline asks for a fifth item before it waits: all four are done then
            finished.acquire(timeout=10)
        time.sleep(0.05)

    seen = []
    for item, result in run_pipelined(items(), work, workers=4):
        if isinstance(result, BaseException):
            break
        seen.append(item)
    assert sorted(seen) == [1, 2, 3]


def test_pipeline_keeps_a_bounded_number_in_flight():
    taken = 0
    running = 0
    peak_running = 0
    lock = threading.Lock()

    def items():
        nonlocal taken
        for i in range(10_000):
            taken += 1
            yield i

    def work(i: int) -> int:
        nonlocal running, peak_running
        with lock:
            running += 1
            peak_running = max(peak_running, running)
        time.sleep(0.0005)
        with lock:
            running -= 1
        return i

    results = run_pipelined(items(), work, workers=4)
    for consumed, _ in enumerate(results, start=1):
        assert taken - consumed <= 8  # never more than 2 x workers taken ahead of the consumer
        if consumed == 200:
            break
    results.close()
    assert peak_running <= 4 and taken <= 208


def test_pipeline_keeps_latency_from_capping_throughput(make_client, notion_sandbox, tmp_path):
    """600+-100 ms round trips cap one worker at 1/0.6 = 1.67 rps; a pool of 4 must go past that cap.

    The exact share of the limit is the benchmark's figure (benchmarks/bench_notion_sync.py); here the
    speed factor stays low so that scheduling noise on a loaded machine is not multiplied into the result.
    """
    notion_sandbox.set_speed(10)
    notion_sandbox.set_latency(600, 100)  # virtual ms
    limiter = SqliteRateLimiter(
        tmp_path / "b.sqlite", "k", rate=3.0, burst=2, time_scale=notion_sandbox.speed, adaptive=False
    )
    client = make_client(limiter=limiter)
    for _ in run_pipelined(range(30), lambda _: client.request("GET", "/v1/users/me"), workers=4):
        pass
    stats = notion_sandbox.stats()
    assert stats["rate_limited"] == 0
    assert stats["achieved_rps_virtual"] > 1 / 0.6 * 1.2


# -- resource --------------------------------------------------------------------------------------
def test_resource_from_env_wires_the_contract_variables(notion_sandbox, tmp_path, monkeypatch):
    env = {
        **notion_sandbox.env(),
        "NOTION_RATE_LIMIT_RPS": "2.5",
        "NOTION_RATE_LIMIT_PATH": str(tmp_path / "b.sqlite"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    resource = NotionResource.from_env()
    assert resource.rate_limit_rps == 2.5 and resource.time_scale == notion_sandbox.speed
    assert resource.parent_page_id == notion_sandbox.parent_page_id and resource.limiter_backend == "sqlite"
    client = resource.get_client()
    try:
        assert client.request("GET", "/v1/users/me")["type"] == "bot"
        assert client.limiter.params.rate == 2.5 and client.time_scale == notion_sandbox.speed
    finally:
        client.close()


def test_resource_priority_client_takes_priority_tickets(notion_sandbox, tmp_path):
    resource = NotionResource(
        token=notion_sandbox.token,
        base_url=notion_sandbox.url,
        time_scale=notion_sandbox.speed,
        limiter_path=str(tmp_path / "b.sqlite"),
    )
    with resource.get_client() as normal, resource.get_client(priority=True) as first:
        assert not normal.priority and first.priority
        normal.request("GET", "/v1/users/me")
        first.request("GET", "/v1/users/me")
        first.request("GET", "/v1/users/me")
        state = first.limiter._read()  # one bucket for both
    assert (state.issued, state.priority_issued) == (1, 2)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NOTION_RATE_LIMIT_RPS": "fast"}, "NOTION_RATE_LIMIT_RPS"),
        ({"NOTION_RATE_LIMIT_RPS": "0"}, "NOTION_RATE_LIMIT_RPS"),
        ({"NOTION_TIME_SCALE": "x"}, "NOTION_TIME_SCALE"),
        ({"NOTION_RATE_LIMIT_BACKEND": "redis"}, "NOTION_RATE_LIMIT_BACKEND"),
        ({"NOTION_RATE_LIMIT_BACKEND": "postgres"}, "NOTION_RATE_LIMIT_DSN"),
    ],
)
def test_resource_rejects_bad_environment_naming_the_variable(env, variable):
    with pytest.raises(NotionConfigError, match=variable):
        NotionResource.from_env({"NOTION_TOKEN": "t", **env})


def test_resource_without_token_fails_before_any_call(notion_sandbox, tmp_path):
    resource = NotionResource(token="", base_url=notion_sandbox.url, limiter_path=str(tmp_path / "b.sqlite"))
    with pytest.raises(NotionConfigError, match="NOTION_TOKEN"):
        resource.get_client()
    assert notion_sandbox.stats()["requests_total"] == 0


def test_resource_from_env_with_token_unset_fails_naming_it(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTION_TOKEN", raising=False)
    resource = NotionResource.from_env(
        {"NOTION_RATE_LIMIT_PATH": str(tmp_path / "b.sqlite")}, token=EnvVar("NOTION_TOKEN")
    )
    with pytest.raises(NotionConfigError, match="NOTION_TOKEN"):
        resource.get_client()
