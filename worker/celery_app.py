"""The Celery app shared by the API, which sends tasks, and the worker, which runs them."""

from __future__ import annotations

from typing import Any

from celery import Celery

from backend.settings import Settings

RUN_SEARCH_TASK = "bonsai.run_search"


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    if not settings.uses_filesystem_broker:
        return {}
    messages = settings.broker_dir / "messages"
    processed = settings.broker_dir / "processed"
    # Without this option, kombu keeps its exchange tables in "control" under the
    # working directory.
    control = settings.broker_dir / "control"
    for folder in (messages, processed, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(messages),
        "data_folder_out": str(messages),
        "processed_folder": str(processed),
        "control_folder": str(control),
        "store_processed": False,
    }


def create_celery(settings: Settings) -> Celery:
    """Create a Celery app for the settings' broker and queue; it stores no results."""
    app = Celery("bonsai", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # A search may run for hours: the message is acknowledged only when the task ends, and
        # a redelivered duplicate finds the lease taken and exits (see worker.job).
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


class TaskQueue:
    """Sends search tasks to the broker."""

    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue
        self.app = create_celery(settings)

    def send(self, search_id: str) -> None:
        self.app.send_task(RUN_SEARCH_TASK, args=[search_id], queue=self.queue)

    def check(self) -> None:
        """Raise when the broker cannot be reached."""
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def close(self) -> None:
        self.app.close()
