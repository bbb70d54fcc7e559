"""Settings validation and the start-up checks of `serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.settings import Settings, is_loopback

from .helpers import REPO_ROOT


def test_settings_defaults(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'bonsai.db'}"
    assert settings.resolved_artifact_url == str(tmp_path / "artifacts")
    assert settings.resolved_data_dir == tmp_path / "data"
    assert settings.runs_embedded_worker is True


def test_settings_production_runs_no_worker(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        database_url="postgresql+psycopg://u@db/bonsai",
        broker_url="redis://redis:6379/0",
    )
    assert settings.runs_embedded_worker is False


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BONSAI_HOME", str(tmp_path))
    monkeypatch.setenv("BONSAI_DATA_ROOTS", "/srv/a:/srv/b")
    monkeypatch.setenv("BONSAI_MAX_EPOCHS", "7")
    settings = Settings()
    assert settings.home == tmp_path
    assert settings.data_roots == [Path("/srv/a"), Path("/srv/b")]
    assert settings.max_epochs == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database_url", "mysql://db/bonsai"),
        ("broker_url", "sqs://queue"),
        ("artifact_url", "ftp://host/dir"),
        ("heartbeat_seconds", 20.0),
        ("port", 0),
        ("flush_interval_seconds", 2.0),
    ],
)
def test_settings_invalid_value_rejected(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(home=tmp_path, **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_is_loopback_true(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.4", "::", "example.org"])
def test_is_loopback_false(host: str) -> None:
    assert not is_loopback(host)


def test_check_bind_needs_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BONSAI_TOKEN"):
        Settings(home=tmp_path).check_bind("0.0.0.0")
    Settings(home=tmp_path, token="secret").check_bind("0.0.0.0")  # type: ignore[arg-type]


def test_serve_public_host_without_token_exits(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BONSAI_")}
    env.update(BONSAI_HOME=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "BONSAI_TOKEN" in result.stderr
    assert not (tmp_path / "bonsai.db").exists()
