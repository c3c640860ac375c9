"""Sync configuration: which Salesforce objects go to which Notion databases, and how.

The YAML is validated completely at load time, before any API call, and every error names the
key that is wrong (``objects.Contact.relations.AccountId``) and what to do about it.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from dagster._utils.schedules import is_valid_cron_string  # the same check Dagster applies to schedules
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_FILE = "notion_sync.yaml"
ALERT_WEBHOOK_ENV = "NOTION_SYNC_ALERT_WEBHOOK_URL"
SALESFORCE_ID_PROPERTY = "Salesforce Id"
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """The sync config cannot be used; the message names the key and what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotionTarget(_Strict):
    """Where an object's pages live: an existing database, or one created under the parent page."""

    database_id: str | None = None
    title: str | None = Field(default=None, description="Title of the database when it is created")
    trashed_pages: Literal["restore", "skip"] = Field(
        default="restore",
        description="A page a person moved to the trash in Notion, when its record changes: restore it "
        "with the update, or leave it there and skip the record (shown in `notion-sync status`)",
    )


class ScheduleConfig(_Strict):
    cron: str
    enabled: bool = True
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        if not is_valid_cron_string(value):
            raise ValueError(f"'{value}' is not a valid cron string (five fields, e.g. '*/15 * * * *')")
        return value


class ObjectConfig(_Strict):
    """One Salesforce object mirrored into one Notion data source."""

    name: str
    notion: NotionTarget = NotionTarget()
    title_field: str
    fields: dict[str, str] = Field(
        default_factory=dict, description="Salesforce field API name -> Notion property name"
    )
    relations: dict[str, str] = Field(
        default_factory=dict, description="Salesforce reference field -> configured parent object"
    )
    start_date: date
    schedule: ScheduleConfig | None = None
    batch_size: int = Field(default=200, ge=1, le=10_000)
    bulk_threshold: int = Field(default=10_000, ge=0)
    history_days: int = Field(
        default=90, ge=1, description="sync_log and api_usage rows of the object kept this many days"
    )
    mode: Literal["realtime", "batch", "scheduled"] = "batch"
    formula_refresh: ScheduleConfig | None = Field(
        default=None,
        description="When the mapped formula fields are re-read (they change without SystemModstamp); "
        "default: with the weekly reconcile (reconcile.schedule)",
    )
    lookback_seconds: int = Field(
        default=600,
        ge=0,
        le=86_400,
        description="The change sensor reads again this far behind the newest change it saw, for "
        "transactions that commit late with an earlier SystemModstamp (Airbyte uses 600)",
    )
    drift: Literal["resync", "report"] = Field(
        default="resync",
        description="Pages edited by hand in Notion (synced values that differ from the staged record), "
        "found by the weekly reconcile: sync them again (resync) or only count them (report)",
    )
    max_partitions_per_run: int = Field(
        default=30,
        ge=1,
        le=366,
        description="Days of a backfill one run extracts and syncs together (BackfillPolicy.multi_run): "
        "one COUNT and one query or Bulk job per range instead of per day",
    )
    owners: tuple[str, ...] = Field(
        default=(), description="Dagster asset owners: emails or 'team:name', shown in the UI"
    )

    @field_validator("name")
    @classmethod
    def _api_name(cls, value: str) -> str:
        if not _API_NAME.match(value):
            raise ValueError(f"'{value}' is not a Salesforce API name (letters, digits, underscores)")
        return value

    @field_validator("fields", "relations")
    @classmethod
    def _field_names(cls, value: dict[str, str]) -> dict[str, str]:
        for field in value:
            if not _API_NAME.match(field):
                raise ValueError(f"'{field}' is not a Salesforce field API name")
        return value

    @field_validator("owners")
    @classmethod
    def _owner_form(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for owner in value:
            if "@" not in owner and not owner.startswith("team:"):
                raise ValueError(f"owner '{owner}' must be an email address or 'team:<name>'")
        return value

    @model_validator(mode="after")
    def _properties_consistent(self) -> ObjectConfig:
        names = self.property_names()
        if SALESFORCE_ID_PROPERTY in names.values():
            raise ValueError(f"'{SALESFORCE_ID_PROPERTY}' is reserved for the record Id; map no field to it")
        seen: dict[str, str] = {}
        for field, prop in names.items():
            if prop in seen:
                raise ValueError(f"fields {seen[prop]} and {field} both map to Notion property '{prop}'")
            seen[prop] = field
        if self.mode == "scheduled" and (self.schedule is None or not self.schedule.enabled):
            raise ValueError("mode 'scheduled' needs an enabled schedule (schedule: {cron: ...})")
        return self

    def property_names(self) -> dict[str, str]:
        """Every synced Salesforce field with its Notion property name, title field first."""
        names = {self.title_field: self.fields.get(self.title_field, self.title_field)}
        names.update(self.fields)
        for field, parent in self.relations.items():
            names.setdefault(field, self.fields.get(field, parent))
        return names

    @property
    def staging_table(self) -> str:
        return f"stg_{self.name.lower()}"


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class AlertConfig(_Strict):
    webhook_url: str | None = Field(
        default=None,
        description=f"Slack-compatible webhook; {ALERT_WEBHOOK_ENV} overrides it (a URL with a secret in it "
        "belongs in the environment, not in a committed file)",
    )
    failure_rate: float = Field(default=0.01, ge=0, le=1)
    window_minutes: float = Field(
        default=60, gt=0, description="Window over which the failure rate and 429s are counted"
    )
    rate_limited_runs: int = Field(
        default=3, ge=1, description="Rate-limited failed runs within the window that raise an alert"
    )
    rate_limited_calls: int = Field(
        default=100, ge=1, description="Notion 429 answers within the window (all syncs) that raise an alert"
    )
    api_budget_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Alert when less than this share of the Salesforce daily API budget is left",
    )
    check_interval_seconds: int = Field(default=300, ge=5, description="How often the health sensor runs")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        if value is not None and not _is_http_url(value):
            raise ValueError("must be a full http:// or https:// URL")
        return value


