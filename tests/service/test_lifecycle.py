"""State transitions, leases and the reaper, on every database back end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend import lifecycle
from backend.db import Database
from backend.migrate import upgrade
from backend.models import Search, SearchState, utcnow
from backend.reaper import reap_once
from backend.settings import Settings
from worker.celery_app import TaskQueue

MAX_REQUEUES = 3


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


def add_search(db: Database, state: SearchState = SearchState.QUEUED, **fields: object) -> str:
    search_id = uuid.uuid4().hex
    with db.write() as session:
        session.add(
            Search(
                id=search_id,
                name="",
                dataset="digits",
                config={"preset": "tiny"},
                state=state,
                epochs=3,
                attempts=0,
                progress=0.0,
                baseline=0,
                **{"enqueued_at": utcnow(), **fields},
            )
        )
    return search_id


def read(db: Database, search_id: str) -> Search:
    with db.read() as session:
        return session.get_one(Search, search_id)


def lapse(db: Database, search_id: str) -> None:
    with db.write() as session:
        search = session.get_one(Search, search_id)
        search.lease_expires_at = utcnow() - timedelta(seconds=1)


def test_claim_takes_queued_search(db: Database) -> None:
    search_id = add_search(db)
    claim = lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    assert claim == lifecycle.Claim(attempt=1, resume=False)
    search = read(db, search_id)
    assert search.state == SearchState.RUNNING
    assert search.lease_owner == "owner-a"


def test_claim_duplicate_returns_none(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    assert lifecycle.claim(db, search_id, "owner-b", "host:2", 30) is None
    assert read(db, search_id).attempts == 1


def test_claim_cancelled_search_returns_none(db: Database) -> None:
    search_id = add_search(db, SearchState.CANCELLED)
    assert lifecycle.claim(db, search_id, "owner-a", "host:1", 30) is None


def test_heartbeat_of_other_owner_fails(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    assert lifecycle.heartbeat(db, search_id, "owner-a", 30) is True
    assert lifecycle.heartbeat(db, search_id, "owner-b", 30) is False


def test_finish_by_lost_owner_fails(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    assert lifecycle.finish(db, search_id, "owner-b", SearchState.SUCCEEDED) is False
    assert lifecycle.finish(db, search_id, "owner-a", SearchState.SUCCEEDED) is True
    search = read(db, search_id)
    assert search.state == SearchState.SUCCEEDED
    assert search.lease_owner is None


def test_reap_requeues_lapsed_lease(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    lapse(db, search_id)
    assert lifecycle.reap(db, MAX_REQUEUES) == [search_id]
    search = read(db, search_id)
    assert search.state == SearchState.QUEUED
    assert search.lease_owner is None


def test_reap_leaves_live_lease(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    assert lifecycle.reap(db, MAX_REQUEUES) == []
    assert read(db, search_id).state == SearchState.RUNNING


def test_reap_resumes_on_next_claim(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    with db.write() as session:
        session.get_one(Search, search_id).last_seq = 10
    lapse(db, search_id)
    lifecycle.reap(db, MAX_REQUEUES)
    claim = lifecycle.claim(db, search_id, "owner-b", "host:2", 30)
    assert claim == lifecycle.Claim(attempt=2, resume=True)


def test_release_requeues_without_attempt(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    assert lifecycle.release(db, search_id, "owner-b") is False
    assert lifecycle.release(db, search_id, "owner-a") is True
    search = read(db, search_id)
    assert search.state == SearchState.QUEUED
    assert search.attempts == 0
    assert search.enqueued_at is None


def test_reap_fails_after_max_requeues(db: Database) -> None:
    search_id = add_search(db)
    for attempt in range(MAX_REQUEUES + 1):
        assert lifecycle.claim(db, search_id, f"owner-{attempt}", "host:1", 30) is not None
        lapse(db, search_id)
        lifecycle.reap(db, MAX_REQUEUES)
    search = read(db, search_id)
    assert search.state == SearchState.FAILED
    assert search.attempts == MAX_REQUEUES + 1
    assert search.error is not None
    assert "re-enqueued 3 times" in search.error
    assert "host:1" in search.error


def test_reap_cancels_lapsed_cancel(db: Database) -> None:
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    with db.write() as session:
        session.get_one(Search, search_id).cancel_requested_at = utcnow()
    lapse(db, search_id)
    assert lifecycle.reap(db, MAX_REQUEUES) == []
    assert read(db, search_id).state == SearchState.CANCELLED


def test_reap_returns_unsent_queued_search(db: Database) -> None:
    search_id = add_search(db, enqueued_at=None)
    with db.write() as session:
        session.get_one(Search, search_id).created_at = utcnow() - timedelta(seconds=10)
    assert lifecycle.reap(db, MAX_REQUEUES) == [search_id]


def test_reap_once_sends_task(db: Database, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, queue="reaper-test")
    queue = TaskQueue(settings)
    search_id = add_search(db)
    lifecycle.claim(db, search_id, "owner-a", "host:1", 30)
    lapse(db, search_id)
    try:
        assert reap_once(db, queue, MAX_REQUEUES) == [search_id]
    finally:
        queue.close()
    messages = list((settings.broker_dir / "messages").iterdir())
    assert len(messages) == 1
    assert search_id in messages[0].read_text()
    assert read(db, search_id).enqueued_at is not None
