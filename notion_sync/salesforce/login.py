"""Logging in to Salesforce once per process and set of credentials.

Salesforce blocks a user's logins for the rest of the hour after 3,600 of them (LOGIN_RATE_EXCEEDED),
so logging in for every `get_client()` (each change-sensor tick, alert check and run step) would
lock the integration out. :func:`shared_login` keeps one :class:`SharedLogin` per process and
credentials; every client and thread uses its session, and when Salesforce answers 401
INVALID_SESSION_ID (the session timed out or was revoked) exactly one thread logs in again.

Login methods, in the order they are chosen (see :func:`login_method`): a given session
(instance URL + session id, never renewed), OAuth 2.0 JWT bearer, OAuth 2.0 client credentials, and
SOAP password login, which Salesforce does not serve from API 65.0 on and retires in Summer '27.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import SalesforceLogin

from notion_sync.salesforce.transport import (
    Backoff,
    LoginSession,
    SalesforceAuthError,
    SalesforceConfigError,
)

SOAP_LOGIN_LAST_VERSION = 64.0  # SOAP login() is not available in API 65.0 and later
LOGIN_RATE_CODES = frozenset({"LOGIN_RATE_EXCEEDED", "rate_limit_exceeded"})
JWT_VARIABLES = "SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE + SALESFORCE_USERNAME"
CLIENT_CREDENTIALS_VARIABLES = "SALESFORCE_CONSUMER_KEY + SALESFORCE_CONSUMER_SECRET + SALESFORCE_DOMAIN"
OAUTH_VARIABLES = (
    f"{JWT_VARIABLES} (OAuth 2.0 JWT bearer flow) or {CLIENT_CREDENTIALS_VARIABLES} (OAuth 2.0 client "
    "credentials flow, SALESFORCE_DOMAIN being your My Domain, e.g. acme.my)"
)
OAUTH_ADVICE = f"Log in with OAuth 2.0 instead: set {OAUTH_VARIABLES}"

log = logging.getLogger(__name__)


class Method(StrEnum):
    SESSION = "session"
    JWT = "JWT bearer"
    CLIENT_CREDENTIALS = "client credentials"
    PASSWORD = "password"


ADVICE = {
    Method.SESSION: "check SALESFORCE_SESSION_ID and SALESFORCE_INSTANCE_URL (a session id expires; "
    "OAuth 2.0 logins are renewed automatically).",
    Method.JWT: f"check {JWT_VARIABLES}: the key must match the certificate uploaded to the connected app, "
    "and the user must be pre-authorized for it.",
    Method.CLIENT_CREDENTIALS: f"check {CLIENT_CREDENTIALS_VARIABLES}: the connected app must enable the "
    "client credentials flow with a run-as user.",
    Method.PASSWORD: "check SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN.",
}


@dataclass(frozen=True)
class Credentials:
    """The login settings of a `SalesforceResource`, as given (None when unset)."""

    instance_url: str | None
    session_id: str | None
    username: str | None
    password: str | None
    security_token: str | None
    domain: str | None
    consumer_key: str | None
    consumer_secret: str | None
    private_key_file: str | None
    api_version: str

    def key(self, ca_bundle: str | None) -> str:
        """Identifies the credentials (secrets included) without keeping them readable."""
        return hashlib.sha256(repr((self, ca_bundle)).encode()).hexdigest()


def login_method(creds: Credentials) -> Method:
    """The login the settings ask for; raises :class:`SalesforceConfigError` naming what to set."""
    if not re.fullmatch(r"\d+\.\d", creds.api_version):
        raise SalesforceConfigError(
            f"SALESFORCE_API_VERSION={creds.api_version!r} is not an API version such as 62.0"
        )
    if creds.instance_url and creds.session_id:
        return Method.SESSION
    if creds.consumer_key and creds.private_key_file:
        _require(creds.username, "SALESFORCE_USERNAME", "the JWT bearer flow logs in as that user")
        return Method.JWT
    if creds.consumer_key and creds.consumer_secret:
        if (creds.domain or "login") in ("login", "test"):
            raise SalesforceConfigError(
                "the client credentials flow (SALESFORCE_CONSUMER_KEY + SALESFORCE_CONSUMER_SECRET) needs "
                "SALESFORCE_DOMAIN set to your org's My Domain (e.g. acme.my for acme.my.salesforce.com); "
                "Salesforce does not serve it on login.salesforce.com or test.salesforce.com"
            )
        return Method.CLIENT_CREDENTIALS
    if creds.consumer_key:
        raise SalesforceConfigError(
            "SALESFORCE_CONSUMER_KEY is set without SALESFORCE_PRIVATE_KEY_FILE (JWT bearer flow) or "
            "SALESFORCE_CONSUMER_SECRET (client credentials flow); set one of them"
        )
    if creds.username and creds.password:
        if float(creds.api_version) > SOAP_LOGIN_LAST_VERSION:
            raise SalesforceConfigError(
                "password login (SALESFORCE_USERNAME + SALESFORCE_PASSWORD) uses SOAP login(), which "
                f"Salesforce does not serve from API 65.0 on (SALESFORCE_API_VERSION={creds.api_version}) "
                f"and retires for every version in Summer '27. {OAUTH_ADVICE}."
            )
        return Method.PASSWORD
    raise SalesforceConfigError(
        f"no Salesforce credentials: set {OAUTH_VARIABLES}; or SALESFORCE_INSTANCE_URL and "
        "SALESFORCE_SESSION_ID (an existing session), or SALESFORCE_USERNAME and SALESFORCE_PASSWORD "
        "(and SALESFORCE_SECURITY_TOKEN; API versions below 65.0 only)"
    )


def _require(value: str | None, variable: str, why: str) -> None:
    if not value:
        raise SalesforceConfigError(f"{variable} is not set: {why}")


def _check_private_key(path: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SalesforceConfigError(
            f"SALESFORCE_PRIVATE_KEY_FILE={path} cannot be read ({error.strerror}); set it to the PEM "
            "private key whose certificate is uploaded to the connected app"
        ) from None
    try:
        load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SalesforceConfigError(
            f"SALESFORCE_PRIVATE_KEY_FILE={path} is not a PEM private key without a passphrase"
        ) from None


def check_ca_bundle(ca_bundle: str | None) -> None:
    """A CA file that is not there fails now, naming the variable, rather than as a retried TLS error."""
    if ca_bundle and not Path(ca_bundle).is_file():
        raise SalesforceConfigError(
            f"SALESFORCE_CA_BUNDLE={ca_bundle} is not a file; set it to the CA certificate file (PEM) to "
            "trust, or unset it to use the system's CAs"
        )


class SharedLogin:
    """The session of one set of credentials, used by every client and thread of the process."""

    def __init__(self, method: Method, log_in: Callable[[], tuple[str, str]] | None = None) -> None:
        self.method = method
        self.advice = ADVICE[method]
        self._log_in = log_in
        self._lock = threading.Lock()
        self.token: str | None = None
        self.instance_url: str | None = None

    @classmethod
    def given(cls, instance_url: str, session_id: str) -> SharedLogin:
        """A session obtained elsewhere: used as is, never renewed."""
        login = cls(Method.SESSION)
        login.token, login.instance_url = session_id, instance_url
        return login

    @property
    def renewable(self) -> bool:
        return self._log_in is not None

    def session(self) -> tuple[str, str]:
        """(session id, instance URL), logging in first if there is no session yet."""
        with self._lock:
            if self.token is None:
                self._renew()
            assert self.token is not None and self.instance_url is not None
            return self.token, self.instance_url

    def renew(self, stale: str) -> str:
        """A session other than `stale`: logs in again, unless another thread already has."""
        with self._lock:
            if self.token in (None, stale):
                self._renew()
            assert self.token is not None
            return self.token

    def _renew(self) -> None:
        if self._log_in is None:
            raise SalesforceAuthError(f"the Salesforce session cannot be renewed; {self.advice}")
        self.token = None  # a failed login leaves no session: the next call tries again
        self.token, self.instance_url = self._log_in()


_LOGINS: dict[str, SharedLogin] = {}
_LOGINS_LOCK = threading.Lock()


def shared_login(creds: Credentials, backoff: Backoff, ca_bundle: str | None) -> SharedLogin:
    """The process's :class:`SharedLogin` for `creds` (made on first use; no call is made here)."""
    method = login_method(creds)
    check_ca_bundle(ca_bundle)
    if method is Method.SESSION:
        assert creds.instance_url and creds.session_id
        return SharedLogin.given(creds.instance_url, creds.session_id)
    key = creds.key(ca_bundle)
    with _LOGINS_LOCK:
        if key not in _LOGINS:
            if method is Method.JWT:
                assert creds.private_key_file
                _check_private_key(creds.private_key_file)  # parsing takes ~50 ms: once, not per client
            _LOGINS[key] = SharedLogin(method, lambda: _log_in(method, creds, backoff, ca_bundle))
        return _LOGINS[key]


