"""Helpers of the service tests: the stack of processes, polling, SSE-free HTTP calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from backend.db import Database

REPO_ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL_VAR = "BONSAI_TEST_DATABASE_URL"
BROKER_URL_VAR = "BONSAI_TEST_BROKER_URL"
STARTUP_TIMEOUT_SECONDS = 90.0
SEARCH_TIMEOUT_SECONDS = 180.0
S3_BUCKET = "bonsai-test"

# Short leases, so that a killed worker's search is re-enqueued within seconds.
FAST_LEASES = {
    "BONSAI_LEASE_SECONDS": "3",
    "BONSAI_HEARTBEAT_SECONDS": "0.5",
    "BONSAI_REAPER_INTERVAL_SECONDS": "0.5",
    "BONSAI_CANCEL_GRACE_SECONDS": "5",
    # Two cores are shared by the test, the API, the worker and the search.
    "BONSAI_SEARCH_THREADS": "1",
}

T = TypeVar("T")


def backends() -> list[str]:
    database, broker = os.environ.get(DATABASE_URL_VAR), os.environ.get(BROKER_URL_VAR)
    if bool(database) != bool(broker):
        raise pytest.UsageError(f"set both {DATABASE_URL_VAR} and {BROKER_URL_VAR}, or neither")
    return ["sqlite", "postgres"] if database else ["sqlite"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def postgres_database(admin_url: str, name: str) -> URL:
    """Create the database `name` on the server of `admin_url` and return its URL."""
    url = make_url(admin_url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return url.set(database=name)


def drop_postgres_database(admin_url: str, name: str) -> None:
    engine = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@dataclass
class Stack:
    """A running API server and worker, with the database they share."""

    name: str
    home: Path
    env: dict[str, str]
    base_url: str
    database_url: str
    separate_worker: bool
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.db = Database(self.database_url)

    def _start(self, role: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.home / f"{role}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[role] = process
        return process

    def start_server(self) -> None:
        port = self.base_url.rsplit(":", 1)[1]
        self._start("serve", ["-m", "backend.cli", "serve", "--port", port])

    def start_worker(self) -> None:
        self._start("worker", ["-m", "worker.cli", "worker"])

    def log(self, role: str) -> str:
        path = self.home / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def worker_log(self) -> str:
        return self.log("worker" if self.separate_worker else "serve")

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            for role, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(
                        f"{role} exited with {process.returncode}:\n{self.log(role)[-4000:]}"
                    )
            try:
                return httpx.get(f"{self.base_url}/api/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, STARTUP_TIMEOUT_SECONDS, f"the {self.name} stack to answer", 0.25)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass
            try:
                # The group contains the embedded worker and any search process as well.
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        self.db.dispose()


def base_env(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BONSAI_") or key in {DATABASE_URL_VAR, BROKER_URL_VAR}
    }
    env.update(FAST_LEASES)
    env.update(
        {
            "BONSAI_HOME": str(home),
            "BONSAI_DATA_DIR": str(home / "data"),
            "BONSAI_QUEUE": f"bonsai-test-{uuid.uuid4().hex[:8]}",
            "BONSAI_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def search_row(stack: Stack, search_id: str) -> dict[str, Any]:
    """Read the search's row straight from the database, worker columns included."""
    with stack.db.engine.connect() as connection:
        row = (
            connection.execute(text("SELECT * FROM searches WHERE id = :id"), {"id": search_id})
            .mappings()
            .one()
        )
        return dict(row)


def wait_state(
    client: httpx.Client, search_id: str, states: set[str], timeout: float = SEARCH_TIMEOUT_SECONDS
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        search: dict[str, Any] = client.get(f"/api/searches/{search_id}").json()
        return search if search["state"] in states else None

    return wait_for(reached, timeout, f"search {search_id} to reach {sorted(states)}", 0.2)


def create_search(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/searches", json={"preset": "tiny", **fields})
    assert response.status_code == 201, response.text
    search: dict[str, Any] = response.json()
    return search
