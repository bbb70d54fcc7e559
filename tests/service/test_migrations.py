"""Alembic migrations from an empty database, up and down, and their match with the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from backend.migrate import downgrade, upgrade
from backend.models import Base

TABLES = {
    "searches",
    "events",
    "sections",
    "epoch_metrics",
    "pruner_snapshots",
    "deadheads",
    "artifacts",
}


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_tables(database_url: str) -> None:
    upgrade(database_url)
    assert TABLES <= table_names(database_url)


def test_downgrade_drops_tables(database_url: str) -> None:
    upgrade(database_url)
    downgrade(database_url)
    assert table_names(database_url) & TABLES == set()


def test_upgrade_after_downgrade(database_url: str) -> None:
    upgrade(database_url)
    downgrade(database_url)
    upgrade(database_url)
    assert TABLES <= table_names(database_url)


def test_migrations_match_models(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
