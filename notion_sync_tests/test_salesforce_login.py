"""Logging in to Salesforce as real Salesforce allows: OAuth 2.0, one session per process, renewal,
the login rate, SOAP login's retirement, transient login answers and configuration errors.

Every login goes through the sandbox's CONNECT proxy to its `/services/oauth2/token` or SOAP login.
"""

import logging
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import jwt
import pytest
import requests
from dagster import (
    DagsterInstance,
    ExecuteInProcessResult,
    build_resources,
    materialize,
)
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceExpiredSession

from notion_sync.automation.alerts import salesforce_budget
from notion_sync.config import ObjectConfig
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.resource import NotionResource
from notion_sync.permanent import PERMANENT_FAILURE_KEY
from notion_sync.salesforce import SalesforceResource, build_salesforce_asset
from notion_sync.salesforce.assets import PERMANENT_ERRORS
from notion_sync.salesforce.extract import stage_partition
from notion_sync.salesforce.resource import SalesforceAuthError, SalesforceConfigError, SalesforceUnavailable
from notion_sync.sandbox import sf_login
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.staging import StagingResource, connect
from notion_sync_tests.realtime_helpers import POLLING, Ticker
from notion_sync_tests.run_helpers import failure_without_retry

DAY = "2026-11-20"
LOGIN_VARIABLES = (
    "SALESFORCE_INSTANCE_URL",
    "SALESFORCE_SESSION_ID",
    "SALESFORCE_USERNAME",
    "SALESFORCE_PASSWORD",
    "SALESFORCE_SECURITY_TOKEN",
    "SALESFORCE_DOMAIN",
    "SALESFORCE_CONSUMER_KEY",
    "SALESFORCE_CONSUMER_SECRET",
    "SALESFORCE_PRIVATE_KEY_FILE",
    "SALESFORCE_API_VERSION",
    "NO_PROXY",
    "no_proxy",
)
log = logging.getLogger(__name__)


@pytest.fixture
def sandbox(tmp_path) -> Iterator[SalesforceSandbox]:
    """A private sandbox (its logins, sessions and faults stay here): 100 Accounts over 30 days."""
    with SalesforceSandbox(records=100, seed=3, workdir=tmp_path / "sf") as sandbox:
        yield sandbox


@pytest.fixture
def day_sandbox(tmp_path) -> Iterator[SalesforceSandbox]:
    """A private sandbox whose 500 Accounts all fall on DAY, for reads of several pages."""
    with SalesforceSandbox(records=500, seed=5, workdir=tmp_path / "sf", days=1) as sandbox:
        yield sandbox


@pytest.fixture
def use_env(monkeypatch):
    """Replace the login variables by `env` (the sandbox's, plus overrides), as a user's shell would;
    `fields` are resource settings (e.g. a short backoff)."""

    def use(env: dict[str, str], fields: dict | None = None, **overrides: str) -> SalesforceResource:
        for name in LOGIN_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in {**env, **overrides}.items():
            monkeypatch.setenv(name, value)
        return SalesforceResource.from_env(**(fields or {}))

    return use


def _account(**overrides) -> ObjectConfig:
    return ObjectConfig(
        **{"name": "Account", "title_field": "Name", "start_date": date(2026, 10, 1), **overrides}
    )


def _materialize(
    resource: SalesforceResource, db, partition_key: str = DAY, **kwargs
) -> ExecuteInProcessResult:
    return materialize(
        [build_salesforce_asset(_account())],
        partition_key=partition_key,
        resources={"salesforce": resource, "staging": StagingResource(path=str(db))},
        raise_on_error=False,
        **kwargs,
    )


