"""Pieces the service benchmarks share: the row they return and scratch databases."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend.db import Database
from backend.migrate import upgrade
from backend.models import Search, SearchState


class BenchmarkRow(TypedDict):
    """One measured figure against its target, as `bonsai bench` prints it."""

    target: str
    value: float | None
    unit: str
    threshold: float
    passed: bool
    detail: str


def make_row(
    target: str,
    value: float | None,
    unit: str,
    threshold: float,
    passed: bool,
    detail: str,
) -> BenchmarkRow:
    return BenchmarkRow(
        target=target,
        value=None if value is None else round(value, 4),
        unit=unit,
        threshold=threshold,
        passed=passed,
        detail=detail,
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values`, where `fraction` 0.95 is the 95th."""
    if not values:
        raise ValueError("percentile needs at least one value, got none")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@contextmanager
def scratch_database(admin_url: str | None, directory: Path) -> Iterator[str]:
    """Yield the URL of a new migrated database and drop it afterwards.

    Without `admin_url` the database is a SQLite file in `directory`. With a PostgreSQL URL,
    a database named `bonsai_bench_<random>` is created on that server and dropped with
    `WITH (FORCE)`, so connections left open do not keep it.
    """
    if admin_url is None:
        url = f"sqlite:///{directory / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        upgrade(url)
        yield url
        return
    name = f"bonsai_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
            upgrade(url)
            yield url
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def add_search(
    db: Database,
    config: dict[str, Any],
    epochs: int,
    state: SearchState = SearchState.QUEUED,
) -> str:
    """Insert a search row as `POST /api/searches` would, and return its id."""
    search_id = uuid.uuid4().hex
    with db.write() as session:
        session.add(
            Search(
                id=search_id,
                name="benchmark",
                dataset=str(config.get("dataset", "digits")),
                config=config,
                state=state,
                epochs=epochs,
                attempts=0,
                progress=0.0,
                baseline=0,
            )
        )
    return search_id
