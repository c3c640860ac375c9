"""Child process trees that stop with the command that started them.

`notion-sync demo` starts `dagster dev`, which starts the webserver, the daemon, code servers and
run workers. A signal sent to the demo alone (SIGTERM from a service manager, `kill`) would leave all
of them running. So each child leads its own session, SIGTERM is turned into KeyboardInterrupt like
SIGINT, and on either the whole tree is stopped: SIGTERM to the child (`dagster dev` shuts its
services down on it), then SIGTERM and finally SIGKILL to every descendant still running.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

import psutil

LEADER_GRACE_S = 30.0  # `dagster dev` waits for its webserver and daemon to shut down cleanly
LEFTOVER_GRACE_S = 10.0


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM was received."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside, SIGTERM (like SIGINT) raises `Stopped`, so ``finally`` blocks and exit stacks run."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _running(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie waiting for a parent that does not reap it is not)."""
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _signal_all(processes: Sequence[psutil.Process], sig: int) -> None:
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def _wait_gone(processes: Sequence[psutil.Process], timeout_s: float) -> None:
    """Wait until none of ``processes`` runs, at most ``timeout_s`` (zombies count as gone, so no
    `psutil.wait_procs`: it waits for an orphaned zombie until the timeout)."""
    deadline = time.monotonic() + timeout_s
    while _running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)


def stop_tree(child: subprocess.Popen, leader_grace_s: float = LEADER_GRACE_S) -> None:
    """Stop ``child`` and all its descendants; a second interrupt meanwhile goes straight to SIGKILL."""
    try:
        tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    try:
        child.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=leader_grace_s)
        leftovers = _running(tree)
        _signal_all(leftovers, signal.SIGTERM)
        _wait_gone(leftovers, LEFTOVER_GRACE_S)
    except KeyboardInterrupt:
        pass  # asked to stop again: no more waiting
    finally:
        _signal_all(_running(tree), signal.SIGKILL)
        child.wait()


def run_tree(command: Sequence[str], *, env: dict[str, str], cwd: Path) -> int:
    """Run ``command`` to its end; on KeyboardInterrupt (see `stop_on_signals`) stop its whole tree."""
    child = subprocess.Popen(list(command), env=env, cwd=cwd, start_new_session=True)
    try:
        return child.wait()
    except KeyboardInterrupt:
        stop_tree(child)
        raise
