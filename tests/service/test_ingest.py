"""Storing engine events: derived rows, superseding after a resume, a dead worker's log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from backend import lifecycle
from backend.db import Database
from backend.ingest import finite, store_events, supersede_from
from backend.migrate import upgrade
from backend.models import Deadhead, EpochMetric, Event, PrunerSnapshot, Search, Section
from backend.settings import Settings
from backend.storage import create_store
from worker.job import SearchJob


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


def add_search(db: Database) -> str:
    search_id = uuid.uuid4().hex
    with db.write() as session:
        session.add(
            Search(
                id=search_id,
                name="",
                dataset="digits",
                config={},
                state="running",
                epochs=4,
                attempts=1,
                progress=0.0,
                baseline=0,
            )
        )
    return search_id


def epoch_events(start_seq: int, epoch: int) -> list[dict[str, Any]]:
    """One epoch's events: a batch, a snapshot, a deadheading and its end."""
    return [
        {"seq": start_seq, "type": "batch", "time": 1.0, "epoch": epoch, "data": {"loss": 1.0}},
        {
            "seq": start_seq + 1,
            "type": "pruner_snapshot",
            "time": 1.0,
            "epoch": epoch,
            "data": {"pruners": [["c0.e0_2.identity", 0.5, 1], ["c0.e1_2.sep_conv_3x3", 0.1, 0]]},
        },
        {
            "seq": start_seq + 2,
            "type": "deadheaded",
            "time": 1.0,
            "epoch": epoch,
            "data": {
                "pruner_ids": ["c0.e1_2.sep_conv_3x3"],
                "removed_nodes": [],
                "reason": "gate_off",
            },
        },
        {
            "seq": start_seq + 3,
            "type": "epoch_end",
            "time": 1.0,
            "epoch": epoch,
            "data": {"test_accuracy": 50.0 + epoch, "params": 100, "compression": [0.5, 0.7]},
        },
    ]


def store(db: Database, search_id: str, attempt: int, events: list[dict[str, Any]]) -> None:
    with db.write() as session:
        search = session.get_one(Search, search_id)
        supersede_from(session, search_id, events[0]["seq"])
        store_events(session, search, attempt, events)


def current_seqs(db: Database, table: Any, search_id: str) -> list[int]:
    with db.read() as session:
        return list(
            session.scalars(
                select(table.seq)
                .where(table.search_id == search_id, table.superseded.is_(False))
                .order_by(table.seq)
            ).all()
        )


def test_store_events_derives_rows(db: Database) -> None:
    search_id = add_search(db)
    section = {
        "seq": 0,
        "type": "section_added",
        "time": 1.0,
        "epoch": 0,
        "data": {"section": 0, "cells": [{"type": "normal", "pruners": []}], "start_epoch": 0},
    }
    store(db, search_id, 1, [section, *epoch_events(1, 0)])
    assert current_seqs(db, Section, search_id) == [0]
    assert current_seqs(db, PrunerSnapshot, search_id) == [2]
    assert current_seqs(db, Deadhead, search_id) == [3]
    assert current_seqs(db, EpochMetric, search_id) == [4]
    with db.read() as session:
        search = session.get_one(Search, search_id)
        snapshot = session.scalars(select(PrunerSnapshot)).first()
    assert search.progress == pytest.approx(0.25)
    assert search.best_test_accuracy == 50.0
    assert search.compression == pytest.approx(0.6)
    assert search.last_seq == 4
    assert snapshot is not None
    assert snapshot.gates == "10"


def test_resume_supersedes_later_events(db: Database) -> None:
    search_id = add_search(db)
    # Attempt 1 finished epochs 0 and 1 (seq 0..7), and its state.pt contains epoch 0 only.
    store(db, search_id, 1, epoch_events(0, 0) + epoch_events(4, 1))
    # Attempt 2 resumes after epoch 0 and emits from seq 4 again.
    store(db, search_id, 2, epoch_events(4, 1) + epoch_events(8, 2))
    for table in (Event, EpochMetric, PrunerSnapshot, Deadhead):
        seqs = current_seqs(db, table, search_id)
        assert len(seqs) == len(set(seqs)), table.__name__
    assert current_seqs(db, Event, search_id) == list(range(12))
    with db.read() as session:
        attempts = session.scalars(
            select(Event.attempt).where(
                Event.search_id == search_id, Event.superseded.is_(False), Event.seq >= 4
            )
        ).all()
        superseded = session.scalars(
            select(Event.seq).where(Event.search_id == search_id, Event.superseded.is_(True))
        ).all()
    assert set(attempts) == {2}
    assert sorted(superseded) == [4, 5, 6, 7]


def test_finite_replaces_nan_and_infinity() -> None:
    value = finite({"a": float("nan"), "b": [1.0, float("-inf")], "c": (float("inf"),)})
    assert value == {"a": None, "b": [1.0, None], "c": [None]}


def _resuming_job(db: Database, search_id: str, tmp_path: Path, log_lines: list[str]) -> SearchJob:
    """Build a second attempt's job, whose work directory has a state.pt and `log_lines`."""
    settings = Settings(home=tmp_path, database_url=db.url)
    workdir = settings.resolved_work_dir / search_id
    workdir.mkdir(parents=True)
    (workdir / "state.pt").write_bytes(b"a checkpoint; prepare() only checks that it exists")
    (workdir / "events.jsonl").write_text("".join(log_lines), encoding="utf-8")
    store = create_store(str(tmp_path / "artifacts"))
    claim = lifecycle.Claim(attempt=2, resume=True)
    return SearchJob(settings, db, store, search_id, "test-owner", claim, {})


def _lines(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(event) + "\n" for event in events]


def test_resume_stores_events_a_dead_worker_lost(db: Database, tmp_path: Path) -> None:
    """The first worker stored epoch 0 and died. Its search process had logged more.

    The log ends in a line cut short, as a killed process leaves it.
    """
    search_id = add_search(db)
    store(db, search_id, 1, epoch_events(0, 0))
    logged = epoch_events(0, 0) + epoch_events(4, 1) + epoch_events(8, 2)[:2]
    job = _resuming_job(db, search_id, tmp_path, [*_lines(logged), '{"seq": 10, "ty'])
    job.prepare()
    assert job.resume
    assert current_seqs(db, Event, search_id) == list(range(10))
    with db.read() as session:
        attempts = session.scalars(
            select(Event.attempt).where(Event.search_id == search_id, Event.seq >= 4)
        ).all()
    assert set(attempts) == {1}
    # The resumed run starts again at its checkpoint, seq 8, and supersedes what follows.
    job._write_events(epoch_events(8, 2))
    assert current_seqs(db, Event, search_id) == list(range(12))
    with db.read() as session:
        search = session.get_one(Search, search_id)
        resumed = session.scalars(
            select(Event.attempt).where(
                Event.search_id == search_id, Event.superseded.is_(False), Event.seq >= 8
            )
        ).all()
    assert set(resumed) == {2}
    assert search.last_seq == 11


def test_resume_stops_storing_at_log_gap(db: Database, tmp_path: Path) -> None:
    search_id = add_search(db)
    store(db, search_id, 1, epoch_events(0, 0))
    logged = epoch_events(0, 0) + epoch_events(4, 1)[:2] + epoch_events(8, 2)
    _resuming_job(db, search_id, tmp_path, _lines(logged)).prepare()
    assert current_seqs(db, Event, search_id) == list(range(6))
