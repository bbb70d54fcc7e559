"""`GET /api/searches/{id}/events`: Server-Sent Events, replayed from the database then followed.

The stream polls the database, so it works the same whichever worker or machine writes the
events. Each poll opens and closes its own session, so a client that goes away leaves no
connection or transaction open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from backend.models import TERMINAL_STATES, Event, Search
from backend.responses import dumps
from backend.schemas import search_public
from backend.services import Services, ServicesDep, get_search_or_404

logger = logging.getLogger(__name__)

# Event seqs are stored as 64-bit integers.
MAX_SEQ = 2**63 - 1

router = APIRouter(prefix="/searches", tags=["events"])

BATCH_EVENTS = 500
KEEPALIVE_SECONDS = 15.0
RETRY_MILLISECONDS = 2000


def format_event(event_id: int | None, kind: str, payload: Any) -> str:
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines += [f"event: {kind}", f"data: {dumps(payload)}"]
    return "\n".join(lines) + "\n\n"


def _poll(
    services: Services, search_id: str, after: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    with services.db.read() as session:
        search = session.get(Search, search_id)
        if search is None:
            return [], None
        rows = session.scalars(
            select(Event)
            .where(
                Event.search_id == search_id,
                Event.superseded.is_(False),
                Event.seq > after,
            )
            .order_by(Event.seq)
            .limit(BATCH_EVENTS)
        ).all()
        events = [
            {"seq": r.seq, "type": r.type, "time": r.time, "epoch": r.epoch, "data": r.data}
            for r in rows
        ]
        return events, search_public(search).model_dump(mode="json")


async def event_stream(
    request: Request, services: Services, search_id: str, after: int
) -> AsyncIterator[str]:
    services.stream_opened()
    last_state: str | None = None
    last_sent = time.monotonic()
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        while not await request.is_disconnected():
            # NOTE: a client connected while a search resumes has already received the
            # events that the resume supersedes; only a new stream replays one history.
            events, search = await run_in_threadpool(_poll, services, search_id, after)
            if search is None:
                break  # deleted while streaming
            for event in events:
                yield format_event(event["seq"], event["type"], event)
                after = event["seq"]
            sent = bool(events)
            if search["state"] != last_state:
                last_state = search["state"]
                yield format_event(None, "state", search)
                sent = True
            if sent:
                last_sent = time.monotonic()
            if not events and search["state"] in TERMINAL_STATES:
                break
            if len(events) == BATCH_EVENTS:
                continue
            if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(services.settings.stream_poll_seconds)
    finally:
        services.stream_closed()
        logger.debug("Event stream of search %s closed after seq %d", search_id, after)


@router.get(
    "/{search_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
def stream_events(
    request: Request,
    services: ServicesDep,
    search_id: str,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Stream the search's events: history after Last-Event-ID, then live ones."""
    with services.db.read() as session:
        get_search_or_404(session, search_id)
    try:
        after = int(last_event_id) if last_event_id else -1
    except ValueError:
        after = -1
    if not -1 <= after < MAX_SEQ:
        after = -1  # not a seq this server sent: replay the whole history
    return StreamingResponse(
        event_stream(request, services, search_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
