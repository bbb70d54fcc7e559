"""How long a stored event takes to reach 20 clients of `GET /api/searches/{id}/events`.

The benchmark starts `python -m backend.cli serve --no-worker` on a free port of 127.0.0.1
with a temporary BONSAI_HOME, creates a search through the API and claims it as a worker
would. A producer thread then plays the worker: it emits a batch event and a
pruner_snapshot every step at a steady rate, stamps each with its emission time, and
stores what is pending every `flush_interval_seconds` with `backend.ingest.store_events`.
The clients read the streams with httpx in one asyncio loop and note when each event's
`id:` arrives. The search is finished after the last event, so every stream ends by itself;
a deadline bounds the whole run in any case.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend import lifecycle
from backend._bench_common import BenchmarkRow, make_row, percentile
from backend._bench_ingest import pruner_ids
from backend.db import Database
from backend.ingest import store_events
from backend.models import Search, SearchState

CLIENTS = 20
MAX_P95_SECONDS = 1.0
STEPS_PER_SECOND = 10.0
SNAPSHOT_PRUNERS = 300
FLUSH_INTERVAL_SECONDS = 0.25
QUICK_SECONDS = 5.0
FULL_SECONDS = 30.0
STARTUP_TIMEOUT_SECONDS = 60.0
# Time the streams get, after the last event, to deliver it and end.
DRAIN_SECONDS = 30.0
LEASE_SECONDS = 3600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Timeline:
    """Unix times at which each event (by seq) was emitted, committed and received."""

    emitted: dict[int, float] = field(default_factory=dict)
    committed: dict[int, float] = field(default_factory=dict)
    received: list[dict[int, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Server:
    """`bonsai serve` without a worker, in its own process group, logging to a file."""

    def __init__(self, home: Path, database_url: str | None) -> None:
        self.home = home
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("BONSAI_")}
        env.update(
            BONSAI_HOME=str(home),
            BONSAI_LOG_LEVEL="WARNING",
            BONSAI_EMBEDDED_WORKER="false",
            BONSAI_STREAM_POLL_SECONDS="0.25",
            BONSAI_QUEUE=f"bonsai-bench-{uuid.uuid4().hex[:8]}",
        )
        if database_url is not None:
            env["BONSAI_DATABASE_URL"] = database_url
        self.database_url = database_url or f"sqlite:///{home / 'bonsai.db'}"
        self.log_path = home / "serve.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "backend.cli", "serve", "--no-worker"]
                + ["--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.base_url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"serve did not respond within {STARTUP_TIMEOUT_SECONDS:.0f} s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _produce(db: Database, search_id: str, owner: str, seconds: float, timeline: Timeline) -> None:
    """Emit events at a steady rate and store them in flushes, as the worker does."""
    ids = pruner_ids(SNAPSHOT_PRUNERS)
    pending: list[dict[str, Any]] = []
    seq = 0

    def flush() -> None:
        if not pending:
            return
        with db.write() as session:
            search = session.get_one(Search, search_id)
            store_events(session, search, 1, pending)
        now = time.time()
        with timeline.lock:
            for event in pending:
                timeline.committed[event["seq"]] = now
        pending.clear()

    def emit(kind: str, data: dict[str, Any]) -> None:
        nonlocal seq
        now = time.time()
        pending.append({"seq": seq, "type": kind, "time": now, "epoch": 0, "data": data})
        with timeline.lock:
            timeline.emitted[seq] = now
        seq += 1

    start = time.monotonic()
    step_interval = 1.0 / STEPS_PER_SECOND
    steps = int(seconds * STEPS_PER_SECOND)
    next_flush = start + FLUSH_INTERVAL_SECONDS
    for step in range(steps):
        due = start + step * step_interval
        while time.monotonic() < due:
            if time.monotonic() >= next_flush:
                flush()
                next_flush += FLUSH_INTERVAL_SECONDS
            time.sleep(max(0.0, min(due, next_flush) - time.monotonic()))
        emit("batch", {"index": step, "batches": steps, "loss": 1.0 / (step + 1)})
        weights = [[pruner, 0.05, 1] for pruner in ids]
        emit("pruner_snapshot", {"pruners": weights})
    emit("finished", {"state": "succeeded", "test_accuracy": None, "params": 0})
    flush()
    lifecycle.finish(db, search_id, owner, SearchState.SUCCEEDED)


async def _read_stream(
    client: httpx.AsyncClient, url: str, received: dict[int, float], ready: asyncio.Event
) -> None:
    """Read one event stream to its end, noting the receipt time of each event id."""
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        event_id: int | None = None
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = int(line[3:])
            elif line.startswith("event: state"):
                ready.set()
            elif line == "":
                if event_id is not None:
                    received[event_id] = time.time()
                event_id = None


async def _run_clients(
    server: Server, db: Database, search_id: str, owner: str, seconds: float
) -> tuple[Timeline, int]:
    timeline = Timeline(received=[{} for _ in range(CLIENTS)])
    url = f"{server.base_url}/api/searches/{search_id}/events"
    limits = httpx.Limits(max_connections=CLIENTS + 2)
    timeout = httpx.Timeout(10.0, read=60.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        ready = [asyncio.Event() for _ in range(CLIENTS)]
        readers = [
            asyncio.create_task(_read_stream(client, url, timeline.received[index], ready[index]))
            for index in range(CLIENTS)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 30.0)
        health = (await client.get(f"{server.base_url}/api/health")).json()
        producer = asyncio.create_task(
            asyncio.to_thread(_produce, db, search_id, owner, seconds, timeline)
        )
        try:
            await asyncio.wait_for(asyncio.gather(producer, *readers), seconds + DRAIN_SECONDS)
        except TimeoutError:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(producer, *readers, return_exceptions=True)
    return timeline, int(health.get("event_streams", -1))


def measure_stream_latency(
    backend_label: str, home: Path, database_url: str | None, quick: bool
) -> BenchmarkRow:
    """Run the server, the producer and the clients, and return the latency row.

    Latency runs from an event's emission (its `time`) to its receipt, so it includes the
    worker's flush interval as well as the stream's polling. The detail also gives the
    latency from the commit of the event's transaction.
    """
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    server = Server(home, database_url)
    db: Database | None = None
    try:
        server.start()
        response = httpx.post(
            f"{server.base_url}/api/searches", json={"preset": "tiny"}, timeout=30
        )
        response.raise_for_status()
        search_id = str(response.json()["id"])
        db = Database(server.database_url)
        owner = f"bench:{search_id[:8]}"
        if lifecycle.claim(db, search_id, owner, "bench", LEASE_SECONDS) is None:
            raise RuntimeError(f"could not claim benchmark search {search_id}")
        timeline, streams_open = _run_in_own_loop(
            lambda: _run_clients(server, db, search_id, owner, seconds)
        )
    finally:
        server.stop()
        if db is not None:
            db.dispose()

    from_emission: list[float] = []
    from_commit: list[float] = []
    missing = 0
    for received in timeline.received:
        for seq, emitted in timeline.emitted.items():
            if seq not in received:
                missing += 1
                continue
            from_emission.append(received[seq] - emitted)
            from_commit.append(received[seq] - timeline.committed[seq])
    if not from_emission:
        raise RuntimeError(f"no event reached any client; serve log: {server.log_tail()}")
    p95 = percentile(from_emission, 0.95)
    detail = (
        f"{CLIENTS} clients ({streams_open} streams open by /api/health), {seconds:.0f} s at "
        f"{STEPS_PER_SECOND:.0f} steps/s (a batch event and a {SNAPSHOT_PRUNERS}-pruner "
        f"snapshot each), flushes every {FLUSH_INTERVAL_SECONDS} s; from emission: "
        f"p50 {percentile(from_emission, 0.5):.3f} s, p95 {p95:.3f} s, "
        f"max {max(from_emission):.3f} s; from commit: p50 {percentile(from_commit, 0.5):.3f} s, "
        f"p95 {percentile(from_commit, 0.95):.3f} s, max {max(from_commit):.3f} s; "
        f"{len(from_emission)} deliveries, {missing} missing"
    )
    return make_row(
        f"5c an event reaches {CLIENTS} stream clients within 1 s at p95 ({backend_label})",
        p95,
        "s",
        MAX_P95_SECONDS,
        p95 <= MAX_P95_SECONDS and missing == 0,
        detail,
    )


def _run_in_own_loop(make_coroutine: Any) -> Any:
    """Run a coroutine to completion in a fresh event loop on a thread of its own.

    `asyncio.run` refuses to start where an event loop already runs in the
    calling thread (Playwright's sync API keeps one during the browser tests).
    """
    results: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(make_coroutine()))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            errors.append(error)

    thread = threading.Thread(target=target, name="bench-stream-clients")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]
