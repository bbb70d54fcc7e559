"""The service's only door into `bonsai`: config validation, memory estimates and data sets.

The engine is imported lazily, so the API starts (and reports the problem) without it.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from fastapi import HTTPException, status

from backend.settings import Settings

logger = logging.getLogger(__name__)


class InvalidConfig(ValueError):
    """An invalid config; `errors` lists (field, message) for every invalid field."""

    def __init__(
        self, field: str, message: str, errors: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.errors = errors or [(field, message)]


def _bonsai() -> Any:
    try:
        bonsai = importlib.import_module("bonsai")
    except ImportError as error:
        logger.error("The bonsai engine cannot be imported: %s", error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the bonsai engine is not installed: {error}"
        ) from error
    return bonsai


def validate_config(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate a request's config with the engine and the server's limits.

    Returns the engine's `to_dict()` of it, with `data_dir` resolved; raises InvalidConfig.
    """
    bonsai = _bonsai()
    # `reference` stays the search id here; the worker replaces it with a local directory
    # holding that search's genotype.json before the engine reads it.
    fields = dict(body)
    if fields.get("data_dir") is not None:
        fields["data_dir"] = str(_allowed_data_dir(fields["data_dir"], settings))
    try:
        config = bonsai.SearchConfig.from_dict(fields)
    except bonsai.ConfigError as error:
        errors = [(str(f), str(m)) for f, m in getattr(error, "errors", [])]
        raise InvalidConfig(str(error.field), str(error.message), errors) from error
    result: dict[str, Any] = config.to_dict()
    limits = {
        "epochs": settings.max_epochs,
        "channels": settings.max_channels,
        "nodes": settings.max_nodes,
        "batch_size": settings.max_batch_size,
    }
    for name, limit in limits.items():
        value = result.get(name)
        if isinstance(value, int) and value > limit:
            raise InvalidConfig(name, f"{value} exceeds this server's limit of {limit}")
    # With the filesystem broker every worker runs on this machine and reads the same data
    # directory, so a data set missing here would fail the search as soon as it started.
    # Workers on other machines (a network broker) may hold data sets this server lacks.
    if settings.uses_filesystem_broker and not result.get("download"):
        _check_dataset_present(result, settings)
    return result


def _check_dataset_present(config: dict[str, Any], settings: Settings) -> None:
    data_dir = config.get("data_dir") or str(settings.resolved_data_dir)
    for entry in _bonsai().available_datasets(data_dir):
        if entry["name"] == config.get("dataset") and not entry["available"]:
            raise InvalidConfig("dataset", str(entry["message"]))


def _allowed_data_dir(value: Any, settings: Settings) -> Path:
    if not isinstance(value, str) or not value:
        raise InvalidConfig("data_dir", "must be a directory path")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = settings.resolved_data_dir / path
    path = path.resolve()
    roots = settings.allowed_data_roots
    if not any(path.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise InvalidConfig("data_dir", f"{value!r} is outside the allowed data roots ({allowed})")
    return path


def estimate_memory(config: dict[str, Any]) -> dict[str, Any]:
    bonsai = _bonsai()
    result: dict[str, Any] = bonsai.estimate_memory(bonsai.SearchConfig.from_dict(config))
    return result


def available_datasets(settings: Settings) -> list[dict[str, Any]]:
    datasets: list[dict[str, Any]] = _bonsai().available_datasets(str(settings.resolved_data_dir))
    return datasets


def config_fields() -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = _bonsai().config_fields()
    return fields
