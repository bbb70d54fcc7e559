"""Every state transition of a search, each one conditional update in the database.

queued -> running (a worker claims the lease) -> succeeded | failed | cancelled;
running -> queued (the reaper re-enqueues a lapsed lease, or a worker shutting down
releases it); queued -> cancelled.
Conditions on state and lease owner make each transition safe against a duplicate task,
a second reaper or a worker that lost its lease.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from backend.db import Database
from backend.models import TERMINAL_STATES, Search, SearchState, utcnow

logger = logging.getLogger(__name__)


class TransitionError(Exception):
    """A transition that the search's current state does not allow."""


@dataclass(frozen=True)
class Claim:
    attempt: int
    resume: bool


def claim(
    db: Database, search_id: str, owner: str, worker: str, lease_seconds: float
) -> Claim | None:
    """Take the lease of a queued search; None when another task has it or it is not queued."""
    now = utcnow()
    with db.write() as session:
        result = session.execute(
            update(Search)
            .where(
                Search.id == search_id,
                Search.state == SearchState.QUEUED,
                Search.cancel_requested_at.is_(None),
            )
            .values(
                state=SearchState.RUNNING,
                attempts=Search.attempts + 1,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                worker=worker,
                child_pid=None,
                error=None,
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        search = session.get_one(Search, search_id)
        if search.started_at is None:
            search.started_at = now
        # A search that stored events before ran already and may have a state.pt to resume.
        return Claim(attempt=search.attempts, resume=search.last_seq is not None)


def heartbeat(db: Database, search_id: str, owner: str, lease_seconds: float) -> bool:
    """Extend the lease; False when this owner no longer holds it."""
    with db.write() as session:
        result = session.execute(
            update(Search)
            .where(
                Search.id == search_id,
                Search.lease_owner == owner,
                Search.state == SearchState.RUNNING,
            )
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def set_child_pid(db: Database, search_id: str, owner: str, pid: int | None) -> None:
    with db.write() as session:
        session.execute(
            update(Search)
            .where(Search.id == search_id, Search.lease_owner == owner)
            .values(child_pid=pid)
        )


def release(db: Database, search_id: str, owner: str) -> bool:
    """Put a running search back in the queue because its worker is shutting down.

    The run is not counted as an attempt, and the reaper sends the task again.
    """
    with db.write() as session:
        result = session.execute(
            update(Search)
            .where(
                Search.id == search_id,
                Search.lease_owner == owner,
                Search.state == SearchState.RUNNING,
            )
            .values(
                state=SearchState.QUEUED,
                attempts=Search.attempts - 1,
                lease_owner=None,
                lease_expires_at=None,
                child_pid=None,
                enqueued_at=None,
            )
        )
        released = bool(result.rowcount == 1)  # type: ignore[attr-defined]
    if released:
        logger.info("Search %s released to the queue by a worker shutting down", search_id)
    return released


def is_cancel_requested(db: Database, search_id: str) -> bool:
    with db.read() as session:
        requested = session.scalar(
            select(Search.cancel_requested_at).where(Search.id == search_id)
        )
        return requested is not None


def finish(
    db: Database, search_id: str, owner: str, state: SearchState, error: str | None = None
) -> bool:
    """Record the end of a run; False when this owner no longer holds the lease."""
    if state not in TERMINAL_STATES:
        raise ValueError(f"{state} is not a final state")
    values: dict[str, object] = {
        "state": state,
        "finished_at": utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
        "child_pid": None,
        "error": error,
    }
    if state == SearchState.SUCCEEDED:
        values["progress"] = 1.0
    with db.write() as session:
        result = session.execute(
            update(Search)
            .where(
                Search.id == search_id,
                Search.lease_owner == owner,
                Search.state == SearchState.RUNNING,
            )
            .values(**values)
        )
        done = bool(result.rowcount == 1)  # type: ignore[attr-defined]
    if done:
        logger.info("Search %s ended %s%s", search_id, state, f": {error}" if error else "")
    return done


def request_cancel(session: Session, search: Search) -> None:
    """Cancel a queued search at once, or ask a running one to stop.

    Raises TransitionError when the search has already finished.
    """
    now = utcnow()
    if search.state in TERMINAL_STATES:
        raise TransitionError(f"search {search.id} already {search.state}")
    if search.state == SearchState.QUEUED:
        search.state = SearchState.CANCELLED
        search.finished_at = now
    search.cancel_requested_at = search.cancel_requested_at or now
    logger.info("Cancel requested for search %s (%s)", search.id, search.state)


def mark_enqueued(db: Database, search_id: str) -> None:
    with db.write() as session:
        session.execute(
            update(Search)
            .where(Search.id == search_id, Search.state == SearchState.QUEUED)
            .values(enqueued_at=utcnow())
        )


def reap(db: Database, max_requeues: int, now: datetime | None = None) -> list[str]:
    """Handle running searches whose lease lapsed; return the ids that need a task sent.

    A lapsed search is re-enqueued at most `max_requeues` times and then fails with the
    reason. One whose cancel was requested ends cancelled. Queued searches whose task was
    never sent (the broker was down at creation) are returned too.
    """
    now = now or utcnow()
    to_send: list[str] = []
    with db.write() as session:
        lapsed = session.scalars(
            select(Search).where(
                Search.state == SearchState.RUNNING, Search.lease_expires_at < now
            )
        ).all()
        for search in lapsed:
            lost = f"worker {search.worker} stopped renewing its lease"
            if search.cancel_requested_at is not None:
                _end_lapsed(session, search, SearchState.CANCELLED, None, now)
            elif search.attempts > max_requeues:
                reason = (
                    f"{lost}; the search was re-enqueued {max_requeues} times already, "
                    "so it is not retried again"
                )
                _end_lapsed(session, search, SearchState.FAILED, reason, now)
            else:
                search.state = SearchState.QUEUED
                search.lease_owner = None
                search.lease_expires_at = None
                search.child_pid = None
                search.enqueued_at = None
                logger.warning(
                    "Re-enqueuing search %s after attempt %d: %s", search.id, search.attempts, lost
                )
                to_send.append(search.id)
        unsent = session.scalars(
            select(Search.id).where(
                and_(Search.state == SearchState.QUEUED, Search.enqueued_at.is_(None)),
                Search.created_at < now - timedelta(seconds=2),
            )
        ).all()
        to_send.extend(search_id for search_id in unsent if search_id not in to_send)
    return to_send


def _end_lapsed(
    session: Session, search: Search, state: SearchState, error: str | None, now: datetime
) -> None:
    search.state = state
    search.error = error
    search.finished_at = now
    search.lease_owner = None
    search.lease_expires_at = None
    search.child_pid = None
    logger.warning("Search %s ended %s after its lease lapsed: %s", search.id, state, error)
