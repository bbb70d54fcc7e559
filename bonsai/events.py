"""Search events: the stream that the CLI, the service and the viewer follow.

Every event is ``{"seq", "type", "time", "epoch", "data"}`` with `seq` rising by
one from 0. Values are JSON-ready and never NaN or infinite: such floats are
written as null, so any strict JSON parser reads every event.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["EVENT_TYPES", "EventEmitter", "sanitize"]

logger = logging.getLogger(__name__)

EVENT_TYPES = (
    "search_started",
    "section_added",
    "batch",
    "epoch_end",
    "pruner_snapshot",
    "deadheaded",
    "checkpoint_written",
    "finished",
    "failed",
)


def sanitize(value: Any) -> Any:
    """Return `value` as plain JSON types, with NaN and infinities replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    if hasattr(value, "item"):  # numpy and torch scalars
        return sanitize(value.item())
    if hasattr(value, "tolist"):
        return sanitize(value.tolist())
    raise TypeError(f"event value of type {type(value).__name__} is not JSON-ready")


class EventEmitter:
    """Numbers events, appends them to ``events.jsonl`` and passes them to a callback."""

    def __init__(
        self, path: Path, callback: Callable[[dict[str, Any]], None] | None, next_seq: int = 0
    ) -> None:
        self.path = path
        self.callback = callback
        self.next_seq = next_seq
        self._truncate_after(next_seq)
        self._file = path.open("a", encoding="utf-8")

    def _truncate_after(self, next_seq: int) -> None:
        """Drop events at or past `next_seq` left by a run that stopped after its last state."""
        if not self.path.exists():
            return
        kept = []
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    if json.loads(line)["seq"] < next_seq:
                        kept.append(line)
                except (ValueError, KeyError):
                    break  # a line cut short by a crash ends the usable log
        self.path.write_text("".join(kept), encoding="utf-8")

    def emit(self, event_type: str, data: dict[str, Any], epoch: int | None) -> dict[str, Any]:
        assert event_type in EVENT_TYPES, event_type
        event = {
            "seq": self.next_seq,
            "type": event_type,
            "time": time.time(),
            "epoch": epoch,
            "data": sanitize(data),
        }
        self.next_seq += 1
        self._file.write(json.dumps(event, allow_nan=False) + "\n")
        if event_type not in ("batch", "pruner_snapshot"):
            self._file.flush()
        if self.callback is not None:
            self.callback(event)
        return event

    def flush(self) -> None:
        """Write buffered lines (batch and snapshot events are not flushed one by one)."""
        self._file.flush()

    def close(self) -> None:
        self._file.close()
