"""Salesforce access: login, one guarded `requests.Session`, the daily API budget.

Every HTTP call of simple-salesforce (REST, Bulk 2.0, describe) goes through :class:`GuardedSession`,
which is where the cross-cutting rules live:

- transient failures (5xx, refused or dropped connections, a body cut off halfway) are retried with
  bounded exponential backoff and jitter, for idempotent methods only (a repeated POST could create
  a second bulk job); the retry wraps the whole `send`, body included, which urllib3's own retry
  (headers only) would not;
- 401 is final: it raises :class:`SalesforceAuthError` at once, never retried;
- `Sforce-Limit-Info: api-usage=N/MAX` is read from every response, and a call that would dip into
  the reserved share of the daily budget is refused with :class:`ApiBudgetExhausted`.

The session id and password are never put into a log or an error message.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from dagster import ConfigurableResource, EnvVar
from pydantic import Field
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

DEFAULT_API_VERSION = "62.0"
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
UNRETRYABLE_ERRORS = (requests.exceptions.SSLError,)  # a ConnectionError that retrying cannot fix
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# connect, read (s): producing a large Bulk results page can take a while.
DEFAULT_TIMEOUT = (10.0, 300.0)
ENV_VARS = {
    "instance_url": "SALESFORCE_INSTANCE_URL",
    "session_id": "SALESFORCE_SESSION_ID",
    "username": "SALESFORCE_USERNAME",
    "password": "SALESFORCE_PASSWORD",
    "security_token": "SALESFORCE_SECURITY_TOKEN",
    "domain": "SALESFORCE_DOMAIN",
    "ca_bundle": "SALESFORCE_CA_BUNDLE",
    "api_version": "SALESFORCE_API_VERSION",
}


log = logging.getLogger(__name__)
T = TypeVar("T")


class SalesforceAuthError(RuntimeError):
    """Salesforce refused the credentials; retrying cannot help."""


class ApiBudgetExhausted(RuntimeError):
    """The org's daily API budget is down to the reserve this platform must leave untouched."""


@dataclass
class ApiBudget:
    """The org-wide daily API budget as last reported by `Sforce-Limit-Info`, and our calls."""

    reserve: float
    used: int | None = None
    limit: int | None = None
    calls: int = 0

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None or self.used is None else self.limit - self.used

    def observe(self, response: requests.Response) -> None:
        self.calls += 1
        usage = Salesforce.parse_api_usage(response.headers.get("Sforce-Limit-Info", "")).get("api-usage")
        if usage is not None:
            self.used, self.limit = usage.used, usage.total

    def check(self) -> None:
        """Refuse the next call if it would leave less than the reserve."""
        remaining = self.remaining
        if remaining is None or self.limit is None:
            return
        floor = int(self.limit * self.reserve)
        if remaining - 1 < floor:
            raise ApiBudgetExhausted(
                f"Salesforce API budget nearly exhausted: {remaining} of {self.limit} daily calls left "
                f"and the reserve is {self.reserve:.0%} ({floor} calls), so this run stopped before "
                f"using it (after {self.calls} calls). The budget is a rolling 24-hour allowance: "
                "re-run the failed partitions later to resume, or lower budget_reserve."
            )


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter: base, 2x base, 4x base... each scaled by 0.5-1.5."""

    retries: int
    base_s: float
    max_s: float = 30.0

    def delays(self) -> Iterator[float]:
        for attempt in range(self.retries):
            yield min(self.max_s, self.base_s * 2**attempt) * (0.5 + random.random())

    def call(self, attempt: Callable[[], T], *, failed: Callable[[T], bool] = lambda _: False) -> T:
        """`attempt()` until it neither raises a transient error nor returns a `failed` result.

        After the last retry the transient error propagates, or the failed result is returned.
        """
        for delay in self.delays():
            try:
                result = attempt()
            except UNRETRYABLE_ERRORS:
                raise
            except TRANSIENT_ERRORS as error:
                reason = type(error).__name__
            else:
                if not failed(result):
                    return result
                reason = f"HTTP {getattr(result, 'status_code', result)}"
            log.warning("Salesforce call failed (%s); retrying in %.1f s", reason, delay)
            time.sleep(delay)
        return attempt()


class GuardedSession(requests.Session):
    """A `requests.Session` that enforces the budget, retries transient failures and stops on 401."""

    def __init__(self, budget: ApiBudget, backoff: Backoff, *, ca_bundle: str | None):
        super().__init__()
        self.budget = budget
        self.backoff = backoff
        self.ca_bundle = ca_bundle

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Our CA file wins over REQUESTS_CA_BUNDLE, which requests would otherwise prefer."""
        settings = super().merge_environment_settings(*args, **kwargs)
        if self.ca_bundle:
            settings["verify"] = self.ca_bundle
        return settings

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = DEFAULT_TIMEOUT

        def attempt() -> requests.Response:
            self.budget.check()
            response = super(GuardedSession, self).send(request, **kwargs)
            self.budget.observe(response)
            return response

        if request.method in IDEMPOTENT_METHODS:
            response = self.backoff.call(attempt, failed=lambda r: r.status_code in TRANSIENT_STATUSES)
        else:
            response = attempt()
        if response.status_code == 401:
            raise SalesforceAuthError(
                f"Salesforce rejected the credentials (HTTP 401 {_error_code(response)}); check "
                "SALESFORCE_SESSION_ID / SALESFORCE_INSTANCE_URL or the username, password and security "
                "token. Not retried."
            )
        return response


