"""One search run inside the worker: lease, child process, event flushing, cancel and artifacts."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, OperationalError

from backend import lifecycle
from backend.db import Database
from backend.ingest import store_events, supersede_from
from backend.models import Artifact, ArtifactKind, Search, SearchState
from backend.settings import Settings
from backend.storage import ArtifactNotFound, ArtifactStore, search_key
from worker.child import ChildSpec, child_main

logger = logging.getLogger(__name__)

T = TypeVar("T")

DB_RETRY_MAX_SECONDS = 5.0
FINAL_FLUSH_TIMEOUT_SECONDS = 300.0
CANCEL_POLL_SECONDS = 0.5
KILL_WAIT_SECONDS = 10.0

# Set when the worker begins a warm shutdown (SIGTERM or SIGINT): the running search is
# stopped and put back in the queue, to resume from its last state.pt on another worker.
WORKER_SHUTTING_DOWN = threading.Event()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def retry_db(action: Callable[[], T], what: str, deadline: float | None = None) -> T:
    """Run `action`, retrying database errors with backoff until `deadline` (monotonic)."""
    delay = 0.1
    while True:
        try:
            return action()
        except (OperationalError, DBAPIError) as error:
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            logger.warning("Database error while %s, retrying in %.1f s: %s", what, delay, error)
            time.sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX_SECONDS)


@dataclass
class ChildOutput:
    """Messages that the reader thread collected from the child's pipe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    closed: threading.Event = field(default_factory=threading.Event)

    def take_events(self) -> list[dict[str, Any]]:
        with self.lock:
            events, self.events = self.events, []
        return events


def _read_child(conn: Connection, output: ChildOutput) -> None:
    try:
        while True:
            kind, payload = conn.recv()
            if kind == "event":
                with output.lock:
                    output.events.append(payload)
            elif kind == "result":
                output.result = payload
            elif kind == "error":
                output.error = payload
    except (EOFError, OSError):
        pass
    finally:
        conn.close()
        output.closed.set()


class StateUploader:
    """Copies `state.pt` to the artifact store in the background whenever a new one is written."""

    def __init__(self, job: SearchJob) -> None:
        self.job = job
        self.pending = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="state-upload", daemon=True)
        self.thread.start()

    def request(self) -> None:
        self.pending.set()

    def stop(self) -> None:
        self.stopping = True
        self.pending.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            self.pending.wait()
            self.pending.clear()
            if self.stopping:
                return
            try:
                self.job.store_artifact(ArtifactKind.STATE)
            except Exception:
                logger.exception("Storing state.pt of search %s failed", self.job.search_id)


