"""`SalesforceResource`: the Salesforce settings, and a logged-in client per run.

The client's HTTP rules (retries, budget, session renewal) are in
:mod:`notion_sync.salesforce.transport`; logins, one per process and credentials, in
:mod:`notion_sync.salesforce.login`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field
from simple_salesforce import Salesforce

from notion_sync.salesforce.ids import org_id_of_session
from notion_sync.salesforce.login import Credentials, shared_login
from notion_sync.salesforce.pubsub.events import DEFAULT_ENDPOINT as DEFAULT_PUBSUB_ENDPOINT
from notion_sync.salesforce.pubsub.events import PubSubAuth
from notion_sync.salesforce.transport import (
    ApiBudget,
    ApiBudgetExhausted,
    Backoff,
    GuardedSession,
    SalesforceAuthError,
    SalesforceConfigError,
    SalesforceUnavailable,
)

if TYPE_CHECKING:
    from notion_sync.salesforce.pubsub.client import PubSubClient

__all__ = [
    "ApiBudget",
    "ApiBudgetExhausted",
    "Backoff",
    "SalesforceAuthError",
    "SalesforceClient",
    "SalesforceConfigError",
    "SalesforceResource",
    "SalesforceUnavailable",
]

DEFAULT_API_VERSION = "62.0"
ENV_VARS = {
    "instance_url": "SALESFORCE_INSTANCE_URL",
    "session_id": "SALESFORCE_SESSION_ID",
    "consumer_key": "SALESFORCE_CONSUMER_KEY",
    "consumer_secret": "SALESFORCE_CONSUMER_SECRET",
    "private_key_file": "SALESFORCE_PRIVATE_KEY_FILE",
    "username": "SALESFORCE_USERNAME",
    "password": "SALESFORCE_PASSWORD",
    "security_token": "SALESFORCE_SECURITY_TOKEN",
    "domain": "SALESFORCE_DOMAIN",
    "ca_bundle": "SALESFORCE_CA_BUNDLE",
    "api_version": "SALESFORCE_API_VERSION",
    "pubsub_endpoint": "SALESFORCE_PUBSUB_ENDPOINT",
}


@dataclass
class SalesforceClient:
    """A logged-in simple-salesforce client and the budget its session tracks."""

    sf: Salesforce
    budget: ApiBudget
    backoff: Backoff


class SalesforceResource(ConfigurableResource):
    """Salesforce over simple-salesforce: OAuth 2.0 (JWT bearer or client credentials), an existing
    session (instance_url + session_id), or password login (API versions below 65.0)."""

    instance_url: str | None = None
    session_id: str | None = None
    consumer_key: str | None = Field(default=None, description="Connected app consumer key (OAuth 2.0)")
    consumer_secret: str | None = Field(default=None, description="Consumer secret (client credentials)")
    private_key_file: str | None = Field(default=None, description="PEM private key (JWT bearer flow)")
    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    domain: str | None = Field(default=None, description="login, test, or the My Domain (e.g. acme.my)")
    ca_bundle: str | None = Field(default=None, description="CA file to trust, e.g. the sandbox's")
    api_version: str = DEFAULT_API_VERSION
    pubsub_endpoint: str = Field(
        default=DEFAULT_PUBSUB_ENDPOINT, description="Pub/Sub API host:port (Change Data Capture events)"
    )
    budget_reserve: float = Field(
        default=0.10, ge=0, le=1, description="Share of the daily API budget left untouched for others"
    )
    max_retries: int = Field(default=4, ge=0, le=10, description="Retries of a transient failure per call")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles, plus jitter")

    @classmethod
    def from_env(cls, **settings: Any) -> SalesforceResource:
        """Every `SALESFORCE_*` variable that is set, as an `EnvVar` (so secrets stay out of the UI),
        and `settings` (e.g. ``max_retries``)."""
        return cls(
            **{field: EnvVar(var) for field, var in ENV_VARS.items() if os.environ.get(var)}, **settings
        )

    def credentials(self) -> Credentials:
        return Credentials(
            instance_url=self.instance_url,
            session_id=self.session_id,
            username=self.username,
            password=self.password,
            security_token=self.security_token,
            domain=self.domain,
            consumer_key=self.consumer_key,
            consumer_secret=self.consumer_secret,
            private_key_file=self.private_key_file,
            api_version=self.api_version or DEFAULT_API_VERSION,
        )

    def get_client(self) -> SalesforceClient:
        """A client on the process's session for these credentials (logging in only if there is none
        yet); its budget counts this client's calls, so make one per run or tick.

        Raises :class:`SalesforceConfigError` before any call when the settings are wrong.
        """
        backoff = Backoff(self.max_retries, self.backoff_s)
        credentials = self.credentials()
        login = shared_login(credentials, backoff, self.ca_bundle)
        session_id, instance_url = login.session()
        budget = ApiBudget(reserve=self.budget_reserve)
        session = GuardedSession(budget, backoff, ca_bundle=self.ca_bundle, login=login)
        sf = Salesforce(
            instance_url=instance_url,
            session_id=session_id,
            session=session,
            version=credentials.api_version,
        )
        return SalesforceClient(sf=sf, budget=budget, backoff=backoff)

    def pubsub_client(self) -> PubSubClient:
        """A Pub/Sub API channel authenticated with the process's session (access token, instance
        URL, org id); a session the API refuses is renewed once per tick by the caller's next call."""
        from notion_sync.salesforce.pubsub.client import PubSubClient  # gRPC: only where a channel opens

        login = shared_login(self.credentials(), Backoff(self.max_retries, self.backoff_s), self.ca_bundle)
        session_id, instance_url = login.session()
        auth = PubSubAuth(session_id, instance_url, org_id_of_session(session_id))
        return PubSubClient(self.pubsub_endpoint or DEFAULT_PUBSUB_ENDPOINT, auth, self.ca_bundle)

    def renew_session(self, stale: str) -> None:
        """After the Pub/Sub API refused ``stale`` (UNAUTHENTICATED): log in again if we can."""
        login = shared_login(self.credentials(), Backoff(self.max_retries, self.backoff_s), self.ca_bundle)
        if login.renewable:
            login.renew(stale)
