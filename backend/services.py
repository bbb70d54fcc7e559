"""Shared services of every request: settings, database, artifact store and task queue."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from backend.db import Database
from backend.models import Search
from backend.settings import Settings
from backend.storage import ArtifactStore
from worker.celery_app import TaskQueue

SEARCH_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ArtifactStore
    queue: TaskQueue
    open_streams: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stream_opened(self) -> None:
        with self.lock:
            self.open_streams += 1

    def stream_closed(self) -> None:
        with self.lock:
            self.open_streams -= 1


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_search_or_404(session: Session, search_id: str) -> Search:
    """Load a search by id; anything that is not a known id, path tricks included, is 404."""
    search = session.get(Search, search_id) if SEARCH_ID.match(search_id) else None
    if search is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"search {search_id!r} not found")
    return search
