"""Alerts: failed runs, a high failure rate, repeated 429s, a Salesforce API budget near its reserve.

Every alert goes to the log and, when `alerts.webhook_url` is set, to a Slack-compatible webhook
(``{"text": ...}``). Delivery is best effort: a webhook that refuses the connection or answers
500 is logged and never fails a sensor tick. Alert texts name objects, partitions and run ids,
never a token, session id or the webhook URL itself (which embeds a secret for Slack).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from notion_sync.automation.failures import first_error_line, is_rate_limited, planned_asset_keys
from notion_sync.automation.names import object_asset_keys, object_job_names
from notion_sync.config import AlertConfig, SyncConfig
from notion_sync.salesforce.resource import SalesforceResource

WEBHOOK_TIMEOUT_S = 5.0
NOTION_429_METADATA = "rate_limited_429s"  # recorded by every notion/<Object> materialization
MAX_MATERIALIZATIONS = 10_000  # per asset and window; far above a day's partitions
logger = logging.getLogger(__name__)


def send_alert(text: str, webhook_url: str | None, log: logging.Logger | None = None) -> bool:
    """Log the alert and post it to the webhook if there is one; True if the webhook took it."""
    log = log or logger
    log.warning("ALERT: %s", text)
    if not webhook_url:
        return False
    try:
        response = requests.post(
            webhook_url, json={"text": f"notion-sync: {text}"}, timeout=WEBHOOK_TIMEOUT_S
        )
        response.raise_for_status()
    except requests.RequestException as error:
        # The URL is a credential (Slack's embeds one): report only the kind of failure.
        status = getattr(error.response, "status_code", None)
        log.error("alert webhook delivery failed (%s)", f"HTTP {status}" if status else type(error).__name__)
        return False
    return True


@dataclass(frozen=True)
class ProjectRuns:
    """This project's runs on an instance other code locations may share: runs of a configured
    object's job, or runs that materialize or check one of its assets (the UI's and the command
    line's asset jobs)."""

    job_names: frozenset[str]
    asset_keys: frozenset[AssetKey]

    @classmethod
    def of(cls, config: SyncConfig) -> ProjectRuns:
        return cls(
            frozenset(name for object_name in config.objects for name in object_job_names(object_name)),
            frozenset(key for object_name in config.objects for key in object_asset_keys(object_name)),
        )

    def includes(self, instance: DagsterInstance, run: DagsterRun) -> bool:
        return run.job_name in self.job_names or not self.asset_keys.isdisjoint(
            planned_asset_keys(instance, run.run_id)
        )


def build_run_failure_alert_sensor(config: SyncConfig) -> SensorDefinition:
    """Every failed run of this project, however launched: Dagster matches a run to this code location
    by the origin the daemon or the UI gave it, and a run launched from a shell (`dagster asset
    materialize`, `execute_in_process`) has none, so the sensor watches every code location of the
    instance and keeps the runs of the configured objects' jobs and assets."""
    alerts = config.alerts
    ours = ProjectRuns.of(config)

    @run_failure_sensor(
        name="notion_sync_run_failure_alert",
        description="Reports every failed run of notion-sync's jobs and assets (daemon, UI or command "
        "line) to the log and the alert webhook, with the first line of its error.",
        monitor_all_code_locations=True,
        default_status=DefaultSensorStatus.RUNNING,
    )
    def notion_sync_run_failure_alert(context: RunFailureSensorContext) -> None:
        run = context.dagster_run
        if not ours.includes(context.instance, run):  # another code location's run on a shared instance
            return
        partition = run.tags.get("dagster/partition")
        cause = (
            first_error_line(context.instance, run.run_id) or context.failure_event.message or "run failed"
        )
        send_alert(
            f"run {run.run_id} of {run.job_name}"
            + (f" (partition {partition})" if partition else "")
            + f" failed: {cause[:300]}",
            alerts.webhook_url,
            context.log,
        )

    return notion_sync_run_failure_alert


@dataclass(frozen=True)
class RunHealth:
    finished: int
    failed: int
    rate_limited: int  # failed runs whose failure was a 429
    calls_rate_limited: int = 0  # 429 answers the Notion syncs met (and survived) in the window

    @property
    def failure_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