def _log_in(method: Method, creds: Credentials, backoff: Backoff, ca_bundle: str | None) -> tuple[str, str]:
    """Log in with simple-salesforce's login functions; returns (session id, instance URL)."""
    if method is Method.PASSWORD:
        log.warning(
            "Salesforce password login (SOAP login()) is not available from API 65.0 on and is retired "
            "in Summer '27. %s.",
            OAUTH_ADVICE,
        )
    arguments = {
        Method.JWT: {
            "username": creds.username,
            "consumer_key": creds.consumer_key,
            "privatekey_file": creds.private_key_file,
        },
        Method.CLIENT_CREDENTIALS: {
            "consumer_key": creds.consumer_key,
            "consumer_secret": creds.consumer_secret,
        },
        Method.PASSWORD: {
            "username": creds.username,
            "password": creds.password,
            "security_token": creds.security_token or "",
        },
    }[method]
    with LoginSession(backoff, ca_bundle=ca_bundle) as session:
        try:
            session_id, instance = SalesforceLogin(
                session=session, domain=creds.domain, sf_version=creds.api_version, **arguments
            )
        except SalesforceAuthenticationFailed as error:
            raise _refused(method, creds, error) from None
    log.info("logged in to Salesforce (%s) at %s", method.value, instance)
    return session_id, f"https://{instance}"


def _refused(
    method: Method, creds: Credentials, error: SalesforceAuthenticationFailed
) -> SalesforceAuthError:
    who = f" for {creds.username}" if creds.username else ""
    reason = (
        f"{error.code}: {error.auth_message.splitlines()[0][:200]}" if error.auth_message else str(error.code)
    )
    if error.code in LOGIN_RATE_CODES:
        return SalesforceAuthError(
            f"Salesforce refused the {method.value} login{who}: login rate exceeded ({reason}). Salesforce "
            "allows 3,600 logins per user per hour and refuses the rest until the hour is out; look for "
            "another process or tool logging in with the same user."
        )
    return SalesforceAuthError(
        f"Salesforce refused the {method.value} login{who} ({reason}); {ADVICE[method]}"
    )
