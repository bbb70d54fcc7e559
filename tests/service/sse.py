"""A small Server-Sent Events reader for the tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Message:
    id: int | None
    event: str
    data: Any
    received_at: float


def read_messages(response: httpx.Response) -> Iterator[Message]:
    """Yield each message of an open streaming response as it arrives."""
    import time

    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield Message(
                    id=int(fields["id"]) if "id" in fields else None,
                    event=fields.get("event", "message"),
                    data=json.loads(fields["data"]),
                    received_at=time.time(),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