def _staged_rows(db) -> int:
    with connect(db, read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM stg_account").fetchone()[0]


def _logins(sandbox: SalesforceSandbox) -> int:
    requests_by_endpoint = sandbox.stats()["requests"]
    return requests_by_endpoint.get("oauth2.token", 0) + requests_by_endpoint.get("login", 0)


# ------------------------------------------------------------------------ the sandbox's logins


def _login_session(sandbox: SalesforceSandbox) -> requests.Session:
    """A plain session that reaches the sandbox's login hosts through its proxy."""
    session = requests.Session()
    session.trust_env = False
    session.verify, session.proxies = str(sandbox.ca_file), {"https": sandbox.password_env()["HTTPS_PROXY"]}
    return session


def _token(sandbox: SalesforceSandbox, host: str, **claims) -> requests.Response:
    """Post a JWT bearer assertion signed with the connected app's key, `claims` overriding."""
    env = sandbox.jwt_env()
    payload = {
        "iss": sandbox.consumer_key,
        "sub": sandbox.username,
        "aud": "https://login.salesforce.com",
        "exp": 4_102_444_800,
        **claims,
    }
    key = Path(env["SALESFORCE_PRIVATE_KEY_FILE"]).read_bytes()
    data = {"grant_type": sf_login.JWT_BEARER, "assertion": jwt.encode(payload, key, algorithm="RS256")}
    return _login_session(sandbox).post(f"https://{host}/services/oauth2/token", data=data)


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        ({}, None, None),
        ({"iss": "3MVG9someOtherApp"}, "invalid_client_id", "client identifier invalid"),
        ({"aud": "https://example.com"}, "invalid_grant", "audience is invalid"),
        ({"exp": 1_000_000_000}, "invalid_grant", "expired authorization code"),
        ({"sub": "someone@else.test"}, "invalid_grant", "user hasn't approved this consumer"),
    ],
)
def test_sandbox_token_endpoint_checks_the_jwt_like_salesforce(sandbox, claims, error, description):
    response = _token(sandbox, "login.salesforce.com", **claims)
    if error is None:
        body = response.json()
        assert response.status_code == 200 and body["token_type"] == "Bearer"
        assert body["instance_url"] == sandbox.url and sandbox.sessions.valid(body["access_token"])
    else:
        assert (response.status_code, response.json()) == (
            400,
            {"error": error, "error_description": description},
        )


def test_sandbox_refuses_a_jwt_signed_with_another_key(sandbox, tmp_path):
    sandbox.jwt_env()
    other_key, _ = sf_login.connected_app_keys(tmp_path / "other")
    assertion = jwt.encode(
        {
            "iss": sandbox.consumer_key,
            "sub": sandbox.username,
            "aud": "https://login.salesforce.com",
            "exp": 4e9,
        },
        other_key.read_bytes(),
        algorithm="RS256",
    )
    response = requests.post(
        f"{sandbox.url}/services/oauth2/token",
        data={"grant_type": sf_login.JWT_BEARER, "assertion": assertion},
        verify=str(sandbox.ca_file),
    )
    assert response.json() == {"error": "invalid_grant", "error_description": "invalid assertion"}


def test_sandbox_soap_login_is_gone_from_api_65(sandbox):
    login = {"username": sandbox.username, "password": sandbox.password, "session": _login_session(sandbox)}
    Salesforce(**login, security_token=sandbox.security_token, version="64.0")
    with pytest.raises(SalesforceAuthenticationFailed) as refused:
        Salesforce(**login, security_token=sandbox.security_token, version="65.0")
    assert refused.value.code == "INVALID_OPERATION"
    assert "not available in the API version specified (65.0)" in refused.value.auth_message


def test_sandbox_caps_logins_per_user_per_hour_and_expires_sessions(sandbox):
    admin = f"{sandbox.url}/_sandbox"
    requests.post(f"{admin}/logins", json={"per_hour": 2}, verify=str(sandbox.ca_file)).raise_for_status()
    env = sandbox.client_credentials_env()
    credentials = {k: env[f"SALESFORCE_{k.upper()}"] for k in ("consumer_key", "consumer_secret", "domain")}
    session = _login_session(sandbox)
    sf = Salesforce(**credentials, session=session)
    assert sf.query("SELECT Id FROM Account LIMIT 1")["totalSize"] == 1
    expired = requests.delete(f"{admin}/sessions", verify=str(sandbox.ca_file)).json()["expired"]
    assert expired == 2  # the fixed SALESFORCE_SESSION_ID and the one just issued
    with pytest.raises(SalesforceExpiredSession) as refused_call:
        Salesforce(instance_url=sandbox.url, session_id=sf.session_id, session=session).query(
            "SELECT Id FROM Account"
        )
    assert refused_call.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    Salesforce(**credentials, session=session)  # the second login of the hour
    with pytest.raises(SalesforceAuthenticationFailed) as refused_login:
        Salesforce(**credentials, session=session)
    assert refused_login.value.code == "rate_limit_exceeded"
    assert sandbox.stats()["logins_this_hour"] == 2


