"""The reaper: a thread of `serve` that re-enqueues searches whose lease lapsed.

Neither broker is trusted to redeliver a task whose worker died: the filesystem transport
never does, and Redis only after its visibility timeout.
"""

from __future__ import annotations

import logging
import threading

from backend import lifecycle
from backend.db import Database
from backend.settings import Settings
from worker.celery_app import TaskQueue

logger = logging.getLogger(__name__)


def reap_once(db: Database, queue: TaskQueue, max_requeues: int) -> list[str]:
    """Run one pass and return the ids whose task was sent."""
    sent = []
    for search_id in lifecycle.reap(db, max_requeues):
        try:
            queue.send(search_id)
        except Exception:
            logger.exception("Sending the task of search %s failed; retrying next pass", search_id)
            continue
        lifecycle.mark_enqueued(db, search_id)
        sent.append(search_id)
    return sent


class Reaper:
    def __init__(self, settings: Settings, db: Database, queue: TaskQueue) -> None:
        self.settings = settings
        self.db = db
        self.queue = queue
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> None:
        logger.info("Reaper checking leases every %.1f s", self.settings.reaper_interval_seconds)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopping.wait(self.settings.reaper_interval_seconds):
            try:
                reap_once(self.db, self.queue, self.settings.max_requeues)
            except Exception:
                logger.exception("Reaper pass failed; retrying next pass")
