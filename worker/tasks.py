"""Celery tasks of the worker; they take ids and read everything else from the database."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task, signals

from backend.db import Database
from backend.settings import Settings
from backend.storage import ArtifactStore, create_store
from worker.celery_app import RUN_SEARCH_TASK
from worker.job import WORKER_SHUTTING_DOWN, run_search_job

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _database(url: str) -> Database:
    return Database(url)


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(**_kwargs: Any) -> None:
    WORKER_SHUTTING_DOWN.set()


def register_tasks(app: Celery, settings: Settings, child_env: dict[str, str]) -> None:
    """Add the search task to `app`; `child_env` is set in every search process."""
    store: ArtifactStore = create_store(settings.resolved_artifact_url, settings.s3_endpoint_url)

    @app.task(name=RUN_SEARCH_TASK, bind=True, acks_late=True, ignore_result=True)
    def run_search_task(self: Task, search_id: str) -> None:
        task_id = str(self.request.id)
        logger.info("Task %s received for search %s", task_id, search_id)
        run_search_job(
            settings,
            _database(settings.resolved_database_url),
            store,
            search_id,
            task_id,
            child_env,
        )