# ------------------------------------------------------------------------------ OAuth 2.0 logins


@pytest.mark.parametrize("flow", ["jwt", "client_credentials"])
def test_an_oauth_login_stages_a_partition(sandbox, use_env, tmp_path, flow):
    env = sandbox.jwt_env() if flow == "jwt" else sandbox.client_credentials_env()
    result = _materialize(use_env(env), tmp_path / "s.duckdb")
    assert result.success
    assert _staged_rows(tmp_path / "s.duckdb") > 0
    assert sandbox.stats()["requests"]["oauth2.token"] == 1 and "login" not in sandbox.stats()["requests"]


@pytest.mark.parametrize("flow", ["jwt", "client_credentials"])
def test_a_wrong_key_or_secret_fails_once_clearly_without_secrets(sandbox, use_env, tmp_path, flow):
    if flow == "jwt":
        wrong_key, _ = sf_login.connected_app_keys(tmp_path / "not-uploaded")
        resource = use_env(sandbox.jwt_env(), SALESFORCE_PRIVATE_KEY_FILE=str(wrong_key))
        expected = ("invalid_grant: invalid assertion", "SALESFORCE_PRIVATE_KEY_FILE")
        secret = wrong_key.read_text().splitlines()[1]
    else:
        secret = "Wr0ngConsumerSecret!"
        resource = use_env(sandbox.client_credentials_env(), SALESFORCE_CONSUMER_SECRET=secret)
        expected = ("invalid_client: invalid client credentials", "SALESFORCE_CONSUMER_SECRET")
    error = failure_without_retry(_materialize(resource, tmp_path / "s.duckdb"))
    assert all(text in error for text in expected), error
    assert secret not in error and sandbox.consumer_secret not in error
    assert _logins(sandbox) == 1  # neither retried nor repeated by Dagster


def test_refused_credentials_in_the_notion_step_fail_once_as_permanent(
    sandbox, use_env, tmp_path, notion_sandbox
):
    """`notion/<Object>` looks up the Salesforce field types; a refused login there is a configuration
    error too: neither the step's retry policy nor the retry sensor repeats it."""
    db = tmp_path / "s.duckdb"
    assert _materialize(use_env(sandbox.client_credentials_env()), db).success
    secret = "Wr0ngConsumerSecret!"
    resources = {
        "salesforce": use_env(sandbox.client_credentials_env(), SALESFORCE_CONSUMER_SECRET=secret),
        "notion": NotionResource(
            token=notion_sandbox.token, base_url=notion_sandbox.url, limiter_path=str(tmp_path / "l.sqlite")
        ),
        "staging": StagingResource(path=str(db)),
    }
    result = materialize(
        [build_notion_asset(_account(), [])], partition_key=DAY, resources=resources, raise_on_error=False
    )
    error = failure_without_retry(result)
    assert "invalid_client: invalid client credentials" in error and "SALESFORCE_CONSUMER_SECRET" in error
    assert secret not in error and sandbox.consumer_secret not in error
    assert _logins(sandbox) == 2  # the staging's login and the refused one, once
    [event] = result.get_step_failure_events()
    assert event.step_failure_data.user_failure_data.metadata[PERMANENT_FAILURE_KEY].value is True


def test_client_credentials_need_a_my_domain(sandbox, use_env, tmp_path):
    resource = use_env(sandbox.client_credentials_env(), SALESFORCE_DOMAIN="login")
    error = failure_without_retry(_materialize(resource, tmp_path / "s.duckdb"))
    assert "SALESFORCE_DOMAIN" in error and "My Domain" in error
    assert _logins(sandbox) == 0


# ----------------------------------------------------------------------------- password login