class SearchJob:
    """Runs one claimed search to its end and records the outcome."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: ArtifactStore,
        search_id: str,
        owner: str,
        claim: lifecycle.Claim,
        child_env: dict[str, str],
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.search_id = search_id
        self.owner = owner
        self.attempt = claim.attempt
        self.resume = claim.resume
        self.child_env = child_env
        self.workdir = settings.resolved_work_dir / search_id
        self.lease_lost = False
        self.released = False
        self.cancel_requested = False
        self.first_flush = True

    # Preparation.

    def prepare(self) -> dict[str, Any]:
        """Return the engine config, with local paths for the data and the reference."""
        with self.db.read() as session:
            search = session.get_one(Search, self.search_id)
            config = dict(search.config)
            reference_id = search.reference_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self.resume = self._fetch_state()
        if self.resume:
            self._store_logged_events()
        config["data_dir"] = config.get("data_dir") or str(self.settings.resolved_data_dir)
        if reference_id is not None:
            config["reference"] = str(self._fetch_reference(reference_id))
        return config

    def _fetch_state(self) -> bool:
        state = self.workdir / ArtifactKind.STATE
        if state.is_file():
            logger.info("Search %s resumes from the local %s", self.search_id, state)
            return True
        try:
            self.store.get_file(search_key(self.search_id, ArtifactKind.STATE), state)
        except ArtifactNotFound:
            logger.info("Search %s has no stored state.pt, so it starts over", self.search_id)
            return False
        logger.info("Search %s resumes from the stored state.pt", self.search_id)
        return True

    def _store_logged_events(self) -> None:
        """Store the events of the local events.jsonl that follow the last stored one.

        A worker that dies loses the events it had read from the search process
        but not yet stored. The search process flushes events.jsonl before it
        writes state.pt, so the log contains every event before the checkpoint
        that the run resumes from. Logged events past the checkpoint are stored
        too, and the resumed run's first flush supersedes them. Storing stops at
        the first line that is cut short or out of sequence.
        NOTE: a run resumed from the stored state.pt on another machine has no
        local log. Events its first worker did not store before dying are missing there.
        """
        log = self.workdir / "events.jsonl"
        if not log.is_file():
            return
        with self.db.read() as session:
            last_seq = session.get_one(Search, self.search_id).last_seq
        expected = -1 if last_seq is None else last_seq
        events = []
        with log.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    event = json.loads(line)
                    seq = int(event["seq"])
                except (ValueError, KeyError, TypeError):
                    break
                if seq <= expected:
                    continue
                if seq != expected + 1:
                    break
                events.append(event)
                expected = seq
        if not events:
            return

        def store() -> None:
            with self.db.write() as session:
                search = session.get_one(Search, self.search_id)
                store_events(session, search, self.attempt - 1, events)

        retry_db(store, "storing logged events")
        logger.info(
            "Search %s: stored %d events (seq %d to %d) from %s that the previous attempt "
            "had not stored",
            self.search_id,
            len(events),
            events[0]["seq"],
            events[-1]["seq"],
            log,
        )

    def _fetch_reference(self, reference_id: str) -> Path:
        directory = self.workdir / "reference"
        for kind in (ArtifactKind.GENOTYPE, ArtifactKind.CHECKPOINT, ArtifactKind.EVENTS):
            try:
                self.store.get_file(search_key(reference_id, kind), directory / kind)
            except ArtifactNotFound:
                logger.warning("Reference search %s has no %s", reference_id, kind)
        return directory

    # Running.

    def _child_env(self) -> dict[str, str]:
        env = dict(self.child_env)
        threads = self.settings.search_threads
        if threads is not None:
            # OpenMP threads that spin-wait on cores other processes use slow training
            # several-fold, so a shared machine caps them.
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        return env

    def _start_child(self, config: dict[str, Any]) -> tuple[Any, Connection, Any]:
        """Start the search process; return it, the receiving end of its pipe and its stop flag."""
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        stop = context.Event()
        spec = ChildSpec(
            search_id=self.search_id,
            config=config,
            workdir=str(self.workdir),
            resume=self.resume,
            search_function=self.settings.search_function,
            env=self._child_env(),
            log_level=self.settings.log_level,
        )
        process = context.Process(
            target=child_main, args=(spec, sender, stop), name=f"search-{self.search_id}"
        )
        process.start()
        # Only the child may hold the sending end, so that its exit ends the reader with EOF.
        sender.close()
        logger.info(
            "Search %s attempt %d running in process %d", self.search_id, self.attempt, process.pid
        )
        return process, receiver, stop

    def run(self) -> None:
        config = self.prepare()
        process, receiver, stop = self._start_child(config)
        retry_db(
            lambda: lifecycle.set_child_pid(self.db, self.search_id, self.owner, process.pid),
            "recording the child pid",
        )

        output = ChildOutput()
        reader = threading.Thread(target=_read_child, args=(receiver, output), daemon=True)
        reader.start()
        uploader = StateUploader(self)
        try:
            self._supervise(process, output, stop, uploader)
        finally:
            if process.is_alive():
                process.kill()
            process.join(KILL_WAIT_SECONDS)
            reader.join(KILL_WAIT_SECONDS)
            uploader.stop()

        if self.lease_lost:
            logger.warning(
                "Search %s lost its lease to another attempt; this one stopped", self.search_id
            )
            return
        self._flush(output, uploader, final=True)
        if self.released:
            retry_db(
                lambda: lifecycle.release(self.db, self.search_id, self.owner),
                "releasing the search",
            )
            return
        self._record_outcome(process.exitcode, output)

    def _supervise(
        self,
        process: multiprocessing.process.BaseProcess,
        output: ChildOutput,
        stop: Any,
        uploader: StateUploader,
    ) -> None:
        interval = self.settings.flush_interval_seconds
        next_heartbeat = time.monotonic() + self.settings.heartbeat_seconds
        next_cancel_check = time.monotonic()
        kill_at: float | None = None
        while not output.closed.wait(interval):
            now = time.monotonic()
            self._flush(output, uploader)
            if WORKER_SHUTTING_DOWN.is_set() and not self.cancel_requested:
                logger.info(
                    "Worker shutting down: stopping search %s to resume later", self.search_id
                )
                self.released = True
                process.kill()
                return
            if now >= next_heartbeat:
                next_heartbeat = now + self.settings.heartbeat_seconds
                if not self._heartbeat():
                    self.lease_lost = True
                    stop.set()
                    process.kill()
                    return
            if not self.cancel_requested and now >= next_cancel_check:
                next_cancel_check = now + CANCEL_POLL_SECONDS
                if self._check_cancel():
                    self.cancel_requested = True
                    stop.set()
                    kill_at = now + self.settings.cancel_grace_seconds
                    logger.info("Search %s asked to stop for a cancel", self.search_id)
            if kill_at is not None and now >= kill_at and process.is_alive():
                logger.warning(
                    "Search %s did not stop %.0f s after a cancel; killing process %d",
                    self.search_id,
                    self.settings.cancel_grace_seconds,
                    process.pid,
                )
                process.kill()
                kill_at = None

    def _heartbeat(self) -> bool:
        try:
            return lifecycle.heartbeat(
                self.db, self.search_id, self.owner, self.settings.lease_seconds
            )
        except (OperationalError, DBAPIError) as error:
            # The lease holds for lease_seconds; a missed heartbeat is retried next time.
            logger.warning("Heartbeat of search %s failed: %s", self.search_id, error)
            return True

    def _check_cancel(self) -> bool:
        try:
            return lifecycle.is_cancel_requested(self.db, self.search_id)
        except (OperationalError, DBAPIError) as error:
            logger.warning("Cancel check of search %s failed: %s", self.search_id, error)
            return False

    # Events and artifacts.

    def _flush(self, output: ChildOutput, uploader: StateUploader, final: bool = False) -> None:
        events = output.take_events()
        if not events:
            return
        deadline = time.monotonic() + FINAL_FLUSH_TIMEOUT_SECONDS if final else None
        try:
            retry_db(lambda: self._write_events(events), "storing events", deadline)
        except (OperationalError, DBAPIError):
            logger.exception(
                "Dropped %d events of search %s after retrying for %.0f s",
                len(events),
                self.search_id,
                FINAL_FLUSH_TIMEOUT_SECONDS,
            )
            return
        if any(
            event["type"] == "checkpoint_written" and event["data"].get("kind") == "state"
            for event in events
        ):
            uploader.request()

    def _write_events(self, events: list[dict[str, Any]]) -> None:
        with self.db.write() as session:
            search = session.get_one(Search, self.search_id)
            if self.first_flush:
                # A resumed run starts again after its checkpoint; what an earlier attempt
                # stored from that seq on is history that no longer happened.
                supersede_from(session, self.search_id, int(events[0]["seq"]))
            store_events(session, search, self.attempt, events)
        self.first_flush = False

    def store_artifact(self, kind: ArtifactKind) -> bool:
        path = self.workdir / kind
        if not path.is_file():
            return False
        key = search_key(self.search_id, kind)
        size = self.store.put_file(key, path)

        def register() -> None:
            with self.db.write() as session:
                session.execute(
                    delete(Artifact).where(
                        Artifact.search_id == self.search_id, Artifact.kind == kind
                    )
                )
                session.add(Artifact(search_id=self.search_id, kind=kind, key=key, size=size))

        retry_db(register, f"registering {kind}")
        logger.info("Stored %s of search %s (%d bytes)", kind, self.search_id, size)
        return True

    # Outcome.

    def _record_outcome(self, exitcode: int | None, output: ChildOutput) -> None:
        state, error = self._outcome(exitcode, output)
        if state == SearchState.SUCCEEDED:
            try:
                for kind in (ArtifactKind.GENOTYPE, ArtifactKind.CHECKPOINT, ArtifactKind.EVENTS):
                    if not self.store_artifact(kind) and kind != ArtifactKind.EVENTS:
                        state, error = SearchState.FAILED, f"the search wrote no {kind}"
                        break
            except Exception as upload_error:
                logger.exception("Storing the artifacts of search %s failed", self.search_id)
                state, error = SearchState.FAILED, f"storing artifacts failed: {upload_error}"
        retry_db(
            lambda: lifecycle.finish(self.db, self.search_id, self.owner, state, error),
            "recording the outcome",
        )
        if not self.settings.keep_work_dirs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _outcome(
        self, exitcode: int | None, output: ChildOutput
    ) -> tuple[SearchState, str | None]:
        if output.result is not None:
            reported = output.result.get("state")
            if reported == SearchState.SUCCEEDED:
                return SearchState.SUCCEEDED, None
            if reported == SearchState.CANCELLED:
                return SearchState.CANCELLED, None
            return SearchState.FAILED, output.result.get("error") or "the search failed"
        if self.cancel_requested:
            return SearchState.CANCELLED, None
        if output.error is not None:
            return SearchState.FAILED, output.error
        if exitcode is not None and exitcode < 0:
            name = signal.Signals(-exitcode).name
            return (
                SearchState.FAILED,
                f"the search process was killed by {name}"
                + (" (out of memory?)" if name == "SIGKILL" else ""),
            )
        return SearchState.FAILED, f"the search process exited with code {exitcode}"


def run_search_job(
    settings: Settings,
    db: Database,
    store: ArtifactStore,
    search_id: str,
    task_id: str,
    child_env: dict[str, str],
) -> None:
    """Claim the search's lease and run it; a task that cannot claim it exits."""
    owner = f"{worker_id()}:{task_id}"
    claim = retry_db(
        lambda: lifecycle.claim(db, search_id, owner, worker_id(), settings.lease_seconds),
        "claiming the lease",
    )
    if claim is None:
        with db.read() as session:
            state = session.scalar(select(Search.state).where(Search.id == search_id))
        logger.info(
            "Task %s for search %s exits: the search is %s, not queued (a duplicate delivery, "
            "a cancel or a deleted search)",
            task_id,
            search_id,
            state or "missing",
        )
        return
    job = SearchJob(settings, db, store, search_id, owner, claim, child_env)
    try:
        job.run()
    except Exception as error:
        logger.exception("Search %s failed in the worker", search_id)
        reason = f"the worker failed: {type(error).__name__}: {error}"
        retry_db(
            lambda: lifecycle.finish(db, search_id, owner, SearchState.FAILED, reason),
            "recording the failure",
        )
