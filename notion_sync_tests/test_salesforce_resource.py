"""SalesforceResource: budget accounting, bounded backoff, env wiring, credentials errors."""

from datetime import date

import pytest
import requests
from dagster import build_resources, materialize

from notion_sync.config import ObjectConfig
from notion_sync.salesforce import build_salesforce_asset
from notion_sync.salesforce.resource import (
    ApiBudget,
    ApiBudgetExhausted,
    Backoff,
    SalesforceAuthError,
    SalesforceConfigError,
    SalesforceResource,
)
from notion_sync.staging import StagingResource, connect


def _response(limit_info: str | None, status: int = 200) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    if limit_info:
        response.headers["Sforce-Limit-Info"] = limit_info
    return response


def test_budget_reads_every_response_and_refuses_the_call_that_would_enter_the_reserve():
    budget = ApiBudget(reserve=0.10)
    budget.check()  # nothing known yet: the first call goes ahead
    budget.observe(_response("api-usage=8998/10000"))
    budget.check()  # 1,002 left: one more call keeps 1,001 >= 1,000
    budget.observe(_response("api-usage=8999/10000; per-app-api-usage=3/250(appName=sync)"))
    assert (budget.remaining, budget.calls) == (1001, 2)
    budget.check()
    budget.observe(_response(None))  # a response without the header changes nothing but the count
    budget.observe(_response("api-usage=9000/10000"))
    with pytest.raises(ApiBudgetExhausted, match=r"1000 of 10000 daily calls left.*reserve is 10% \(1000"):
        budget.check()


def test_backoff_delays_grow_exponentially_with_jitter_and_a_cap():
    delays = list(Backoff(retries=8, base_s=1.0, max_s=10.0).delays())
    assert len(delays) == 8
    for attempt, delay in enumerate(delays):
        assert 0.5 * min(10, 2**attempt) <= delay <= 1.5 * min(10, 2**attempt)


def test_backoff_retries_transient_errors_and_failed_results_then_gives_up(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    outcomes = iter([requests.ConnectionError("reset"), 503, 200])

    def attempt() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert Backoff(retries=3, base_s=0.01).call(attempt, failed=lambda status: status == 503) == 200
    calls: list[int] = []

    def unavailable() -> int:
        calls.append(1)
        return 503

    assert Backoff(retries=2, base_s=0.01).call(unavailable, failed=lambda status: status == 503) == 503
    assert len(calls) == 3  # the first try and two retries, no more


def test_certificate_errors_are_not_retried():
    calls = []

    def attempt():
        calls.append(1)
        raise requests.exceptions.SSLError("certificate verify failed")

    with pytest.raises(requests.exceptions.SSLError):
        Backoff(retries=5, base_s=0.01).call(attempt)
    assert len(calls) == 1


def test_from_env_reads_the_contract_variables(monkeypatch, salesforce_sandbox):
    for name in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in salesforce_sandbox.env().items():
        monkeypatch.setenv(name, value)
    with build_resources({"salesforce": SalesforceResource.from_env()}) as resources:  # EnvVars resolve here
        client = resources.salesforce.get_client()
    assert client.sf.Account.describe()["name"] == "Account"
    assert client.budget.calls == 1 and client.budget.remaining is not None


def test_missing_credentials_say_which_variables_to_set():
    with pytest.raises(SalesforceConfigError) as error:
        SalesforceResource().get_client()
    assert "SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE + SALESFORCE_USERNAME" in str(error.value)
    assert "SALESFORCE_INSTANCE_URL and SALESFORCE_SESSION_ID" in str(error.value)


def _password_login(monkeypatch, sandbox, domain: str = "login", **overrides: str) -> None:
    """Point the contract's password-login variables at `sandbox`, through its login-host proxy."""
    for name in ("SALESFORCE_INSTANCE_URL", "SALESFORCE_SESSION_ID", "SALESFORCE_API_VERSION", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in {**sandbox.password_env(domain), **overrides}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("domain", ["login", "test", "acme.my"])
def test_password_login_posts_to_the_domains_login_host(monkeypatch, own_salesforce_sandbox, domain):
    sandbox = own_salesforce_sandbox
    _password_login(monkeypatch, sandbox, domain)
    with build_resources({"salesforce": SalesforceResource.from_env()}) as resources:
        client = resources.salesforce.get_client()
    assert sandbox.sessions.valid(client.sf.session_id)
    assert client.sf.Account.describe()["name"] == "Account"
    stats = sandbox.stats()
    assert stats["requests"]["login"] == 1 and stats["proxy_tunnels"] >= 1


def test_a_partition_is_staged_after_password_login(monkeypatch, own_salesforce_sandbox, tmp_path):
    sandbox = own_salesforce_sandbox
    _password_login(monkeypatch, sandbox)
    obj = ObjectConfig(name="Account", title_field="Name", start_date=date(2026, 10, 1))
    result = materialize(
        [build_salesforce_asset(obj)],
        partition_key="2026-11-20",
        resources={
            "salesforce": SalesforceResource.from_env(),
            "staging": StagingResource(path=str(tmp_path / "s.duckdb")),
        },
    )
    assert result.success
    with connect(tmp_path / "s.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM stg_account").fetchone()[0] > 0


def test_a_wrong_password_fails_at_once_without_echoing_secrets(monkeypatch, own_salesforce_sandbox):
    sandbox = own_salesforce_sandbox
    _password_login(monkeypatch, sandbox, SALESFORCE_PASSWORD="Wr0ngPassw0rd!")
    with (
        build_resources({"salesforce": SalesforceResource.from_env()}) as resources,
        pytest.raises(SalesforceAuthError) as error,
    ):
        resources.salesforce.get_client()
    text = str(error.value)
    assert "INVALID_LOGIN" in text and sandbox.username in text and "SALESFORCE_PASSWORD" in text
    assert "Wr0ngPassw0rd!" not in text and sandbox.security_token not in text
    assert sandbox.stats()["requests"]["login"] == 1  # not retried
