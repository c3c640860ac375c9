"""Writes against real Notion behaviour, modelled by the sandbox (issue 11 items 2-6, 9, 10; issue 13 item 9).

Bodies over 500 KB answer 413; a page a person trashed answers 400 to a PATCH; 409 wrote nothing;
a 503 may say the write was saved; 429s say which limit was hit; a wrong token, a blocked
connection or the Free plan's block limit stop the run at once.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from test_notion_sync import CONFIG, PARTITION, TYPES, Env, account, assert_no_duplicates, make_env

from notion_sync.config import parse_config
from notion_sync.notion.client import READ_TIMEOUT_S
from notion_sync.notion.errors import RunStoppingError
from notion_sync.notion.properties import TRUNCATED
from notion_sync.notion.resource import NotionResource
from notion_sync.notion.sync import run_sync
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.status import load_report, render_text

QUERY = "POST /v1/data_sources/{id}/query"


@pytest.fixture
def env(notion_sandbox: NotionSandbox, tmp_path: Path) -> Env:
    return make_env(notion_sandbox, tmp_path)


def routes(env: Env) -> dict[str, dict[str, int]]:
    return env.sandbox.stats()["requests_by_route"]


def description(env: Env, sf_id: str) -> str:
    page = env.pages("Account", include_trashed=True)[sf_id]
    return "".join(part["plain_text"] for part in page["properties"]["Description"]["rich_text"])


# -- item 2: 500 KB bodies, sent as UTF-8 --------------------------------------------------------------
def test_long_non_ascii_description_syncs_in_one_request_under_500_kb(env: Env) -> None:
    text = "数据同步" * (131_072 // 4)  # 3 bytes a character in UTF-8, 6 as JSON \u escapes
    env.stage("Account", [account(1, Description=text)])
    env.sandbox.reset_stats()
    report = env.sync("Account")
    assert report.totals["created"] == 1 and report.totals["failed"] == 0
    assert routes(env)["POST /v1/pages"] == {"200": 1}  # one request, not a 413
    assert 393_216 < env.sandbox.stats()["body_bytes_max"] < 500_000  # UTF-8: 396 KB, not 790 KB
    assert description(env, "001000000000000001") == text  # whole: 131,072 characters fit


def test_text_over_the_byte_budget_is_shortened_with_a_marker_not_failed(env: Env) -> None:
    text = "漢" * 200_000  # 100 pieces of 2,000 characters: 600 KB of UTF-8
    env.stage("Account", [account(1, Description=text)])
    env.sandbox.reset_stats()
    report = env.sync("Account")
    assert report.totals["created"] == 1 and report.totals["failed"] == 0
    assert routes(env)["POST /v1/pages"] == {"200": 1}
    assert env.sandbox.stats()["body_bytes_max"] < 500_000
    written = description(env, "001000000000000001")
    assert written.endswith(TRUNCATED) and text.startswith(written.removesuffix(TRUNCATED))
    assert len(written) > 150_000
    env.sandbox.reset_stats()
    assert env.sync("Account").totals["unchanged"] == 1  # the shortened text is what was recorded


# -- item 3: pages trashed by a person ---------------------------------------------------------------
def _trash_then_change(env: Env, trashed_pages: str | None) -> None:
    env.stage("Account", [account(1), account(2), account(3)])
    env.sync("Account")
    pages = env.pages("Account")
    env.sandbox.trash_page(pages["001000000000000001"]["id"])  # in the Notion app
    env.sandbox.trash_page(pages["001000000000000002"]["id"])
    env.stage("Account", [account(1, Name="Changed"), account(2, IsDeleted=True), account(3)])
    env.sandbox.reset_stats()
    if trashed_pages is not None:
        objects = {**CONFIG.objects}
        objects["Account"] = objects["Account"].model_copy(
            update={"notion": objects["Account"].notion.model_copy(update={"trashed_pages": trashed_pages})}
        )
        env.config_objects = objects


def _sync(env: Env) -> object:
    objects = getattr(env, "config_objects", CONFIG.objects)
    return run_sync(
        env.resource, env.connect, objects["Account"], TYPES["Account"], PARTITION, uuid.uuid4().hex
    )


def test_trashed_page_is_restored_by_default_and_nothing_fails(env: Env) -> None:
    _trash_then_change(env, None)
    report = _sync(env)
    assert (report.totals["updated"], report.totals["archived"], report.totals["failed"]) == (1, 1, 0)
    live = env.pages("Account")
    assert live["001000000000000001"]["properties"]["Name"]["title"][0]["plain_text"] == "Changed"
    assert "001000000000000002" not in live  # deleted in Salesforce, already in the trash: done
    # the update met the trash (400), then restored the page with it; the archive met it once
    assert routes(env)["PATCH /v1/pages/{id}"] == {"400": 2, "200": 1}
    assert env.query("SELECT in_trash FROM sync_state ORDER BY sf_id") == [(False,), (True,), (False,)]
    assert _sync(env).totals["unchanged"] == 3  # the deleted one counts as unchanged too


def test_trashed_page_is_left_and_skipped_by_config_with_its_reason(env: Env) -> None:
    _trash_then_change(env, "skip")
    report = _sync(env)
    assert (report.totals["skipped"], report.totals["archived"], report.totals["failed"]) == (1, 1, 0)
    assert set(env.pages("Account")) == {"001000000000000003"}  # nothing restored
    assert description(env, "001000000000000001") == ""  # still as it was
    [(action, status, code, message)] = env.query(
        "SELECT action, status, error_code, error_message FROM sync_log WHERE action = 'skipped'"
    )
    assert (action, status, code) == ("skipped", "skipped", "page_in_trash")
    assert "trashed_pages: skip" in message
    report = load_report(env.db)  # `notion-sync status` shows the reason
    assert [(p.object, p.error_code, p.count) for p in report.skips] == [("Account", "page_in_trash", 1)]
    assert "page_in_trash" in render_text(report) and "trashed_pages: skip" in render_text(report)


def test_trashed_pages_setting_is_validated_naming_the_key() -> None:
    from notion_sync.config import ConfigError

    def account_with(notion: dict) -> dict:
        return {
            "defaults": {"start_date": "2026-10-01"},
            "objects": {"Account": {"title_field": "Name", "notion": notion}},
        }

    assert parse_config(account_with({})).objects["Account"].notion.trashed_pages == "restore"
    assert (
        parse_config(account_with({"trashed_pages": "skip"})).objects["Account"].notion.trashed_pages
        == "skip"
    )
    with pytest.raises(ConfigError, match=r"objects\.Account\.notion\.trashed_pages: .*'restore' or 'skip'"):
        parse_config(account_with({"trashed_pages": "delete"}))


# -- item 4: 409 conflict_error wrote nothing ---------------------------------------------------------
def test_409_on_creates_costs_one_extra_post_each_and_no_lookup(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 11)])
    env.sync("Account")  # the database exists: only the page creates are measured
    env.stage("Account", [account(n) for n in range(1, 21)])
    env.sandbox.reset_stats()
    env.sandbox.inject(status=409, count=5, method="POST", path_prefix="/v1/pages")
    report = env.sync("Account")
    assert report.totals["created"] == 10 and report.totals["failed"] == 0
    assert routes(env)["POST /v1/pages"] == {"409": 5, "200": 10}
    assert QUERY not in routes(env)
    assert_no_duplicates(env)


def test_concurrent_writers_meeting_409s_write_each_page_once(
    notion_sandbox: NotionSandbox, tmp_path: Path
) -> None:
    env = make_env(notion_sandbox, tmp_path, workers=8)
    env.stage("Account", [account(1)])
    env.sync("Account")
    env.stage("Account", [account(n, Name=f"v2 {n}") for n in range(1, 61)])
    env.sandbox.set_latency(1000)  # a write is in flight for 1 s (virtual): 8 writers overlap
    env.sandbox.set_conflict_rate(0.3)
    env.sandbox.reset_stats()
    report = env.sync("Account")
    assert (report.totals["created"], report.totals["updated"], report.totals["failed"]) == (59, 1, 0)
    posts = routes(env)["POST /v1/pages"]
    assert posts["200"] == 59 and posts.get("409", 0) > 0  # each 409 cost one more POST, nothing else
    assert QUERY not in routes(env)
    assert len(env.pages("Account")) == 60
    assert_no_duplicates(env)


# -- item 5: 503 that says the write was saved --------------------------------------------------------
def test_committed_503_takes_the_page_id_and_is_not_repeated(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 6)])
    env.sync("Account")
    env.stage("Account", [account(n, Name=f"Renamed {n}") for n in range(1, 11)])
    env.sandbox.reset_stats()
    env.sandbox.inject(status=503, count=3, method="POST", path_prefix="/v1/pages", committed=True)
    env.sandbox.inject(status=503, count=2, method="PATCH", path_prefix="/v1/pages", committed=True)
    report = env.sync("Account")
    assert (report.totals["created"], report.totals["updated"], report.totals["failed"]) == (5, 5, 0)
    assert routes(env)["POST /v1/pages"] == {"503": 3, "200": 2}  # saved: never sent again
    assert routes(env)["PATCH /v1/pages/{id}"] == {"503": 2, "200": 3}
    assert QUERY not in routes(env)  # the id came with the answer: no lookup
    pages = env.pages("Account")
    assert len(pages) == 10 and all(
        page["properties"]["Name"]["title"][0]["plain_text"] == f"Renamed {int(sf_id[3:])}"
        for sf_id, page in pages.items()
    )
    recorded = dict(env.query("SELECT sf_id, page_id FROM sync_state"))
    assert recorded == {sf_id: page["id"] for sf_id, page in pages.items()}
    assert_no_duplicates(env)


# -- item 6: which rate limit --------------------------------------------------------------------------
def test_429_reasons_are_recorded_and_a_workspace_wait_of_minutes_pauses_every_process(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 6)])
    env.sync("Account")
    env.stage("Account", [account(n) for n in range(1, 11)])
    env.sandbox.inject(status=429, count=2, method="POST", path_prefix="/v1/pages")
    env.sandbox.inject(
        status=429,
        count=1,
        method="POST",
        path_prefix="/v1/pages",
        reason="public_api_space_request_rate_limit",
        retry_after=120,  # two minutes: 2.4 s at speed 50
    )
    report = env.sync("Account")
    assert report.totals["created"] == 5
    assert report.rate_limit_reasons == {
        "public_api_request_rate_limit": 2,
        "public_api_space_request_rate_limit": 1,
    }
    rows = env.query(
        "SELECT rate_limit_reason, retry_after FROM api_usage WHERE status = 429 ORDER BY retry_after"
    )
    assert rows == [
        ("public_api_request_rate_limit", 1.0),
        ("public_api_request_rate_limit", 1.0),
        ("public_api_space_request_rate_limit", 120.0),
    ]
    report = load_report(env.db)  # `notion-sync status` names the limits
    assert report.rate_limit_reasons == {
        "public_api_request_rate_limit": 2,
        "public_api_space_request_rate_limit": 1,
    }
    assert "1 the workspace's limit" in render_text(report)
    # the pause is in the shared bucket every process reads, and it is the whole two minutes long
    [(answered,)] = env.query(
        "SELECT epoch(\"at\") FROM api_usage WHERE rate_limit_reason = 'public_api_space_request_rate_limit'"
    )
    with env.resource.get_client() as client:  # a client of another run sees the same pause
        state = client.limiter._read()
    assert state.epoch >= 3 and state.paused_until >= answered + 120 / env.sandbox.speed


def test_blocked_connection_stops_the_run_at_once(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 21)])
    env.sync("Account")
    env.stage("Account", [account(n, Name="again") for n in range(1, 21)])
    env.sandbox.reset_stats()
    env.sandbox.inject(status=429, count=100, path_prefix="/v1/pages", reason="public_api_request_blocked")
    with pytest.raises(RunStoppingError, match="public_api_request_blocked"):
        env.sync("Account")
    # each request in flight met it once, none was retried, the other records were not tried
    assert env.sandbox.stats()["requests_by_status"]["429"] <= 2 * env.resource.workers
    [(summary,)] = env.query("SELECT error_summary FROM sync_batches WHERE status = 'failed'")
    assert "public_api_request_blocked" in summary


# -- item 9 and issue 13 item 9: configuration errors stop the run once, naming the cause --------------
def test_wrong_token_fails_once_naming_notion_token(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 11)])
    env.resource = env.resource.model_copy(update={"token": "ntn_wrong"})
    with pytest.raises(RunStoppingError, match="NOTION_TOKEN") as info:
        env.sync("Account")
    assert info.value.status == 401 and "ntn_wrong" not in str(info.value)
    assert env.sandbox.stats()["requests_by_status"] == {"401": 1}  # no retry, no per-record attempts


def test_wrong_token_after_provisioning_stops_before_failing_every_record(env: Env) -> None:
    env.stage("Account", [account(1)])
    env.sync("Account")
    env.stage("Account", [account(n) for n in range(1, 31)])
    env.resource = env.resource.model_copy(update={"token": "ntn_revoked"})
    env.sandbox.reset_stats()
    with pytest.raises(RunStoppingError, match="NOTION_TOKEN"):
        env.sync("Account")
    assert env.sandbox.stats()["requests_by_status"]["401"] <= 2 * env.resource.workers
    assert env.query("SELECT count(*) FROM sync_log WHERE action = 'failed'") == [(0,)]


def test_free_plan_block_limit_stops_the_run_naming_the_cause(env: Env) -> None:
    env.stage("Account", [account(n) for n in range(1, 6)])
    env.sync("Account")  # root page + database + 5 pages = 7 blocks
    env.sandbox.set_block_limit(10)
    env.stage("Account", [account(n) for n in range(1, 41)])
    env.sandbox.reset_stats()
    with pytest.raises(RunStoppingError, match="block limit") as info:
        env.sync("Account")
    assert info.value.status == 403 and info.value.code == "restricted_resource"
    posts = routes(env)["POST /v1/pages"]
    assert posts["200"] == 3 and posts["403"] <= 2 * env.resource.workers  # those in flight, not 37
    assert env.query("SELECT count(*) FROM sync_log WHERE action = 'failed'") == [(0,)]


def test_limiter_at_business_plan_rate_gets_no_429s(tmp_path: Path) -> None:
    """NOTION_RATE_LIMIT_RPS=10 (600 requests a minute, Business and Enterprise) against a sandbox at 10/s."""
    with NotionSandbox(speed=10, rps=10, burst=10) as sandbox:
        resource = NotionResource(
            token=sandbox.token,
            base_url=sandbox.url,
            parent_page_id=sandbox.parent_page_id,
            rate_limit_rps=10,
            time_scale=sandbox.speed,
            limiter_path=str(tmp_path / "limiter.sqlite"),
            adaptive=False,
        )
        with resource.get_client() as client:
            for _, result in resource.run_pipelined(
                range(150), lambda _: client.request("GET", "/v1/users/me")
            ):
                assert not isinstance(result, BaseException)
        stats = sandbox.stats()
    assert stats["rate_limited"] == 0
    assert 8.5 <= stats["achieved_rps_virtual"] <= 10.5


def test_read_timeout_is_notions_own() -> None:
    assert READ_TIMEOUT_S == 60.0
    assert NotionResource(token="t").read_timeout == 60.0


def test_api_usage_of_an_older_file_gets_the_reason_column(env: Env) -> None:
    with env.connect() as conn:
        conn.execute(
            'CREATE TABLE api_usage ("at" TIMESTAMPTZ, run_id VARCHAR, object VARCHAR, method VARCHAR, '
            "endpoint VARCHAR, status INTEGER, duration_ms DOUBLE, rate_limited BOOLEAN, retry_after DOUBLE)"
        )
        conn.execute(
            "INSERT INTO api_usage VALUES (now(), 'old', 'Account', 'GET', '/v1/x', 429, 1, true, 1)"
        )
    env.stage("Account", [account(1)])
    env.sync("Account")
    assert load_report(env.db).rate_limit_reasons == {"unspecified": 1}
    env.sandbox.inject(status=429, path_prefix="/v1/pages")
    env.stage("Account", [account(1, Name="again")])
    env.sync("Account")
    assert load_report(env.db).rate_limit_reasons == {"unspecified": 1, "public_api_request_rate_limit": 1}


def test_wrong_token_fails_the_asset_once_without_retries(
    notion_sandbox: NotionSandbox, salesforce_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import DagsterEventType, instance_for_test, materialize
    from test_notion_assets import assets_for

    from notion_sync_tests.sandbox_resources import sandbox_resources

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)  # would override the sandbox's CA file
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    resources = sandbox_resources(salesforce_sandbox, notion_sandbox, tmp_path)
    resources["notion"] = NotionResource(
        **{**resources["notion"].model_dump(), "token": "ntn_wrong"}  # a copy keeps the old config
    )
    with instance_for_test() as instance:
        result = materialize(
            assets_for("Account"),
            partition_key=PARTITION,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert "NOTION_TOKEN" in failure.step_failure_data.user_failure_data.description
        assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert notion_sandbox.stats()["requests_by_status"] == {"401": 1}
