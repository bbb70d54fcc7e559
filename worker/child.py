"""The process a search trains in, started with `spawn` so that killing it frees all its memory.

It sends every engine event to the worker over a pipe and reads the cancel flag from a
multiprocessing Event. The worker process does all database and storage work.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from typing import Any

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    search_id: str
    config: dict[str, Any]
    workdir: str
    resume: bool
    search_function: str
    env: dict[str, str]
    log_level: str


def resolve_function(path: str) -> Callable[..., Any]:
    """Import `module:name` or `module.name`."""
    module_name, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    function = getattr(importlib.import_module(module_name), name)
    if not callable(function):
        raise TypeError(f"{path} is not callable")
    return function  # type: ignore[no-any-return]


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the worker that started it dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed; the search outlives a killed worker")


def child_main(spec: ChildSpec, conn: Connection, stop: EventType) -> None:
    os.environ.update(spec.env)
    # Ctrl-C in a terminal, or a stop of the whole process group, reaches this process too.
    # The worker decides: it stops or kills this process and keeps the search resumable.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    logging.basicConfig(
        level=spec.log_level, format="%(asctime)s %(levelname)s [%(name)s] %(message)s"
    )
    parent = os.getppid()
    logger.info(
        "Search %s starting in process %d (resume=%s)", spec.search_id, os.getpid(), spec.resume
    )
    # The engine keeps data sets in memory and starts no DataLoader worker processes, so no
    # process is forked under the Celery pool.
    logger.info("Data is loaded in memory; DataLoader workers are not used (num_workers=0)")

    def on_event(event: dict[str, Any]) -> None:
        conn.send(("event", event))

    def should_stop() -> bool:
        return stop.is_set() or os.getppid() != parent

    try:
        bonsai: Any = importlib.import_module("bonsai")
        search = resolve_function(spec.search_function)
        config = bonsai.SearchConfig.from_dict(spec.config)
        result = search(
            config,
            on_event=on_event,
            should_stop=should_stop,
            workdir=spec.workdir,
            resume=spec.resume,
        )
        conn.send(
            (
                "result",
                {
                    "state": str(getattr(result, "state", "failed")),
                    "error": getattr(result, "error", None),
                },
            )
        )
    except BaseException as error:
        logger.exception("Search %s raised an exception", spec.search_id)
        # The traceback goes to the log above; the user sees what failed and why.
        conn.send(("error", f"{type(error).__name__}: {error}"))
        conn.close()
        raise SystemExit(1) from None
    conn.close()
