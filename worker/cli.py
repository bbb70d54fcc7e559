"""`bonsai worker`: a Celery worker that trains one search at a time."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from pydantic import ValidationError

from backend.logs import configure_logging
from backend.settings import Settings
from worker.celery_app import create_celery
from worker.tasks import register_tasks

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "worker",
        help="run a worker that takes searches from the broker, one at a time",
        description="Run a Celery worker that trains one search at a time. Settings come from "
        "BONSAI_* environment variables; run one worker per GPU.",
    )
    parser.add_argument(
        "--gpu",
        type=int,
        default=None,
        metavar="N",
        help="train on GPU N only: sets CUDA_VISIBLE_DEVICES=N in the search processes",
    )
    parser.add_argument(
        "--name", default=None, help="Celery node name (default: bonsai-gpuN@host or bonsai@host)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        configure_logging("INFO")
        logger.error("Invalid settings: %s", error)
        return 2
    configure_logging(settings.log_level)
    run_worker(settings, gpu=args.gpu, name=args.name)
    return 0


def run_worker(settings: Settings, gpu: int | None = None, name: str | None = None) -> None:
    """Run the Celery worker in this process until it is stopped.

    The solo pool runs the task in this process, which never imports torch; the search
    trains in a spawned child, so CUDA is initialised only in a process that never forks.
    """
    child_env = {"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}
    app = create_celery(settings)
    register_tasks(app, settings, child_env)
    node = name or (f"bonsai-gpu{gpu}@%h" if gpu is not None else "bonsai@%h")
    # Celery expands %h to the host name in --hostname; the log shows the expanded name.
    logger.info(
        "Worker %s starting on queue %s", node.replace("%h", socket.gethostname()), settings.queue
    )
    app.worker_main(
        argv=[
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={settings.queue}",
            f"--hostname={node}",
            f"--loglevel={settings.log_level}",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bonsai")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
