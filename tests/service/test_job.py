"""Worker plumbing that needs no search: database retries and the child's function lookup."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import OperationalError

from worker.child import resolve_function
from worker.job import retry_db


def flaky(failures: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        if len(calls) <= failures:
            # A dropped connection, which a real server cannot be made to do on cue here.
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "stored"

    return calls, action


def test_retry_db_retries_until_success() -> None:
    calls, action = flaky(2)
    assert retry_db(action, "testing") == "stored"  # type: ignore[arg-type]
    assert len(calls) == 3


def test_retry_db_gives_up_at_deadline() -> None:
    calls, action = flaky(100)
    with pytest.raises(OperationalError):
        retry_db(action, "testing", deadline=time.monotonic() + 0.5)  # type: ignore[arg-type]
    assert 1 < len(calls) < 100


@pytest.mark.parametrize("path", ["bonsai.run_search", "bonsai:run_search"])
def test_resolve_function_both_spellings(path: str) -> None:
    import bonsai

    assert resolve_function(path) is bonsai.run_search