def run_health(instance: DagsterInstance, since: float, notion_keys: Iterable[AssetKey] = ()) -> RunHealth:
    """Finished and failed runs since `since` (POSIX seconds), how many failures were 429s, and the
    429s recorded by the `notion/*` materializations (metadata `rate_limited_429s`)."""
    finished_statuses = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]
    records = instance.get_run_records(
        RunsFilter(statuses=finished_statuses, updated_after=datetime.fromtimestamp(since, UTC))
    )
    failed = [r for r in records if r.dagster_run.status == DagsterRunStatus.FAILURE]
    calls = 0
    for key in notion_keys:
        events = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, after_timestamp=float(since)), limit=MAX_MATERIALIZATIONS
        )
        for event in events.records:
            value = event.asset_materialization.metadata.get(NOTION_429_METADATA)
            calls += int(value.value) if value is not None else 0
    return RunHealth(
        finished=len(records),
        failed=len(failed),
        rate_limited=sum(is_rate_limited(instance, r) for r in failed),
        calls_rate_limited=calls,
    )


def health_alerts(health: RunHealth, budget: tuple[int, int] | None, alerts: AlertConfig) -> dict[str, str]:
    """Alert texts by kind for one health check; `budget` is (remaining, max) daily Salesforce calls."""
    texts = {}
    window = f"in the last {alerts.window_minutes:g} minutes"
    if health.finished and health.failure_rate > alerts.failure_rate:
        texts["failure_rate"] = (
            f"{health.failed} of {health.finished} runs failed {window} ({health.failure_rate:.1%}, "
            f"threshold {alerts.failure_rate:.1%})"
        )
    repeated_429s = health.calls_rate_limited >= alerts.rate_limited_calls
    if repeated_429s or health.rate_limited >= alerts.rate_limited_runs:
        texts["rate_limited"] = (
            f"repeated Notion rate limiting {window}: {health.calls_rate_limited} answers 429, "
            f"{health.rate_limited} runs failed on it"
        )
    if budget is not None:
        remaining, maximum = budget
        if maximum and remaining / maximum < alerts.api_budget_share:
            texts["api_budget"] = (
                f"Salesforce API budget low: {remaining} of {maximum} daily calls left "
                f"(alert under {alerts.api_budget_share:.0%})"
            )
    return texts


def salesforce_budget(salesforce: SalesforceResource) -> tuple[int, int]:
    """(Remaining, Max) of the org's DailyApiRequests, from the limits resource (one API call)."""
    daily = salesforce.get_client().sf.limits()["DailyApiRequests"]
    return int(daily["Remaining"]), int(daily["Max"])


def build_health_sensor(config: SyncConfig) -> SensorDefinition:
    alerts = config.alerts
    notion_keys = [object_asset_keys(name)[1] for name in config.objects]

    @sensor(
        name="notion_sync_health",
        minimum_interval_seconds=alerts.check_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerts on a failure rate over alerts.failure_rate, repeated 429s and a low "
        "Salesforce API budget.",
    )
    def notion_sync_health(context: SensorEvaluationContext, salesforce: SalesforceResource) -> SkipReason:
        health = run_health(context.instance, time.time() - alerts.window_minutes * 60, notion_keys)
        try:
            budget: tuple[int, int] | None = salesforce_budget(salesforce)
        except Exception as error:  # an unreachable Salesforce must not stop the run checks
            context.log.warning(f"could not read the Salesforce API budget: {type(error).__name__}")
            budget = None
        texts = health_alerts(health, budget, alerts)
        # The cursor holds the conditions already reported: each is sent once when it starts.
        active = set(json.loads(context.cursor)) if context.cursor else set()
        for kind, text in texts.items():
            if kind not in active:
                send_alert(text, alerts.webhook_url, context.log)
        context.update_cursor(json.dumps(sorted(texts)))
        return SkipReason(
            f"{health.failed}/{health.finished} runs failed, {health.rate_limited} on 429s, "
            f"{health.calls_rate_limited} Notion 429s; "
            f"active alerts: {', '.join(sorted(texts)) or 'none'}"
        )

    return notion_sync_health