def test_password_login_at_api_65_fails_before_any_call_naming_oauth(sandbox, use_env, tmp_path):
    resource = use_env(sandbox.password_env(), SALESFORCE_API_VERSION="65.0")
    error = failure_without_retry(_materialize(resource, tmp_path / "s.duckdb"))
    assert "not serve from API 65.0 on" in error and "OAuth 2.0" in error
    assert "SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE + SALESFORCE_USERNAME" in error
    assert sandbox.stats()["requests"] == {}  # nothing was called, not even the login


def test_password_login_below_65_works_with_a_warning_pointing_to_oauth(sandbox, use_env, caplog):
    resource = use_env(sandbox.password_env(), SALESFORCE_API_VERSION="64.0")
    with caplog.at_level(logging.WARNING), build_resources({"salesforce": resource}) as resources:
        assert resources.salesforce.get_client().sf.Account.describe()["name"] == "Account"
    assert "retired in Summer '27" in caplog.text and "SALESFORCE_CONSUMER_KEY" in caplog.text
    assert sandbox.stats()["requests"]["login"] == 1


# ------------------------------------------------------------------------ one session per process


def test_sensor_ticks_checks_and_runs_share_one_login(sandbox, use_env, tmp_path):
    """200 realtime-sensor ticks (polling), 20 budget checks and 30 partition runs in one process: one
    login.
    With a login per `get_client()` the cap of 100 logins an hour would be hit after 100 calls."""
    sandbox.set_login_limit(100)
    resource = use_env(sandbox.jwt_env())
    instance = DagsterInstance.ephemeral()
    tick = Ticker(instance, resource, config=POLLING)  # polling: a REST (Composite) call every tick
    cursor = None
    for n in range(200):
        cursor = tick(cursor).cursor
        if n % 10 == 0:
            with build_resources({"salesforce": resource}) as resources:
                assert salesforce_budget(resources.salesforce)[1] > 0
    for day in (date(2026, 10, 25) + timedelta(days=n) for n in range(30)):
        assert _materialize(
            resource, tmp_path / "s.duckdb", partition_key=day.isoformat(), instance=instance
        ).success
    requests_by_endpoint = sandbox.stats()["requests"]
    assert requests_by_endpoint["composite"] >= 200 and requests_by_endpoint["limits"] == 20
    assert _logins(sandbox) == 1
    assert sandbox.stats()["statuses"].get("400", 0) == 0  # no login was ever refused


@pytest.mark.parametrize("method", ["REST", "Bulk"])
def test_a_session_expired_mid_extraction_is_renewed_and_the_partition_completes(
    day_sandbox, use_env, tmp_path, method
):
    sandbox = day_sandbox
    resource = use_env(sandbox.jwt_env())
    page = "/composite" if method == "REST" else "/results"  # mid-probe / Bulk results pages
    sandbox.inject_fault(expire=1, match=page)
    obj = _account(bulk_threshold=10**9 if method == "REST" else 0)
    with build_resources({"salesforce": resource}) as resources:
        client = resources.salesforce.get_client()
        result = stage_partition(
            client,
            StagingResource(path=str(tmp_path / "s.duckdb")),
            obj,
            DAY,
            log=log,
            rest_batch_size=200,
            bulk_page_records=200,
        )
    assert result.method == method and result.pages > 1
    assert result.rows == result.estimated == _staged_rows(tmp_path / "s.duckdb") > 1
    assert sandbox.stats()["statuses"]["401"] == 1 and _logins(sandbox) == 2


def test_a_session_expired_between_composite_calls_is_renewed_and_the_window_completes(use_env, tmp_path):
    """The session expires after the probe: the chained query-more call renews it and goes on."""
    with SalesforceSandbox(records=2_000, seed=5, workdir=tmp_path / "sf", days=1) as sandbox:
        resource = use_env(sandbox.jwt_env())
        calls: list[int] = []

        def expire_after_the_probe(pages: int, rows: int) -> None:
            calls.append(pages)
            if len(calls) == 1:
                sandbox.expire_sessions()

        with build_resources({"salesforce": resource}) as resources:
            result = stage_partition(
                resources.salesforce.get_client(),
                StagingResource(path=str(tmp_path / "s.duckdb")),
                _account(bulk_threshold=10**9),
                DAY,
                log=log,
                rest_batch_size=200,
                on_page=expire_after_the_probe,
            )
        assert len(calls) >= 2  # the probe's five pages of 200, then query-more calls
        assert result.method == "REST" and result.rows == result.estimated == 2_000
        assert _staged_rows(tmp_path / "s.duckdb") == 2_000
        assert sandbox.stats()["statuses"]["401"] == 1 and _logins(sandbox) == 2