def _error_code(response: requests.Response) -> str:
    try:
        return response.json()[0]["errorCode"]
    except (ValueError, LookupError, TypeError):
        return "unauthorized"


@dataclass
class SalesforceClient:
    """A logged-in simple-salesforce client and the budget its session tracks."""

    sf: Salesforce
    budget: ApiBudget
    backoff: Backoff


class SalesforceResource(ConfigurableResource):
    """Salesforce over simple-salesforce: session login (instance_url + session_id) or password login."""

    instance_url: str | None = None
    session_id: str | None = None
    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    domain: str | None = None
    ca_bundle: str | None = Field(default=None, description="CA file to trust, e.g. the sandbox's")
    api_version: str = DEFAULT_API_VERSION
    budget_reserve: float = Field(
        default=0.10, ge=0, le=1, description="Share of the daily API budget left untouched for others"
    )
    max_retries: int = Field(default=4, ge=0, le=10, description="Retries of a transient failure per call")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles, plus jitter")

    @classmethod
    def from_env(cls) -> SalesforceResource:
        """Every `SALESFORCE_*` variable that is set, as an `EnvVar` (so secrets stay out of the UI)."""
        return cls(**{field: EnvVar(var) for field, var in ENV_VARS.items() if os.environ.get(var)})

    def get_client(self) -> SalesforceClient:
        """Log in and return a client; one per run, so the budget counts that run's calls."""
        budget = ApiBudget(reserve=self.budget_reserve)
        backoff = Backoff(self.max_retries, self.backoff_s)
        session = GuardedSession(budget, backoff, ca_bundle=self.ca_bundle)
        version = self.api_version or DEFAULT_API_VERSION
        if self.instance_url and self.session_id:
            sf = Salesforce(
                instance_url=self.instance_url, session_id=self.session_id, session=session, version=version
            )
        elif self.username and self.password:
            try:
                sf = Salesforce(
                    username=self.username,
                    password=self.password,
                    security_token=self.security_token or "",
                    domain=self.domain,
                    session=session,
                    version=version,
                )
            except SalesforceAuthenticationFailed as error:
                raise SalesforceAuthError(
                    f"Salesforce password login failed for {self.username} ({error.code}); check "
                    "SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN."
                ) from None
        else:
            raise SalesforceAuthError(
                "no Salesforce credentials: set SALESFORCE_INSTANCE_URL and SALESFORCE_SESSION_ID, "
                "or SALESFORCE_USERNAME and SALESFORCE_PASSWORD (and SALESFORCE_SECURITY_TOKEN)"
            )
        return SalesforceClient(sf=sf, budget=budget, backoff=backoff)
