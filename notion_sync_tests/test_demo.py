"""`notion-sync demo` as a user runs it, twice in a row in the same data folder, in a real subprocess:
the second demo starts clean and syncs, the variables file works in a new shell, SIGTERM and SIGINT
stop the whole process tree, and no private key is left on disk."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest
import requests

from notion_sync_tests.e2e_helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
END, PARTITION = "2026-11-20T12:00:00", "2026-11-19"


class Demo:
    """A running `notion-sync demo`; its output is collected by a thread."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.lines: list[str] = []
        options = {"--records": "60", "--speed": "20", "--end": END, "--partition": PARTITION}
        options |= {
            "--port": str(port),
            "--data-dir": str(data_dir),
            "--salesforce-port": "0",
            "--notion-port": "0",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "notion_sync.cli",
                "demo",
                *(item for pair in options.items() for item in pair),
            ],
            env=_without_platform_env(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_serving(self) -> None:
        def serving() -> bool:
            assert self.process.poll() is None, f"the demo exited early:\n{self.output[-4000:]}"
            try:
                return requests.get(f"http://127.0.0.1:{self.port}/server_info", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(serving, 240, "the demo's Dagster UI")

    def stop(self, sig: signal.Signals) -> list[psutil.Process]:
        """Send ``sig`` to the demo process only (as `kill` or a service manager does); returns the
        processes of its tree as they were just before, after checking the Dagster services were there."""
        tree = psutil.Process(self.process.pid).children(recursive=True)
        commands = " | ".join(" ".join(process.cmdline()) for process in tree)
        for service in ("dagster dev", "dagster_webserver", "dagster._daemon", "code-server"):
            assert service in commands, f"{service} is not running: {commands}"
        self.process.send_signal(sig)
        assert self.process.wait(timeout=120) == 0, self.output[-4000:]
        assert f"stopped ({sig.name})" in self.output
        return tree


def _without_platform_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(("NOTION_", "SALESFORCE_", "DAGSTER_HOME"))}


def _running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(process.cmdline())[:120])
        except psutil.NoSuchProcess:
            pass
    return alive


def _status_in_new_shell(env_file: Path) -> subprocess.CompletedProcess:
    """`notion-sync status` in a shell that has only the file's variables (and PATH, PYTHONPATH)."""
    env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}
    return subprocess.run(
        ["sh", "-c", f'. "{env_file}" && exec "{sys.executable}" -m notion_sync.cli status'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_synced(status: subprocess.CompletedProcess) -> None:
    """Every object's partition synced, nothing failed (columns: synced, failed, skipped, pending, status)."""
    assert status.returncode == 0, status.stderr
    for name in ("Account", "Contact", "Opportunity"):
        assert re.search(
            rf"^{name}\s+{PARTITION}\s+[1-9]\d*\s+0\s+\d+\s+\d+\s+succeeded", status.stdout, re.M
        ), status.stdout


def _assert_no_keys(data_dir: Path) -> None:
    assert not list(data_dir.glob("sandbox-*")), "the sandbox's certificate folder is left"
    assert not [p for p in data_dir.rglob("*") if "key" in p.name], "a key file is left"


@pytest.mark.e2e
@pytest.mark.timeout(600)  # two demos, each a sample sync and `dagster dev` start-up (about 90 s in all)
def test_demo_twice_then_signals_stop_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env_file = data_dir / "sandbox.env"
    temp_before = set(Path(tempfile.gettempdir()).glob("notion-sync-sandbox-*"))

    first = Demo(data_dir, free_port())
    first.wait_until_serving()
    assert "# sample sync succeeded" in first.output
    assert list(data_dir.glob("sandbox-*/tls/ca.pem")) and not list(data_dir.rglob("*key*"))
    _assert_synced(_status_in_new_shell(env_file))
    tree = first.stop(signal.SIGTERM)
    assert not _running(tree), f"left running after SIGTERM: {_running(tree)}"
    _assert_no_keys(data_dir)

    second = Demo(data_dir, free_port())
    second.wait_until_serving()
    assert "starting afresh" in second.output and "# sample sync succeeded" in second.output
    assert "demo.duckdb.describe" in second.output  # the first sandbox's describes are not reused
    _assert_synced(_status_in_new_shell(env_file))
    tree = second.stop(signal.SIGINT)
    assert not _running(tree), f"left running after SIGINT: {_running(tree)}"
    _assert_no_keys(data_dir)
    assert set(Path(tempfile.gettempdir()).glob("notion-sync-sandbox-*")) == temp_before
