"""The `notion-sync` command: run the sandbox, the demo, and the status report."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from dagster import DagsterInstance

from notion_sync.instance import InstanceCheckError, check_instance, init_instance
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.status import run_status

REPO_ROOT = Path(__file__).resolve().parents[1]


def _start_sandboxes(stack: ExitStack, args: argparse.Namespace) -> dict[str, str]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="notion-sync-sandbox-"))
    salesforce = stack.enter_context(
        SalesforceSandbox(
            records=args.records, seed=args.seed, port=args.salesforce_port, workdir=workdir, end=args.end
        )
    )
    notion = stack.enter_context(
        NotionSandbox(port=args.notion_port, speed=args.speed, latency_ms=args.latency_ms)
    )
    return {**salesforce.env(), **notion.env()}


def _print_exports(env: dict[str, str]) -> None:
    for name, value in sorted(env.items()):
        print(f"export {name}={value}")
    sys.stdout.flush()


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def cmd_sandbox(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        env = _start_sandboxes(stack, args)
        print("# sandbox Salesforce and Notion servers are running; paste these lines into your shell:")
        _print_exports(env)
        print("# Ctrl-C stops them.", flush=True)
        _wait_forever()
    return 0


def _prepare_dagster_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")


def _init_instance(home: Path) -> None:
    """Check the instance's storage settings, then set the project's pool limits on it."""
    check_instance(home)
    with DagsterInstance.from_config(str(home)) as instance:
        limits = init_instance(instance)
    print("# pools: " + ", ".join(f"{pool}={limit}" for pool, limit in limits.items()), flush=True)


def cmd_init_instance(args: argparse.Namespace) -> int:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise InstanceCheckError("DAGSTER_HOME is not set: point it at the folder holding your dagster.yaml")
    _init_instance(Path(home))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")
    _prepare_dagster_home(home)
    _init_instance(home)
    with ExitStack() as stack:
        env = {
            **os.environ,
            **_start_sandboxes(stack, args),
            "DAGSTER_HOME": str(home),
            "NOTION_SYNC_DUCKDB": os.environ.get("NOTION_SYNC_DUCKDB", str(REPO_ROOT / "data/demo.duckdb")),
        }
        _print_exports({k: env[k] for k in env if k.startswith(("SALESFORCE_", "NOTION_", "DAGSTER_HOME"))})
        dagster_cmd = str(Path(sys.executable).parent / "dagster")  # the one installed beside this Python
        print("# syncing the sample data (one partition) before the UI starts ...", flush=True)
        subprocess.run(
            [
                dagster_cmd,
                "asset",
                "materialize",
                "-m",
                "notion_sync.definitions",
                "--select",
                "*",
                "--partition",
                args.partition or time.strftime("%Y-%m-%d", time.gmtime()),
            ],
            env=env,
            cwd=REPO_ROOT,
            check=False,
        )
        print(f"# Dagster UI: http://127.0.0.1:{args.port}", flush=True)
        ui = subprocess.Popen(
            [dagster_cmd, "dev", "-m", "notion_sync.definitions", "-h", "127.0.0.1", "-p", str(args.port)],
            env=env,
            cwd=REPO_ROOT,
        )
        try:
            return ui.wait()
        except KeyboardInterrupt:
            ui.terminate()
            return ui.wait()


def cmd_status(args: argparse.Namespace) -> int:
    return run_status(html=args.html, object_name=args.object, since_days=args.since)


def _add_sandbox_args(parser: argparse.ArgumentParser, records: int) -> None:
    parser.add_argument("--records", type=int, default=records, help="number of Salesforce Accounts")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (same seed, same data)")
    parser.add_argument("--speed", type=float, default=1.0, help="Notion sandbox time compression")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="Notion sandbox latency per request")
    parser.add_argument("--salesforce-port", type=int, default=8443)
    parser.add_argument("--notion-port", type=int, default=8444)
    parser.add_argument("--workdir", help="where the sandbox writes its CA and certificates")
    parser.add_argument(
        "--end",
        type=_utc_datetime,
        default=datetime.now(UTC).replace(microsecond=0),
        help="records' SystemModstamps span the 30 days before this UTC time (default: now)",
    )


def _utc_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notion-sync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sandbox = commands.add_parser("sandbox", help="run the local Salesforce and Notion servers")
    _add_sandbox_args(sandbox, records=1000)
    sandbox.set_defaults(func=cmd_sandbox)

    demo = commands.add_parser("demo", help="sandbox + sample sync + Dagster UI")
    _add_sandbox_args(demo, records=200)
    demo.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    demo.add_argument("--partition", help="partition to sync before the UI starts (default: today, UTC)")
    demo.set_defaults(func=cmd_demo)

    init = commands.add_parser(
        "init-instance", help="check $DAGSTER_HOME's storage and set the project's pool limits (once)"
    )
    init.set_defaults(func=cmd_init_instance)

    status = commands.add_parser(
        "status", help="synced, failed, skipped, pending per object partition; API usage (NOTION_SYNC_DUCKDB)"
    )
    status.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with charts")
    status.add_argument("--object", help="only this Salesforce object (e.g. Contact)")
    status.add_argument("--since", type=float, metavar="DAYS", help="only the last DAYS days")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InstanceCheckError as error:  # `init-instance` and `demo` check the instance first
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
