"""`bonsai serve` as a process: how it stops, with its embedded worker."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from .helpers import Stack, base_env, free_port, wait_for

STOP_TIMEOUT_SECONDS = 30.0


def _running(pid: int) -> bool:
    """Return whether `pid` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return not re.search(r"^State:\s+Z", status, re.MULTILINE)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_embedded_worker(tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM comes from `kill`, `docker stop` and service managers, SIGINT from Ctrl-C."""
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(
        "sqlite",
        home,
        base_env(home),
        f"http://127.0.0.1:{free_port()}",
        f"sqlite:///{home / 'bonsai.db'}",
        separate_worker=False,
    )
    try:
        stack.start_server()
        stack.wait_healthy()
        started = wait_for(
            lambda: re.search(r"Embedded worker started as process (\d+)", stack.log("serve")),
            STOP_TIMEOUT_SECONDS,
            "the embedded worker to start",
        )
        worker_pid = int(started.group(1))
        serve = stack.processes["serve"]

        os.kill(serve.pid, signum)  # serve alone, not its process group
        assert serve.wait(STOP_TIMEOUT_SECONDS) == 0, stack.log("serve")[-4000:]
        assert not _running(worker_pid), stack.log("serve")[-4000:]
    finally:
        stack.stop()
