"""The `notion-sync` command: run the sandbox, the demo, and the status report."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from dagster import DagsterInstance

from notion_sync.instance import InstanceCheckError, check_instance, init_instance
from notion_sync.processes import Stopped, run_tree, stop_on_signals
from notion_sync.salesforce.describes import DescribeCache
from notion_sync.sandbox.notion_server import NotionSandbox
from notion_sync.sandbox.salesforce_server import SalesforceSandbox
from notion_sync.status import run_status

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
ENV_FILE_NAME = "sandbox.env"


def _start_sandboxes(stack: ExitStack, args: argparse.Namespace) -> dict[str, str]:
    """Start both servers; their CA and certificate go to a folder under the data folder removed on exit."""
    if args.workdir:
        workdir = Path(args.workdir)
    else:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sandbox-", dir=args.data_dir)))
    try:
        salesforce = stack.enter_context(
            SalesforceSandbox(
                records=args.records, seed=args.seed, port=args.salesforce_port, workdir=workdir, end=args.end
            )
        )
        notion = stack.enter_context(
            NotionSandbox(port=args.notion_port, speed=args.speed, latency_ms=args.latency_ms)
        )
    except OSError as error:
        raise SystemExit(
            f"error: cannot start the sandbox servers on ports {args.salesforce_port} and {args.notion_port} "
            f"({error}): is another demo or sandbox running? Stop it, or pass --salesforce-port and "
            "--notion-port"
        ) from error
    return {**salesforce.env(), **notion.env()}


def _write_env_file(data_dir: Path, env: dict[str, str], command: str) -> Path:
    """``data_dir/sandbox.env``: the variables as ``export`` lines, for a new shell to load."""
    path = data_dir / ENV_FILE_NAME
    lines = [
        f"# written by `notion-sync {command}` (pid {os.getpid()}); its sandbox servers run while it runs.",
        f"# Load it in a new shell with:  . {path}",
        *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())),
    ]
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Dagster CLI warnings a demo user can do nothing about: `dagster asset materialize` and `dagster dev`
# are "superseded" by `dg` (not installed), `--select '*'` uses a beta parameter.
_DAGSTER_CLI_WARNINGS = (
    "ignore:Function `asset_materialize_command` is superseded",
    "ignore:Function `dev_command` is superseded",
    "ignore:Parameter `include_sources` of function `AssetSelection.all` is currently in beta",
)


def _quiet_dagster_cli(current: str | None) -> str:
    """``PYTHONWARNINGS`` for the demo's dagster commands: the user's filters, then those above."""
    return ",".join([*filter(None, [current]), *_DAGSTER_CLI_WARNINGS])


def dagster_env(exports: dict[str, str]) -> dict[str, str]:
    """The environment of the demo's dagster commands: this one, ``exports``, quiet warnings.

    When the demo stops, Dagster's code servers stop while the webserver's and the daemon's gRPC
    channels to them are open, and gRPC logs the GOAWAY they get at INFO level (`Got goaway [2] …
    Server shutdown`). ``GRPC_VERBOSITY=ERROR`` drops gRPC's INFO lines and keeps its errors; a
    ``GRPC_VERBOSITY`` the user set is kept.
    """
    return {
        "GRPC_VERBOSITY": "ERROR",
        **os.environ,
        **exports,
        "PYTHONWARNINGS": _quiet_dagster_cli(os.environ.get("PYTHONWARNINGS")),
    }


def _print_exports(env: dict[str, str], env_file: Path) -> None:
    activate = Path(sys.executable).parent / "activate"
    load = f". {activate} && . {env_file}" if activate.exists() else f". {env_file}"
    print(f"# these variables are also in {env_file}; in another shell: {load}")
    for name, value in sorted(env.items()):
        print(f"export {name}={shlex.quote(value)}")
    sys.stdout.flush()


def _wait_forever() -> None:
    while True:
        time.sleep(3600)


def cmd_sandbox(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        env = _start_sandboxes(stack, args)
        print("# sandbox Salesforce and Notion servers are running")
        _print_exports(env, _write_env_file(args.data_dir, env, "sandbox"))
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


def _demo_state(data_dir: Path) -> tuple[Path, Path]:
    """The demo's Dagster home and staging file: its own under ``data_dir``, started afresh every time
    (the sandbox Notion starts empty, so records mapped to an earlier demo's databases would be stale),
    unless DAGSTER_HOME or NOTION_SYNC_DUCKDB point elsewhere (then they are used, and kept)."""
    own_home, own_duckdb = data_dir / "dagster_home", data_dir / "demo.duckdb"
    home = Path(os.environ.get("DAGSTER_HOME") or own_home)
    duckdb_file = Path(os.environ.get("NOTION_SYNC_DUCKDB") or own_duckdb)
    removed = []
    if home.resolve() == own_home.resolve() and home.exists():
        shutil.rmtree(home)
        removed.append(str(home))
    if duckdb_file.resolve() == own_duckdb.resolve():
        for path in (duckdb_file, duckdb_file.with_name(duckdb_file.name + ".wal")):
            if path.exists():
                path.unlink()
                removed.append(str(path))
        describes = DescribeCache(duckdb_file).directory  # the earlier sandbox's describes, kept an hour
        if describes.exists():
            shutil.rmtree(describes)
            removed.append(str(describes))
    if removed:
        print(f"# starting afresh: removed the previous demo's {' and '.join(removed)}", flush=True)
    return home, duckdb_file


def _require_free_port(port: int) -> None:
    """Fail before anything is removed or started when the UI's port is taken: the Dagster UI of
    another demo still running (or of one killed with SIGKILL, which could not stop it)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the webserver: TIME_WAIT is fine
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise SystemExit(
                f"error: port {port} is in use ({error.strerror}): is another demo's Dagster UI still "
                "running? Stop it (its `dagster dev` process), or pass --port"
            ) from error


def cmd_demo(args: argparse.Namespace) -> int:
    _require_free_port(args.port)
    with ExitStack() as stack:
        sandbox_env = _start_sandboxes(stack, args)  # fails at once while another demo runs
        home, duckdb_file = _demo_state(args.data_dir)
        _prepare_dagster_home(home)
        _init_instance(home)
        config = Path(os.environ.get("NOTION_SYNC_CONFIG") or REPO_ROOT / "notion_sync.yaml").resolve()
        exports = {
            **sandbox_env,
            "DAGSTER_HOME": str(home),
            "NOTION_SYNC_DUCKDB": str(duckdb_file),
            "NOTION_SYNC_CONFIG": str(config),
        }
        _print_exports(exports, _write_env_file(args.data_dir, exports, "demo"))
        env = dagster_env(exports)
        dagster_cmd = str(Path(sys.executable).parent / "dagster")  # the one installed beside this Python
        partition = args.partition or time.strftime("%Y-%m-%d", time.gmtime())
        print(f"# syncing the sample data (partition {partition}) before the UI starts ...", flush=True)
        materialize = [dagster_cmd, "asset", "materialize", "-m", "notion_sync.definitions", "--select", "*"]
        # Run in the instance folder: from the checkout, `dagster dev` warns that the checkout's
        # dagster.yaml (the template copied there) is not the instance's.
        code = run_tree([*materialize, "--partition", partition], env=env, cwd=home)
        print(
            "# sample sync succeeded"
            if code == 0
            else f"# the sample sync failed (exit code {code}): its log is above; the UI starts anyway",
            flush=True,
        )
        print(f"# Dagster UI: http://127.0.0.1:{args.port} (Ctrl-C or SIGTERM stops everything)", flush=True)
        ui = ["dev", "-m", "notion_sync.definitions", "-h", "127.0.0.1", "-p", str(args.port)]
        return run_tree([dagster_cmd, *ui], env=env, cwd=home)


def cmd_status(args: argparse.Namespace) -> int:
    return run_status(html=args.html, object_name=args.object, since_days=args.since)


def _add_sandbox_args(parser: argparse.ArgumentParser, records: int) -> None:
    parser.add_argument("--records", type=int, default=records, help="number of Salesforce Accounts")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (same seed, same data)")
    parser.add_argument("--speed", type=float, default=1.0, help="Notion sandbox time compression")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="Notion sandbox latency per request")
    parser.add_argument("--salesforce-port", type=int, default=8443)
    parser.add_argument("--notion-port", type=int, default=8444)
    parser.add_argument(
        "--workdir", help="where the sandbox writes its CA and certificate (default: a folder in --data-dir)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help=f"where {ENV_FILE_NAME}, the certificates and the demo's state go (default: data/)",
    )
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
        with stop_on_signals():
            return args.func(args)
    except Stopped as stop:
        print(f"# {args.command} stopped ({stop}): servers and processes shut down", flush=True)
        return 0
    except InstanceCheckError as error:  # `init-instance` and `demo` check the instance first
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
