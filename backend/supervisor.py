"""The embedded worker of `serve`: a real Celery worker process, restarted whenever it dies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

# The delay before a restart doubles after each quick exit, and resets after a worker that
# ran for STABLE_SECONDS.
RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 30.0
STABLE_SECONDS = 60.0
STOP_WAIT_SECONDS = 10.0


class WorkerSupervisor:
    """Starts `python -m worker.cli worker` and starts it again when it exits."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "worker.cli", "worker"]
        process = subprocess.Popen(command, env=self.env)
        logger.info("Embedded worker started as process %d", process.pid)
        return process

    def _run(self) -> None:
        delay = RESTART_DELAY_SECONDS
        while not self.stopping.is_set():
            started = time.monotonic()
            self.process = self._spawn()
            code = self.process.wait()
            if self.stopping.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started >= STABLE_SECONDS:
                delay = RESTART_DELAY_SECONDS
            logger.warning(
                "Embedded worker %d exited with code %s; restarting in %.0f s",
                self.process.pid,
                code,
                delay,
            )
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)

    def stop(self) -> None:
        """Stop the worker: a warm shutdown first, then SIGKILL after STOP_WAIT_SECONDS.

        A search still training then is re-enqueued by the reaper on the next start and
        resumes from its last state.pt.
        """
        self.stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("Embedded worker %d did not stop; killing it", process.pid)
                process.kill()
                process.wait()
        self.thread.join(timeout=STOP_WAIT_SECONDS)