def test_threads_share_the_session_and_renew_it_once(sandbox, use_env):
    resource = use_env(sandbox.client_credentials_env())
    with build_resources({"salesforce": resource}) as resources:
        salesforce = resources.salesforce
        salesforce.get_client()
        sandbox.expire_sessions()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                salesforce.get_client().sf.query("SELECT Id FROM Account LIMIT 1")
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert _logins(sandbox) == 2  # the first login and one renewal for all eight threads


def test_a_login_rate_refusal_says_what_happened(sandbox, use_env):
    sandbox.set_login_limit(0)
    resource = use_env(sandbox.jwt_env())
    with (
        build_resources({"salesforce": resource}) as resources,
        pytest.raises(SalesforceAuthError) as refused,
    ):
        resources.salesforce.get_client()
    assert "login rate exceeded" in str(refused.value) and "3,600 logins per user per hour" in str(
        refused.value
    )


def test_a_fixed_session_that_expires_fails_naming_the_variables(sandbox, tmp_path):
    resource = SalesforceResource(
        instance_url=sandbox.url, session_id=sandbox.session_id, ca_bundle=str(sandbox.ca_file)
    )
    sandbox.expire_sessions()
    error = failure_without_retry(_materialize(resource, tmp_path / "s.duckdb"))
    assert "HTTP 401 INVALID_SESSION_ID" in error and "SALESFORCE_SESSION_ID" in error
    assert sandbox.session_id not in error


# ---------------------------------------------------------------------- transient login answers


@pytest.mark.parametrize("status", [420, 429, 503])
@pytest.mark.parametrize("flow", ["jwt", "password"])
def test_an_unavailable_login_is_retried_not_reported_as_bad_credentials(sandbox, use_env, flow, status):
    env = sandbox.jwt_env() if flow == "jwt" else sandbox.password_env()
    resource = use_env(env, {"backoff_s": 0.01}, SALESFORCE_API_VERSION="62.0")
    path = "/services/oauth2/token" if flow == "jwt" else "/services/Soap/u/"
    sandbox.inject_fault(status, count=2, match=path)
    with build_resources({"salesforce": resource}) as resources:
        client = resources.salesforce.get_client()
    assert client.sf.Account.describe()["name"] == "Account"
    assert sandbox.stats()["statuses"][str(status)] == 2


def test_a_login_that_stays_unavailable_says_so_and_stays_retryable(sandbox, use_env):
    resource = use_env(sandbox.jwt_env(), {"backoff_s": 0.01, "max_retries": 2})
    sandbox.inject_fault(503, count=1_000, match="/services/oauth2/token")
    with (
        build_resources({"salesforce": resource}) as resources,
        pytest.raises(SalesforceUnavailable) as error,
    ):
        resources.salesforce.get_client()
    text = str(error.value)
    assert "HTTP 503" in text and "3 times" in text and "credentials were not checked" in text
    assert not isinstance(error.value, PERMANENT_ERRORS)  # the asset's RetryPolicy gets another go


# ------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SALESFORCE_CA_BUNDLE", "/nonexistent/ca.pem"),
        ("SALESFORCE_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
    ],
)
def test_a_missing_file_fails_at_once_naming_the_variable(sandbox, use_env, tmp_path, variable, value):
    resource = use_env(sandbox.jwt_env(), **{variable: value})
    error = failure_without_retry(_materialize(resource, tmp_path / "s.duckdb"))
    assert f"{variable}={value}" in error
    assert sandbox.stats()["requests"] == {}  # failed before any call, and once (no retry)


def test_an_unknown_api_version_format_names_the_variable(sandbox, use_env):
    resource = use_env(sandbox.jwt_env(), SALESFORCE_API_VERSION="v62")
    with (
        build_resources({"salesforce": resource}) as resources,
        pytest.raises(SalesforceConfigError) as error,
    ):
        resources.salesforce.get_client()
    assert "SALESFORCE_API_VERSION='v62'" in str(error.value)
