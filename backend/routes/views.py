"""Read-only views of a search's history for the viewer: metrics, sections, pruners, graph."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.analysis import graph_from_events
from backend.models import Deadhead, EpochMetric, Event, PrunerSnapshot, Search, Section
from backend.schemas import Page, PrunerPage
from backend.services import ServicesDep, get_search_or_404

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/searches", tags=["history"])

GRAPH_EVENT_TYPES = (
    "search_started",
    "section_added",
    "deadheaded",
    "pruner_snapshot",
    "epoch_end",
)

Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=5000)]


@router.get("/{search_id}/metrics")
def read_metrics(
    services: ServicesDep, search_id: str, offset: Offset = 0, limit: Limit = 1000
) -> Page:
    """Return the epoch_end data of every epoch, oldest first."""
    with services.db.read() as session:
        get_search_or_404(session, search_id)
        query = select(EpochMetric).where(
            EpochMetric.search_id == search_id, EpochMetric.superseded.is_(False)
        )
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(EpochMetric.seq).offset(offset).limit(limit)).all()
        return Page(items=[{**row.data, "epoch": row.epoch} for row in rows], total=total)


def _sections(session: Session, search: Search) -> list[Section]:
    return list(
        session.scalars(
            select(Section)
            .where(Section.search_id == search.id, Section.superseded.is_(False))
            .order_by(Section.seq)
        ).all()
    )


@router.get("/{search_id}/sections")
def read_sections(services: ServicesDep, search_id: str) -> list[dict[str, Any]]:
    """Return each section with its cells, memory target and epoch range."""
    with services.db.read() as session:
        search = get_search_or_404(session, search_id)
        rows = _sections(session, search)
        targets = search.targets or []
        items = []
        for index, row in enumerate(rows):
            following = rows[index + 1].start_epoch if index + 1 < len(rows) else None
            end_epoch = following - 1 if following is not None else search.epoch
            items.append(
                {
                    "section": row.section,
                    "cells": row.cells,
                    "types": row.types,
                    "target": targets[row.section] if row.section < len(targets) else None,
                    "start_epoch": row.start_epoch,
                    "end_epoch": end_epoch,
                }
            )
        return items


@router.get("/{search_id}/pruners")
def read_pruners(
    services: ServicesDep,
    search_id: str,
    epoch: Annotated[int | None, Query(ge=0, description="Default: the latest snapshot.")] = None,
    offset: Offset = 0,
    limit: Limit = 1000,
) -> PrunerPage:
    """Return every pruner's weight and gate at the last snapshot at or before `epoch`."""
    with services.db.read() as session:
        search = get_search_or_404(session, search_id)
        query = select(PrunerSnapshot).where(
            PrunerSnapshot.search_id == search_id, PrunerSnapshot.superseded.is_(False)
        )
        if epoch is not None:
            query = query.where(PrunerSnapshot.epoch <= epoch)
        snapshot = session.scalar(query.order_by(PrunerSnapshot.seq.desc()).limit(1))
        known = [
            pruner["id"]
            for section in _sections(session, search)
            if snapshot is None or section.seq <= snapshot.seq
            for cell in section.cells
            for pruner in cell.get("pruners", [])
        ]
    items: list[dict[str, Any]] = []
    if snapshot is None:
        items = [{"id": name, "weight": None, "gate": None, "alive": True} for name in known]
    else:
        live = set(snapshot.pruner_ids)
        items = [
            {"id": name, "weight": weight, "gate": int(gate), "alive": True}
            for name, weight, gate in zip(
                snapshot.pruner_ids, snapshot.weights, snapshot.gates, strict=True
            )
        ]
        items += [
            {"id": name, "weight": None, "gate": 0, "alive": False}
            for name in known
            if name not in live
        ]
    return PrunerPage(
        epoch=snapshot.epoch if snapshot is not None else None,
        items=items[offset : offset + limit],
        total=len(items),
    )


@router.get("/{search_id}/deadheads")
def read_deadheads(services: ServicesDep, search_id: str) -> list[dict[str, Any]]:
    """Return every deadheading, oldest first."""
    with services.db.read() as session:
        get_search_or_404(session, search_id)
        rows = session.scalars(
            select(Deadhead)
            .where(Deadhead.search_id == search_id, Deadhead.superseded.is_(False))
            .order_by(Deadhead.seq)
        ).all()
        return [
            {
                "epoch": row.epoch,
                "seq": row.seq,
                "pruner_ids": row.pruner_ids,
                "removed_nodes": row.removed_nodes,
                "reason": row.reason,
            }
            for row in rows
        ]


def load_events(session: Session, search_id: str, types: tuple[str, ...]) -> list[dict[str, Any]]:
    """Load the search's current (not superseded) events of `types` as engine event dicts."""
    rows = session.scalars(
        select(Event)
        .where(
            Event.search_id == search_id,
            Event.superseded.is_(False),
            Event.type.in_(types),
        )
        .order_by(Event.seq)
    ).all()
    return [
        {"seq": row.seq, "type": row.type, "time": row.time, "epoch": row.epoch, "data": row.data}
        for row in rows
    ]


@router.get("/{search_id}/graph")
def read_graph(
    services: ServicesDep,
    search_id: str,
    epoch: Annotated[int | None, Query(description="Default: the latest epoch.")] = None,
) -> dict[str, Any]:
    """Return the architecture's graph analysis at the end of `epoch`."""
    with services.db.read() as session:
        get_search_or_404(session, search_id)
        events = load_events(session, search_id, GRAPH_EVENT_TYPES)
    epochs = sorted({e["epoch"] for e in events if e["type"] == "epoch_end"})
    if epoch is not None and epoch not in epochs:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["query", "epoch"],
                    "msg": f"epoch {epoch} has not ended; ended epochs: {epochs}",
                    "type": "value_error",
                }
            ],
        )
    try:
        result: dict[str, Any] = graph_from_events(events, epoch)
    except ValueError as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["query", "epoch"], "msg": str(error), "type": "value_error"}],
        ) from error
    return result
