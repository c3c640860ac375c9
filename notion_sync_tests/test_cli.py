"""The `notion-sync` command as a user runs it: sandbox exports, instance initialisation."""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance

from notion_sync.cli import dagster_env, main
from notion_sync.instance import POOL_LIMITS

REPO = Path(__file__).resolve().parents[1]


def test_sandbox_command_prints_working_exports(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "notion_sync.cli",
            "sandbox",
            "--records",
            "5",
            "--salesforce-port",
            "0",
            "--notion-port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        env: dict[str, str] = {}
        for line in process.stdout:
            if line.startswith("# Ctrl-C"):
                break
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                env[name] = shlex.split(value)[0]
        assert {
            "SALESFORCE_INSTANCE_URL",
            "SALESFORCE_SESSION_ID",
            "SALESFORCE_CA_BUNDLE",
            "NOTION_TOKEN",
            "NOTION_BASE_URL",
            "NOTION_PARENT_PAGE_ID",
            "NOTION_VERSION",
        } <= set(env)
        page = requests.get(
            f"{env['NOTION_BASE_URL']}/v1/pages/{env['NOTION_PARENT_PAGE_ID']}",
            headers={
                "Authorization": f"Bearer {env['NOTION_TOKEN']}",
                "Notion-Version": env["NOTION_VERSION"],
            },
            timeout=10,
        )
        assert page.status_code == 200 and page.json()["object"] == "page"
        session = requests.Session()
        session.trust_env = False  # this machine's REQUESTS_CA_BUNDLE would replace the sandbox CA
        versions = session.get(
            f"{env['SALESFORCE_INSTANCE_URL']}/services/data/", verify=env["SALESFORCE_CA_BUNDLE"], timeout=10
        )
        assert versions.status_code == 200 and versions.json()[0]["version"]
        loaded = subprocess.run(
            ["sh", "-c", f". {tmp_path / 'data/sandbox.env'} && env"], env={}, capture_output=True, text=True
        ).stdout.splitlines()
        assert {f"{name}={value}" for name, value in env.items()} <= set(loaded)
        assert Path(env["SALESFORCE_CA_BUNDLE"]).is_relative_to(tmp_path / "data")
        assert not list((tmp_path / "data").rglob("*key*"))  # the server key lives in memory only
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert not list((tmp_path / "data").glob("sandbox-*"))  # the certificate folder is removed on exit


def test_init_instance_sets_the_pool_limits(tmp_path, monkeypatch):
    shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert main(["init-instance"]) == 0
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = {
            info.concurrency_key: info.slot_count
            for info in map(instance.event_log_storage.get_concurrency_info, POOL_LIMITS)
        }
    assert limits == POOL_LIMITS


def test_init_instance_names_the_unreachable_postgres_setting(tmp_path, monkeypatch, capsys):
    shutil.copyfile(REPO / "dagster.postgres.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "1",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "postgres",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["init-instance"]) == 2
    assert "DAGSTER_PG_PORT" in capsys.readouterr().err


def test_init_instance_without_dagster_home_says_so(monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["init-instance"]) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err


def test_demo_with_its_ui_port_taken_stops_before_touching_anything(tmp_path, capsys):
    """A demo still running (or one killed with SIGKILL, whose UI lives on) holds the port: the new
    one must not remove that demo's state nor start servers."""
    data_dir = tmp_path / "data"
    (data_dir / "dagster_home").mkdir(parents=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=rf"port {port} is in use.*another demo's Dagster UI"):
            main(["demo", "--port", str(port), "--data-dir", str(data_dir)])
    assert (data_dir / "dagster_home").is_dir() and not (data_dir / "sandbox.env").exists()


def test_demo_dagster_processes_print_no_grpc_goaway_at_shutdown_but_grpc_errors(monkeypatch):
    """At shutdown Dagster's code servers stop while the webserver's and daemon's channels to them are
    open; gRPC logged that GOAWAY as `I… chttp2_transport.cc] unix:/tmp/…: Got goaway [2] …`."""
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    client = Path(__file__).with_name("grpc_goaway_client.py")
    child = subprocess.run(
        [sys.executable, str(client)], env=dagster_env({}), capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    assert "Got goaway" not in child.stderr
    assert "Failed to add port to server" in child.stderr  # gRPC's errors are still printed
