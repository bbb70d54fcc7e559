"""Fresh empty databases on every back end, for tests that need one of their own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .helpers import DATABASE_URL_VAR, drop_postgres_database, postgres_database


def backend_names() -> list[str]:
    return ["sqlite", "postgres"] if os.environ.get(DATABASE_URL_VAR) else ["sqlite"]


def empty_database(backend: str, directory: Path) -> Iterator[str]:
    """Yield the URL of a new empty database and drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
        return
    admin_url = os.environ[DATABASE_URL_VAR]
    name = f"bonsai_test_{uuid.uuid4().hex[:12]}"
    url = postgres_database(admin_url, name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, name)