class RetryConfig(_Strict):
    """How the retry sensor re-launches failed partitions (see notion_sync.automation.retry_policy)."""

    backoff_minutes: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 4.0],
        description="Delay before retry n (the last value repeats); fractions allowed, e.g. 0.05 = 3 s",
    )
    min_after_rate_limit_minutes: float = Field(default=5.0, ge=0)
    max_attempts: int = Field(default=3, ge=0, description="Retries per partition before an alert")
    check_interval_seconds: int = Field(default=30, ge=1, description="How often the retry sensor runs")

    @field_validator("backoff_minutes")
    @classmethod
    def _backoff_positive(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("give at least one delay and no negative delays, e.g. [1, 2, 4]")
        return value


class RealtimeConfig(_Strict):
    """The `realtime_changes` sensor of objects with mode `realtime` (notion_sync.automation.realtime)."""

    interval_seconds: int = Field(
        default=15, ge=1, description="How often an object without change events is polled"
    )
    change_events: bool = Field(
        default=True,
        description="Take changes from Change Data Capture (Pub/Sub API) for objects selected for CDC; "
        "the others are polled",
    )
    listen_seconds: float = Field(
        default=4.0,
        gt=0,
        le=50,
        description="How long a tick waits for change events (the daemon starts a tick every 5 s at most)",
    )
    events_per_tick: int = Field(default=1_000, ge=1, le=10_000, description="Change events read per tick")
    cdc_retry_minutes: float = Field(
        default=60,
        ge=0,
        description="After the Pub/Sub API refused an object (not selected for CDC, delivery allocation "
        "spent), it is polled for this long before change events are tried again",
    )


class ReconcileConfig(_Strict):
    schedule: ScheduleConfig = ScheduleConfig(cron="0 3 * * 0")


class SyncConfig(_Strict):
    objects: dict[str, ObjectConfig]
    alerts: AlertConfig = AlertConfig()
    retry: RetryConfig = RetryConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    reconcile: ReconcileConfig = ReconcileConfig()

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        """Fill each object's `name` from its key and missing keys from the top-level `defaults`."""
        if not isinstance(data, dict):
            raise ValueError("the config must be a mapping with an 'objects' key")
        data = dict(data)
        defaults = data.pop("defaults", None) or {}
        if not isinstance(defaults, dict):
            raise ValueError("'defaults' must be a mapping")
        objects = data.get("objects")
        if isinstance(objects, dict):
            data["objects"] = {
                key: {**defaults, **(value or {}), "name": key}
                if isinstance(value, dict) or value is None
                else value
                for key, value in objects.items()
            }
        return data

    @model_validator(mode="after")
    def _relations_resolve(self) -> SyncConfig:
        if not self.objects:
            raise ValueError("'objects' is empty: configure at least one Salesforce object")
        for obj in self.objects.values():
            for field, parent in obj.relations.items():
                if parent not in self.objects:
                    raise ValueError(
                        f"objects.{obj.name}.relations.{field}: '{parent}' is not a configured object; "
                        f"add it under 'objects' or remove the relation"
                    )
        cycle = _find_cycle({name: self.parents_of(name) for name in self.objects})
        if cycle:
            raise ValueError(
                "objects relations form a cycle: "
                + " -> ".join(cycle)
                + "; Notion assets must be ordered parents first, so break the cycle"
            )
        return self

    def parents_of(self, name: str) -> list[str]:
        """Other configured objects this one relates to (a self-relation is resolved within a run)."""
        return sorted({p for p in self.objects[name].relations.values() if p != name})


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (found := visit(start)):
            return found
    return None


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against the README's config reference"
        elif item["type"] == "missing":
            message = "required key is missing"
        lines.append(f"  {loc or '(top level)'}: {message}")
    return f"invalid sync config {source}:\n" + "\n".join(lines)


def parse_config(data: Any, source: str = "<memory>") -> SyncConfig:
    try:
        return SyncConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def config_path() -> Path:
    """`NOTION_SYNC_CONFIG`, else `notion_sync.yaml` in the working directory, else the bundled example."""
    configured = os.environ.get("NOTION_SYNC_CONFIG")
    if configured:
        return Path(configured)
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.exists() else Path(__file__).resolve().parents[1] / DEFAULT_CONFIG_FILE


def load_config(path: str | Path | None = None) -> SyncConfig:
    path = Path(path) if path is not None else config_path()
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sync config {path} not found; set NOTION_SYNC_CONFIG to your YAML file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"sync config {path} is not valid YAML: {error}") from None
    return _with_env_webhook(parse_config(data, str(path)))


def _with_env_webhook(config: SyncConfig) -> SyncConfig:
    """`NOTION_SYNC_ALERT_WEBHOOK_URL`, when set, replaces `alerts.webhook_url` (never echoed: a secret)."""
    url = os.environ.get(ALERT_WEBHOOK_ENV)
    if not url:
        return config
    if not _is_http_url(url):
        raise ConfigError(f"{ALERT_WEBHOOK_ENV} is not a full http:// or https:// URL; fix or unset it")
    return config.model_copy(update={"alerts": config.alerts.model_copy(update={"webhook_url": url})})
