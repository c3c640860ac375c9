"""Alert delivery to a real local webhook, failures of the webhook, and the health thresholds."""

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    job,
    materialize,
    op,
)
from dagster_shared.record import copy

from notion_sync.automation.alerts import (
    RunHealth,
    build_health_sensor,
    build_run_failure_alert_sensor,
    health_alerts,
    run_health,
    send_alert,
)
from notion_sync.config import AlertConfig, load_config
from notion_sync.definitions import build_definitions
from notion_sync.salesforce.resource import SalesforceResource
from notion_sync_tests.sandbox_resources import salesforce_resource, sandbox_resources


class Webhook:
    """A tiny HTTP server that records posted JSON bodies and answers with `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_alert_is_posted_as_slack_json(webhook):
    assert send_alert("3 runs failed", webhook.url)
    assert webhook.bodies == [{"text": "notion-sync: 3 runs failed"}]


def test_webhook_errors_are_logged_not_raised(webhook, caplog):
    webhook.status = 500
    assert not send_alert("boom", webhook.url)
    assert not send_alert("boom", refused_url())
    assert not send_alert("no webhook configured", None)
    assert "HTTP 500" in caplog.text and "ConnectionError" in caplog.text
    assert "secret-path" not in caplog.text  # the URL is a credential


def test_health_thresholds():
    alerts = AlertConfig(failure_rate=0.1, rate_limited_runs=2, api_budget_share=0.2)
    assert health_alerts(RunHealth(finished=20, failed=2, rate_limited=1), (5000, 15000), alerts) == {}
    texts = health_alerts(RunHealth(finished=20, failed=3, rate_limited=2), (2000, 15000), alerts)
    assert set(texts) == {"failure_rate", "rate_limited", "api_budget"}
    assert "3 of 20 runs failed" in texts["failure_rate"] and "2000 of 15000" in texts["api_budget"]


@op
def flaky(context) -> None:
    if context.run.tags.get("fail") == "yes":
        raise RuntimeError("Notion answered 429 rate_limited")


@job
def flaky_job() -> None:
    flaky()


def run_flaky(instance: DagsterInstance, fail: bool):
    return flaky_job.execute_in_process(
        instance=instance, tags={"fail": "yes" if fail else "no"}, raise_on_error=False
    )


def test_health_sensor_alerts_once_per_condition(webhook, own_salesforce_sandbox):
    config = load_config()
    alerts = AlertConfig(
        webhook_url=webhook.url, failure_rate=0.3, rate_limited_runs=5, rate_limited_calls=100
    )
    sensor = build_health_sensor(config.model_copy(update={"alerts": alerts}))
    env = own_salesforce_sandbox.env()
    salesforce = SalesforceResource(
        instance_url=env["SALESFORCE_INSTANCE_URL"],
        session_id=env["SALESFORCE_SESSION_ID"],
        ca_bundle=env["SALESFORCE_CA_BUNDLE"],
    )
    own_salesforce_sandbox.set_budget(remaining=1_000, maximum=10_000)
    with instance_for_test() as instance:
        for fail in (True, True, False):
            run_flaky(instance, fail)
        # A sync that got through after 150 answers 429 (the metadata every notion/* run records).
        instance.report_runless_asset_event(
            AssetMaterialization(["notion", "Account"], metadata={"rate_limited_429s": 150})
        )
        health = run_health(instance, 0.0, [AssetKey(["notion", "Account"])])
        assert health == RunHealth(finished=3, failed=2, rate_limited=2, calls_rate_limited=150)

        def tick(cursor):
            resources = {"salesforce": salesforce}
            return sensor.evaluate_tick(
                build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            ).cursor

        cursor = tick(tick(None))
        assert json.loads(cursor) == ["api_budget", "failure_rate", "rate_limited"]
        texts = [body["text"] for body in webhook.bodies]
        assert len(texts) == 3  # each condition once across two ticks
        assert any("Salesforce API budget low: 999 of 10000" in text for text in texts)  # limits costs 1
        assert any("150 answers 429" in text for text in texts)
        own_salesforce_sandbox.set_budget(remaining=10_000)
        assert json.loads(tick(cursor)) == ["failure_rate", "rate_limited"]
        assert len(webhook.bodies) == 3


@asset(key=["notion", "Account"])
def notion_account_stand_in() -> None:
    raise RuntimeError("Notion answered 429 rate_limited")


def failure_context(instance: DagsterInstance, sensor_name: str, result: ExecuteInProcessResult):
    failure_event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    return build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure_event,
    ).for_run_failure()


def test_run_failure_sensor_posts_failed_runs_of_this_project_only(webhook):
    """The sensor watches every code location of the instance: a failed run of another code location's
    job is not ours to report; a run materializing one of our assets (the UI's asset job) is."""
    config = load_config()
    sensor = build_run_failure_alert_sensor(
        config.model_copy(update={"alerts": AlertConfig(webhook_url=webhook.url)})
    )
    with instance_for_test() as instance:
        foreign = run_flaky(instance, fail=True)
        ours = materialize([notion_account_stand_in], instance=instance, raise_on_error=False)
        for result in (foreign, ours):
            assert not result.success
            sensor(failure_context(instance, sensor.name, result))
    (body,) = webhook.bodies
    cause = "RuntimeError: Notion answered 429 rate_limited"  # the error's first line, not "Steps failed"
    assert body["text"] == f"notion-sync: run {ours.run_id} of {ours.dagster_run.job_name} failed: {cause}"


def test_every_failed_run_alerts_with_its_cause(webhook, tmp_path, notion_sandbox, own_salesforce_sandbox):
    """A sync run launched from a shell (no code location origin) fails on an expired Salesforce
    session; the daemon's tick (its context names the repository) alerts with the error's first line."""
    config = load_config()
    config = config.model_copy(update={"alerts": AlertConfig(webhook_url=webhook.url)})
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    resources["salesforce"] = salesforce_resource(own_salesforce_sandbox, session_id="expired")
    defs = copy(build_definitions(config), resources=resources)

    def tick(instance, cursor):
        repo = defs.get_repository_def()  # resolved with the test's instance current
        sensor = defs.resolve_sensor_def("notion_sync_run_failure_alert")
        context = build_sensor_context(
            instance=instance,
            cursor=cursor,
            sensor_name=sensor.name,
            repository_name=repo.name,
            repository_def=repo,
        )
        return sensor.evaluate_tick(context).cursor

    with instance_for_test() as instance:
        cursor = tick(instance, None)
        failed = defs.resolve_job_def("sync_Account").execute_in_process(
            instance=instance, partition_key="2026-11-20", raise_on_error=False
        )
        assert not failed.success
        assert not run_flaky(instance, fail=True).success  # another code location's job: not reported
        tick(instance, cursor)
    (body,) = webhook.bodies
    text = body["text"]
    assert text.startswith(
        f"notion-sync: run {failed.run_id} of sync_Account (partition 2026-11-20) failed: "
    )
    assert "Steps failed" not in text and "401" in text
    assert "expired" not in text  # the session id is a credential
