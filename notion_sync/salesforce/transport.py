"""Salesforce over HTTP: the guarded API session, the login session, the daily API budget, errors.

Every API call of simple-salesforce (REST, Bulk 2.0, describe) goes through :class:`GuardedSession`,
which is where the cross-cutting rules live:

- transient failures (420, 429, 5xx, refused or dropped connections, a body cut off halfway) are
  retried with bounded exponential backoff and jitter, for idempotent methods only (a repeated POST
  could create a second bulk job); the retry wraps the whole `send`, body included, which urllib3's
  own retry (headers only) would not;
- every call carries the process's current session (see :mod:`notion_sync.salesforce.login`); a
  401 ``INVALID_SESSION_ID`` logs in again once and repeats the call; a 401 after that, or with a
  fixed session id, raises :class:`SalesforceAuthError`;
- `Sforce-Limit-Info: api-usage=N/MAX` is read from every response, and a call that would dip into
  the reserved share of the daily budget is refused with :class:`ApiBudgetExhausted`.

Logins go through :class:`LoginSession`: an answer that says Salesforce is unavailable (420, 429, an
HTML error page with a 5xx) is retried the same way and then raises :class:`SalesforceUnavailable`,
never a credentials error. The session id, password and secrets are never put into a log or an error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from simple_salesforce import Salesforce

from notion_sync.permanent import PermanentFailure

if TYPE_CHECKING:
    from notion_sync.salesforce.login import SharedLogin

TRANSIENT_STATUSES = frozenset({420, 429, 500, 502, 503, 504})
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
UNRETRYABLE_ERRORS = (requests.exceptions.SSLError,)  # a ConnectionError that retrying cannot fix
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# connect, read (s): producing a large Bulk results page can take a while.
DEFAULT_TIMEOUT = (10.0, 300.0)

log = logging.getLogger(__name__)
T = TypeVar("T")


class SalesforceAuthError(RuntimeError):
    """Salesforce refused the credentials; retrying cannot help."""


class SalesforceConfigError(PermanentFailure):
    """The Salesforce settings are missing, contradictory or point at nothing; nothing was called.

    A permanent failure wherever it is raised (an asset, a check): no retry can fix a setting, and
    each one would only repeat the same message.
    """


class SalesforceUnavailable(RuntimeError):
    """Salesforce's login answered "unavailable" every time; a later try can succeed."""


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


class _TrustingSession(requests.Session):
    """A session that trusts `ca_bundle` (if given) and sets a timeout on every call."""

    def __init__(self, backoff: Backoff, *, ca_bundle: str | None):
        super().__init__()
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
        return super().send(request, **kwargs)


def login_unavailable(response: requests.Response) -> bool:
    """420/429, or a 5xx that is not a SOAP fault (bad credentials are a SOAP fault with HTTP 500)."""
    if response.status_code in (420, 429):
        return True
    return response.status_code >= 500 and b"faultcode" not in response.content


class LoginSession(_TrustingSession):
    """The session logins are posted with: Salesforce being unavailable is retried, then reported as such."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = self.backoff.call(
            lambda: super(LoginSession, self).send(request, **kwargs), failed=login_unavailable
        )
        if login_unavailable(response):
            raise SalesforceUnavailable(
                f"Salesforce login at {urlsplit(request.url).hostname} answered HTTP {response.status_code} "
                f"{response.reason} {self.backoff.retries + 1} times: Salesforce is unavailable or limiting "
                "requests (the credentials were not checked). Try again later; a failed run is retried."
            )
        return response


class GuardedSession(_TrustingSession):
    """A `requests.Session` that enforces the budget, retries transient failures and renews the login."""

    def __init__(self, budget: ApiBudget, backoff: Backoff, *, ca_bundle: str | None, login: SharedLogin):
        super().__init__(backoff, ca_bundle=ca_bundle)
        self.budget = budget
        self.login = login

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        token = self.login.session()[0]
        response = self._send(request, token, **kwargs)
        if (
            response.status_code == 401
            and self.login.renewable
            and _error_code(response) == "INVALID_SESSION_ID"
        ):
            log.warning(
                "Salesforce session expired (401 INVALID_SESSION_ID); logging in again and repeating the call"
            )
            response = self._send(request, self.login.renew(stale=token), **kwargs)
        if response.status_code == 401:
            raise SalesforceAuthError(
                f"Salesforce rejected the credentials (HTTP 401 {_error_code(response)}); "
                f"{self.login.advice} Not retried."
            )
        return response

    def _send(self, request: requests.PreparedRequest, token: str, **kwargs: Any) -> requests.Response:
        """One call with `token` (whatever session the caller's headers carry), budget and retries."""
        if request.headers.get("Authorization", "").startswith("Bearer "):
            request.headers["Authorization"] = f"Bearer {token}"

        def attempt() -> requests.Response:
            self.budget.check()
            response = super(GuardedSession, self).send(request, **kwargs)
            self.budget.observe(response)
            return response

        if request.method in IDEMPOTENT_METHODS:
            return self.backoff.call(attempt, failed=lambda r: r.status_code in TRANSIENT_STATUSES)
        return attempt()


def _error_code(response: requests.Response) -> str:
    try:
        return response.json()[0]["errorCode"]
    except (ValueError, LookupError, TypeError):
        return "unauthorized"
