"""Pydantic models of the API's request and response bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.models import Search, SearchState, utcnow


class SearchPublic(BaseModel):
    """A search as the API shows it."""

    id: str
    name: str
    state: SearchState
    dataset: str
    config: dict[str, Any]
    progress: float
    epoch: int | None
    epochs: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None = Field(description="Training time so far, in seconds.")
    eta_seconds: float | None = Field(description="Estimated seconds left, from the progress.")
    error: str | None
    baseline: int
    reference_id: str | None
    best_test_accuracy: float | None = Field(description="Best test accuracy so far, percent.")
    test_accuracy: float | None = Field(description="Latest or final test accuracy, percent.")
    params: int | None
    compression: float | None
    budget: int | None = Field(description="Training-memory budget in bytes.")
    attempts: int
    worker: str | None
    cancel_requested: bool


class SearchList(BaseModel):
    items: list[SearchPublic]
    total: int


class BaselineCreate(BaseModel):
    level: Literal[1, 2] = Field(description="1 or 2: which random-search baseline to run.")


class Page(BaseModel):
    items: list[dict[str, Any]]
    total: int


class PrunerPage(BaseModel):
    epoch: int | None
    items: list[dict[str, Any]]
    total: int


class Compare(BaseModel):
    search: SearchPublic
    baselines: list[SearchPublic]


class LoginRequest(BaseModel):
    token: str


class SessionInfo(BaseModel):
    auth_required: bool
    authenticated: bool


class Health(BaseModel):
    status: str
    database: str
    broker: str
    event_streams: int


def _aware(value: datetime | None) -> datetime | None:
    """Attach UTC to datetimes that SQLite returns without a zone."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def search_public(search: Search) -> SearchPublic:
    started_at = _aware(search.started_at)
    finished_at = _aware(search.finished_at)
    elapsed = search.elapsed_seconds
    if elapsed is None and started_at is not None:
        elapsed = ((finished_at or utcnow()) - started_at).total_seconds()
    eta = None
    if search.state == SearchState.RUNNING and elapsed and 0 < search.progress < 1:
        eta = elapsed * (1 - search.progress) / search.progress
    return SearchPublic(
        id=search.id,
        name=search.name,
        state=SearchState(search.state),
        dataset=search.dataset,
        config=search.config,
        progress=search.progress,
        epoch=search.epoch,
        epochs=search.epochs,
        created_at=_aware(search.created_at) or utcnow(),
        started_at=started_at,
        finished_at=finished_at,
        elapsed_seconds=elapsed,
        eta_seconds=eta,
        error=search.error,
        baseline=search.baseline,
        reference_id=search.reference_id,
        best_test_accuracy=search.best_test_accuracy,
        test_accuracy=search.test_accuracy,
        params=search.params,
        compression=search.compression,
        budget=search.budget,
        attempts=search.attempts,
        worker=search.worker,
        cancel_requested=search.cancel_requested_at is not None,
    )
