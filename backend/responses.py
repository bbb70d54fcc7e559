"""Strict JSON: every response body is standard JSON, with no NaN or Infinity."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

from backend.ingest import finite


def dumps(content: Any) -> str:
    """Serialize `content` as JSON, with non-finite floats as null."""
    return json.dumps(finite(content), allow_nan=False, separators=(",", ":"), ensure_ascii=False)


class StrictJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")
