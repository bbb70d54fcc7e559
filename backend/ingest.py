"""Store engine events: the raw event for replay, plus the rows the API's views read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from backend.models import (
    EVENT_TABLES,
    Deadhead,
    EpochMetric,
    Event,
    PrunerSnapshot,
    Search,
    Section,
)


def finite(value: Any) -> Any:
    """Return `value` with every NaN or infinite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def supersede_from(session: Session, search_id: str, seq: int) -> None:
    """Mark every stored row of the search at or past `seq` superseded.

    A resumed run emits events again from the seq after its checkpoint, so what an earlier
    attempt stored from there on is no longer part of the search's history.
    """
    for table in EVENT_TABLES:
        session.execute(
            update(table)
            .where(table.search_id == search_id, table.seq >= seq, table.superseded.is_(False))
            .values(superseded=True)
        )


def store_events(
    session: Session, search: Search, attempt: int, events: Sequence[dict[str, Any]]
) -> None:
    """Add `events` (in seq order) and update the search's progress from them."""
    for raw in events:
        event = finite(raw)
        data: dict[str, Any] = event.get("data") or {}
        seq = int(event["seq"])
        epoch = event.get("epoch")
        session.add(
            Event(
                search_id=search.id,
                seq=seq,
                attempt=attempt,
                type=str(event["type"]),
                epoch=epoch,
                time=float(event.get("time") or 0.0),
                data=data,
            )
        )
        _derive(session, search, event["type"], seq, epoch, data)
        search.last_seq = seq


def _derive(
    session: Session, search: Search, kind: str, seq: int, epoch: int | None, data: dict[str, Any]
) -> None:
    if kind == "search_started":
        search.budget = data.get("budget")
        search.targets = data.get("targets")
    elif kind == "section_added":
        cells = data.get("cells") or []
        session.add(
            Section(
                search_id=search.id,
                seq=seq,
                section=int(data.get("section", 0)),
                start_epoch=data.get("start_epoch"),
                types=[cell.get("type") for cell in cells],
                cells=cells,
            )
        )
    elif kind == "epoch_end":
        _add_epoch_metric(session, search, seq, epoch or 0, data)
    elif kind == "pruner_snapshot":
        pruners = data.get("pruners") or []
        session.add(
            PrunerSnapshot(
                search_id=search.id,
                seq=seq,
                epoch=epoch,
                pruner_ids=[pruner[0] for pruner in pruners],
                weights=[pruner[1] for pruner in pruners],
                gates="".join("1" if pruner[2] else "0" for pruner in pruners),
            )
        )
    elif kind == "deadheaded":
        session.add(
            Deadhead(
                search_id=search.id,
                seq=seq,
                epoch=epoch,
                pruner_ids=data.get("pruner_ids") or [],
                removed_nodes=data.get("removed_nodes") or [],
                reason=data.get("reason"),
            )
        )
    elif kind == "finished":
        search.test_accuracy = data.get("test_accuracy")
        search.params = data.get("params")
        search.compression = data.get("compression")
    elif kind == "failed":
        search.error = data.get("reason")


def _add_epoch_metric(
    session: Session, search: Search, seq: int, epoch: int, data: dict[str, Any]
) -> None:
    session.add(
        EpochMetric(
            search_id=search.id,
            seq=seq,
            epoch=epoch,
            section=data.get("section"),
            train_accuracy=data.get("train_accuracy"),
            test_accuracy=data.get("test_accuracy"),
            train_loss=data.get("train_loss"),
            test_loss=data.get("test_loss"),
            params=data.get("params"),
            memory_measured=data.get("memory_measured"),
            data=data,
        )
    )
    search.epoch = epoch
    search.progress = min(1.0, (epoch + 1) / max(search.epochs, 1))
    search.elapsed_seconds = data.get("elapsed")
    search.params = data.get("params")
    accuracy = data.get("test_accuracy")
    search.test_accuracy = accuracy
    if accuracy is not None and (
        search.best_test_accuracy is None or accuracy > search.best_test_accuracy
    ):
        search.best_test_accuracy = accuracy
    compression = data.get("compression")
    if isinstance(compression, list) and compression:
        values = [value for value in compression if isinstance(value, int | float)]
        search.compression = sum(values) / len(values) if values else None
    elif isinstance(compression, int | float):
        search.compression = compression
