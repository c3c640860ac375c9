"""How the sandbox Salesforce lets clients in: sessions, the login rate, OAuth 2.0 and SOAP login.

Modelled on real Salesforce (see ``../shared/reference/salesforce-extraction.md``):

- every login (SOAP ``login()`` or ``/services/oauth2/token``) issues a new session; an admin can
  expire all sessions (the org's timeout), after which each call answers 401 ``INVALID_SESSION_ID``;
- more than 3,600 logins an hour by one user are refused (SOAP ``LOGIN_RATE_EXCEEDED``, OAuth
  ``rate_limit_exceeded``) until older logins leave the hour;
- SOAP ``login()`` is not available from API 65.0 on: ``INVALID_OPERATION``, as Salesforce answers;
- the token endpoint serves the JWT bearer grant (an RS256 assertion verified against the connected
  app's certificate, then ``iss``, ``aud``, ``exp`` and ``sub``) and the client credentials grant
  (HTTP Basic consumer key and secret, only on a My Domain host), with Salesforce's error bodies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

LOGINS_PER_HOUR = 3_600
SOAP_LOGIN_LAST_VERSION = 64.0  # "SOAP API login() is not available in API versions 65.0 and later"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_CREDENTIALS = "client_credentials"
ORG_ID = "00DDn0000000001"
USER_ID = "005Dn000000SANDBOX"
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
MY_DOMAIN_SUFFIX = ".my.salesforce.com"


class OAuthError(Exception):
    """A token endpoint refusal: ``{"error": ..., "error_description": ...}`` with its HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class LoginRateExceeded(Exception):
    """The user logged in more than the hourly limit allows."""


class LoginRate:
    """Logins per user in a sliding hour; a login over the limit is refused and not counted."""

    def __init__(self, per_hour: int = LOGINS_PER_HOUR, clock: Callable[[], float] = time.time) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self._times: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def admit(self, user: str) -> None:
        with self._lock:
            now, times = self.clock(), self._times[user]
            while times and times[0] <= now - 3600:
                times.popleft()
            if len(times) >= self.per_hour:
                raise LoginRateExceeded(user)
            times.append(now)

    def count(self, user: str) -> int:
        with self._lock:
            return len(self._times[user])


class Sessions:
    """The valid session ids (access tokens); each login adds one."""

    def __init__(self, *initial: str) -> None:
        self._valid = set(initial)
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = f"{ORG_ID}!AQ0AQ{secrets.token_urlsafe(72)}"
        with self._lock:
            self._valid.add(token)
        return token

    def valid(self, token: str) -> bool:
        with self._lock:
            return token in self._valid

    def expire_all(self) -> int:
        """As when the org's session timeout passes: every session so far answers 401."""
        with self._lock:
            expired = len(self._valid)
            self._valid.clear()
            return expired


@dataclass(frozen=True)
class ConnectedApp:
    """The connected app the integration logs in through; `certificate` is the one uploaded for JWT."""

    consumer_key: str
    consumer_secret: str
    certificate: x509.Certificate | None = None


def connected_app_keys(directory: Path) -> tuple[Path, Path]:
    """An RSA key pair for the JWT bearer flow: ``(private key PEM, self-signed certificate PEM)``,
    as one makes with openssl before uploading the certificate to the connected app."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notion-sync integration")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / "connected-app-key.pem", directory / "connected-app.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def check_jwt_bearer(form: Mapping[str, str], host: str, app: ConnectedApp, username: str) -> None:
    """Validate a JWT bearer assertion as Salesforce does; raises :class:`OAuthError`."""
    assertion = form.get("assertion", "")
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
        algorithm = jwt.get_unverified_header(assertion).get("alg")
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_grant", "invalid assertion") from exc
    if claims.get("iss") != app.consumer_key:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if app.certificate is None or algorithm != "RS256":
        raise OAuthError("invalid_grant", "invalid assertion")
    try:
        options = {"verify_exp": False, "verify_aud": False}  # checked below, with Salesforce's errors
        jwt.decode(assertion, app.certificate.public_key(), algorithms=["RS256"], options=options)
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_grant", "invalid assertion") from exc
    if claims.get("aud") not in (*LOGIN_AUDIENCES, f"https://{host}"):
        raise OAuthError("invalid_grant", "audience is invalid")
    try:
        expires = float(claims.get("exp", 0))
    except (TypeError, ValueError):
        expires = 0
    if expires <= time.time():
        raise OAuthError("invalid_grant", "expired authorization code")
    if claims.get("sub") != username:
        raise OAuthError("invalid_grant", "user hasn't approved this consumer")


def check_client_credentials(
    authorization: str, form: Mapping[str, str], host: str, app: ConnectedApp
) -> None:
    """Validate a client credentials request (Basic auth, or client_id/client_secret in the body)."""
    key, secret = form.get("client_id", ""), form.get("client_secret", "")
    if authorization.startswith("Basic "):
        try:
            key, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OAuthError("invalid_client", "invalid client credentials") from exc
    if not host.endswith(MY_DOMAIN_SUFFIX):
        raise OAuthError("invalid_grant", "request not supported on this domain")
    if key != app.consumer_key:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if not secrets.compare_digest(secret, app.consumer_secret):
        raise OAuthError("invalid_client", "invalid client credentials")


def token_response(grant: str, access_token: str, instance_url: str, host: str) -> dict[str, Any]:
    """A successful token response; client credentials also sign and timestamp it."""
    body: dict[str, Any] = {
        "access_token": access_token,
        "scope": "api",
        "instance_url": instance_url,
        "id": f"https://{host}/id/{ORG_ID}AAA/{USER_ID}",
        "token_type": "Bearer",
    }
    if grant == CLIENT_CREDENTIALS:
        body["signature"] = base64.b64encode(secrets.token_bytes(32)).decode()
        body["issued_at"] = str(int(time.time() * 1000))
    return body


def soap_login_available(version: str) -> bool:
    return float(version) <= SOAP_LOGIN_LAST_VERSION
