"""Logging set-up for the service's programs; modules only ever call `logging.getLogger`."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def configure_logging(level: str) -> None:
    """Log at `level` (BONSAI_LOG_LEVEL) to stderr.

    The `bonsai` command may have configured the root logger already with its quieter
    default. A service logs its starts, stops and retries, so the service's level wins.
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT)
    root.setLevel(level.upper())
