"""`bonsai serve`: the API server, plus an embedded worker on the embedded default."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

import uvicorn
from pydantic import ValidationError

from backend.logs import configure_logging
from backend.settings import Settings

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "serve",
        help="run the web application: API, pages and (embedded default) a worker",
        description="Run the API and the pages. With the default filesystem broker it also "
        "starts a Celery worker and restarts it if it dies. Settings come from BONSAI_* "
        "environment variables.",
    )
    parser.add_argument(
        "--host", default=None, help="address to bind (default: BONSAI_HOST, 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port to bind (default: BONSAI_PORT, 8000)"
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="start no embedded worker, whatever the broker",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
        host = args.host or settings.host
        port = args.port or settings.port
        settings.check_bind(host)
    except (ValidationError, ValueError) as error:
        configure_logging("INFO")
        logger.error("Invalid settings: %s", error)
        return 2
    configure_logging(settings.log_level)
    return serve(
        settings, host, port, embedded_worker=settings.runs_embedded_worker and not args.no_worker
    )


def serve(settings: Settings, host: str, port: int, embedded_worker: bool) -> int:
    from backend.app import create_app
    from backend.migrate import upgrade
    from backend.supervisor import WorkerSupervisor

    settings.resolved_home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    supervisor = WorkerSupervisor() if embedded_worker else None
    if supervisor is not None:
        supervisor.start()
    logger.info(
        "Serving on http://%s:%d (database %s, broker %s, %s)",
        host,
        port,
        settings.resolved_database_url.split("@")[-1],
        settings.broker_url.split("@")[-1],
        "embedded worker" if supervisor else "no embedded worker",
    )
    # uvicorn (0.55) handles SIGTERM while it serves, and after its shutdown it restores the
    # previous handler and raises the signal again. With the default handler, that ended
    # the process before the `finally` below, and the embedded worker outlived `serve`.
    # Python sets signal handlers only on the main thread.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        uvicorn.run(
            create_app(settings), host=host, port=port, log_level=settings.log_level.lower()
        )
    except _Terminated:
        logger.info("Stopped by SIGTERM")
    finally:
        if supervisor is not None:
            supervisor.stop()
        if on_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


class _Terminated(Exception):
    """SIGTERM reached `serve`."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bonsai")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
