"""docker-compose.yml describes the API, a GPU worker, PostgreSQL and Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) or `docker-compose` (v1), whichever is installed."""
    if shutil.which("docker") is not None:
        result = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if result.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def test_compose_has_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"api", "worker", "postgres", "redis"}


def test_compose_worker_reserves_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_compose_api_binds_loopback(compose: dict[str, Any]) -> None:
    assert compose["services"]["api"]["ports"] == ["127.0.0.1:8000:8000"]


def test_compose_services_share_database(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]["environment"]
    worker = compose["services"]["worker"]["environment"]
    assert api["BONSAI_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert api == worker


def test_dockerfile_copies_runtime_files() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for path in ("bonsai", "backend", "worker", "alembic", "alembic.ini", "frontend"):
        assert f"COPY {path} " in dockerfile


def test_docker_compose_config_valid(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("neither docker compose nor docker-compose is installed")
        pytest.skip("neither docker compose nor docker-compose is installed")
    env = {**os.environ, "BONSAI_TOKEN": "compose-test-token"}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
