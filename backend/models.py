"""SQLAlchemy models of searches and of what their events leave behind.

Every row derived from an event keeps the event's `seq` and a `superseded` flag: when a
search resumes from a checkpoint, the rows past that checkpoint are marked superseded
instead of deleted, and every query reads only the others.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SearchState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({SearchState.SUCCEEDED, SearchState.FAILED, SearchState.CANCELLED})


class ArtifactKind(enum.StrEnum):
    """Files a search stores; the value is also the file's name in the work directory."""

    GENOTYPE = "genotype.json"
    CHECKPOINT = "checkpoint.pt"
    STATE = "state.pt"
    EVENTS = "events.jsonl"


class Search(Base):
    __tablename__ = "searches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    dataset: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default=SearchState.QUEUED, index=True)
    baseline: Mapped[int] = mapped_column(Integer, default=0)
    reference_id: Mapped[str | None] = mapped_column(
        ForeignKey("searches.id", ondelete="SET NULL"), index=True
    )

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Progress, kept current from the events.
    epoch: Mapped[int | None] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    elapsed_seconds: Mapped[float | None] = mapped_column(Float)
    last_seq: Mapped[int | None] = mapped_column(Integer)
    budget: Mapped[int | None] = mapped_column(BigInteger)
    targets: Mapped[list[Any] | None]
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    best_test_accuracy: Mapped[float | None] = mapped_column(Float)
    params: Mapped[int | None] = mapped_column(BigInteger)
    compression: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)

    # Execution: which worker holds the search and until when.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    child_pid: Mapped[int | None] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """Every raw engine event, for replay over Server-Sent Events."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_search_seq", "search_id", "superseded", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    type: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]]


class Section(Base):
    __tablename__ = "sections"
    __table_args__ = (Index("ix_sections_search_seq", "search_id", "superseded", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    section: Mapped[int] = mapped_column(Integer)
    start_epoch: Mapped[int | None] = mapped_column(Integer)
    types: Mapped[list[Any]]
    cells: Mapped[list[Any]]


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (Index("ix_epoch_metrics_search_seq", "search_id", "superseded", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    epoch: Mapped[int] = mapped_column(Integer)
    section: Mapped[int | None] = mapped_column(Integer)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    test_loss: Mapped[float | None] = mapped_column(Float)
    params: Mapped[int | None] = mapped_column(BigInteger)
    memory_measured: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]]


class PrunerSnapshot(Base):
    """Every live pruner's weight and gate at one moment, as three parallel lists."""

    __tablename__ = "pruner_snapshots"
    __table_args__ = (Index("ix_pruner_snapshots_search_seq", "search_id", "superseded", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    epoch: Mapped[int | None] = mapped_column(Integer)
    pruner_ids: Mapped[list[Any]]
    weights: Mapped[list[Any]]
    # One character per pruner, "1" for an open gate and "0" for a closed one.
    gates: Mapped[str] = mapped_column(Text)


class Deadhead(Base):
    __tablename__ = "deadheads"
    __table_args__ = (Index("ix_deadheads_search_seq", "search_id", "superseded", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    epoch: Mapped[int | None] = mapped_column(Integer)
    pruner_ids: Mapped[list[Any]]
    removed_nodes: Mapped[list[Any]]
    reason: Mapped[str | None] = mapped_column(String(32))


class Artifact(Base):
    """A stored file of a search; downloads find it by search id and kind, never by path."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("search_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(
        ForeignKey("searches.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


EVENT_TABLES: tuple[type[Event | Section | EpochMetric | PrunerSnapshot | Deadhead], ...] = (
    Event,
    Section,
    EpochMetric,
    PrunerSnapshot,
    Deadhead,
)
