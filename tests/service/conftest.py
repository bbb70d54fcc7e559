"""Fixtures of the service tests: real API servers and Celery workers on each database back end.

SQLite with the filesystem broker always runs (`bonsai serve` with its embedded worker).
PostgreSQL with Redis runs when BONSAI_TEST_DATABASE_URL and BONSAI_TEST_BROKER_URL are set,
as `serve` plus a separate worker with artifacts in a local S3 server. It then fails, never
skips, when either server cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .databases import backend_names, empty_database
from .helpers import (
    BROKER_URL_VAR,
    DATABASE_URL_VAR,
    S3_BUCKET,
    Stack,
    backends,
    base_env,
    create_search,
    drop_postgres_database,
    free_port,
    postgres_database,
    wait_state,
)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with an empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in credentials}
    os.environ.update(credentials)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", params=backends())
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """`serve` and a worker on SQLite + filesystem broker, or PostgreSQL + Redis + S3."""
    name = str(request.param)
    home = tmp_path_factory.mktemp(f"home-{name}")
    env = base_env(home)
    base_url = f"http://127.0.0.1:{free_port()}"
    pg_name = f"bonsai_test_{uuid.uuid4().hex[:12]}"
    if name == "sqlite":
        database_url = f"sqlite:///{home / 'bonsai.db'}"
        stack = Stack(name, home, env, base_url, database_url, separate_worker=False)
    else:
        admin_url = os.environ[DATABASE_URL_VAR]
        database_url = postgres_database(admin_url, pg_name).render_as_string(hide_password=False)
        endpoint = request.getfixturevalue("s3_endpoint")
        env.update(
            {
                "BONSAI_DATABASE_URL": database_url,
                "BONSAI_BROKER_URL": os.environ[BROKER_URL_VAR],
                "BONSAI_ARTIFACT_URL": f"s3://{S3_BUCKET}/{pg_name}",
                "BONSAI_S3_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        stack = Stack(name, home, env, base_url, database_url, separate_worker=True)
    env["BONSAI_DATABASE_URL"] = database_url
    try:
        stack.start_server()
        if stack.separate_worker:
            stack.start_worker()
        stack.wait_healthy()
        yield stack
    finally:
        stack.stop()
        if name == "postgres":
            drop_postgres_database(os.environ[DATABASE_URL_VAR], pg_name)


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def finished_search(stack: Stack, client: httpx.Client) -> dict[str, Any]:
    """One tiny search on digits, run to the end; several tests read what it left."""
    search = create_search(client, name="finished", dataset="digits")
    return wait_state(client, search["id"], {"succeeded", "failed", "cancelled"})


@pytest.fixture(params=backend_names())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, on SQLite and (when configured) PostgreSQL."""
    yield from empty_database(str(request.param), tmp_path)
