"""Shared fixtures: one real tiny search that many tests read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import bonsai


@dataclass
class FinishedSearch:
    config: bonsai.SearchConfig
    result: bonsai.SearchResult
    events: list[dict[str, Any]]
    workdir: Path

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]


@pytest.fixture(scope="session")
def tiny_search(tmp_path_factory: pytest.TempPathFactory) -> FinishedSearch:
    """A whole `tiny` search on digits, on the CPU."""
    workdir = tmp_path_factory.mktemp("tiny-search")
    config = bonsai.make_config("tiny", device="cpu", seed=3)
    events: list[dict[str, Any]] = []
    result = bonsai.run_search(config, on_event=events.append, workdir=workdir)
    assert result.state == "succeeded", result.error
    return FinishedSearch(config, result, events, workdir)
