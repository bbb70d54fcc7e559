"""Searches: create, list, read, cancel, delete, baselines and artifact downloads."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import func, select

from backend import lifecycle
from backend.engine import InvalidConfig, validate_config
from backend.models import TERMINAL_STATES, Artifact, ArtifactKind, Search, SearchState
from backend.schemas import BaselineCreate, Compare, SearchList, SearchPublic, search_public
from backend.services import Services, ServicesDep, get_search_or_404
from backend.storage import ArtifactNotFound

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/searches", tags=["searches"])

ConfigBody = Annotated[
    dict[str, Any],
    Body(
        description="Search config fields, named and defaulted as in `bonsai.SearchConfig` "
        "(see `GET /api/config/fields`); `reference` is the id of a finished search.",
        examples=[{"preset": "tiny", "dataset": "digits", "name": "first search"}],
    ),
]


def invalid(error: InvalidConfig) -> HTTPException:
    """Build a 422 shaped like FastAPI's own validation errors, one entry per invalid field."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [
            {"loc": ["body", field], "msg": message, "type": "value_error"}
            for field, message in error.errors
        ],
    )


def _create(services: Services, body: dict[str, Any], reference_id: str | None) -> SearchPublic:
    try:
        config = validate_config(body, services.settings)
    except InvalidConfig as error:
        raise invalid(error) from error
    with services.db.write() as session:
        active = session.scalar(
            select(func.count())
            .select_from(Search)
            .where(Search.state.in_([SearchState.QUEUED, SearchState.RUNNING]))
        )
        if (active or 0) >= services.settings.max_active_searches:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"{active} searches are queued or running, the limit of this server; "
                "wait for one to finish or cancel one",
            )
        if reference_id is not None:
            reference = session.get(Search, reference_id)
            if reference is None or reference.state != SearchState.SUCCEEDED:
                raise invalid(
                    InvalidConfig("reference", f"{reference_id!r} is not a succeeded search")
                )
        search = Search(
            id=uuid.uuid4().hex,
            name=str(config.get("name") or ""),
            dataset=str(config.get("dataset") or ""),
            config=config,
            state=SearchState.QUEUED,
            epochs=int(config.get("epochs") or 1),
            baseline=int(config.get("baseline") or 0),
            reference_id=reference_id,
            attempts=0,
            progress=0.0,
        )
        session.add(search)
    try:
        services.queue.send(search.id)
    except Exception:
        # The reaper sends the task again once the broker is reachable.
        logger.exception("Sending the task of search %s failed; it stays queued", search.id)
    else:
        lifecycle.mark_enqueued(services.db, search.id)
    logger.info("Search %s queued (%s)", search.id, search.dataset)
    with services.db.read() as session:
        return search_public(session.get_one(Search, search.id))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_search(services: ServicesDep, body: ConfigBody) -> SearchPublic:
    """Validate a config and queue a search for it."""
    reference = body.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise invalid(InvalidConfig("reference", "must be the id of a succeeded search"))
    return _create(services, body, reference)


@router.get("")
def list_searches(
    services: ServicesDep,
    state: SearchState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SearchList:
    """List searches, newest first."""
    query = select(Search)
    if state is not None:
        query = query.where(Search.state == state)
    with services.db.read() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(Search.created_at.desc()).limit(limit).offset(offset)
        ).all()
        return SearchList(items=[search_public(row) for row in rows], total=total)


@router.get("/{search_id}")
def read_search(services: ServicesDep, search_id: str) -> SearchPublic:
    """Return one search."""
    with services.db.read() as session:
        return search_public(get_search_or_404(session, search_id))


@router.post("/{search_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
def cancel_search(services: ServicesDep, search_id: str) -> SearchPublic:
    """Cancel a queued search, or ask a running one to stop."""
    with services.db.write() as session:
        search = get_search_or_404(session, search_id)
        try:
            lifecycle.request_cancel(session, search)
        except lifecycle.TransitionError as error:
            raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    with services.db.read() as session:
        return search_public(session.get_one(Search, search_id))


@router.delete("/{search_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_search(services: ServicesDep, search_id: str) -> Response:
    """Delete a finished search with its events and artifacts."""
    with services.db.write() as session:
        search = get_search_or_404(session, search_id)
        if search.state not in TERMINAL_STATES:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"search {search_id} is {search.state}; cancel it and wait for it to end first",
            )
        session.delete(search)
    services.store.delete_prefix(f"searches/{search_id}")
    logger.info("Search %s deleted", search_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{search_id}/baselines", status_code=status.HTTP_201_CREATED)
def create_baseline(services: ServicesDep, search_id: str, body: BaselineCreate) -> SearchPublic:
    """Queue a random-search baseline that matches a succeeded search."""
    with services.db.read() as session:
        search = get_search_or_404(session, search_id)
        if search.state != SearchState.SUCCEEDED:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"search {search_id} is {search.state}; only a succeeded search has baselines",
            )
        config = dict(search.config)
    config["baseline"] = body.level
    config["reference"] = search_id
    config["name"] = f"{config.get('name') or search_id[:8]} baseline {body.level}"[:200]
    return _create(services, config, search_id)


@router.get("/{search_id}/compare")
def compare_search(services: ServicesDep, search_id: str) -> Compare:
    """Return a search with the baselines that reference it."""
    with services.db.read() as session:
        search = get_search_or_404(session, search_id)
        baselines = session.scalars(
            select(Search).where(Search.reference_id == search_id).order_by(Search.created_at)
        ).all()
        return Compare(
            search=search_public(search), baselines=[search_public(row) for row in baselines]
        )


def _artifact(services: Services, search_id: str, kind: ArtifactKind) -> Artifact:
    with services.db.read() as session:
        get_search_or_404(session, search_id)
        artifact = session.scalar(
            select(Artifact).where(Artifact.search_id == search_id, Artifact.kind == kind)
        )
    if artifact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"search {search_id} has no {kind} yet")
    return artifact


@router.get(
    "/{search_id}/genotype",
    responses={200: {"content": {"application/json": {}}, "description": "genotype.json"}},
)
def download_genotype(services: ServicesDep, search_id: str) -> Response:
    """Download the search's genotype.json."""
    artifact = _artifact(services, search_id, ArtifactKind.GENOTYPE)
    try:
        content = b"".join(services.store.iter_bytes(artifact.key))
    except ArtifactNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the genotype file is missing") from error
    return Response(
        content,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="genotype-{search_id}.json"'},
    )


@router.get(
    "/{search_id}/checkpoint",
    responses={200: {"content": {"application/octet-stream": {}}, "description": "checkpoint.pt"}},
)
def download_checkpoint(services: ServicesDep, search_id: str) -> Response:
    """Download the search's checkpoint.pt, streamed."""
    artifact = _artifact(services, search_id, ArtifactKind.CHECKPOINT)
    filename = f"checkpoint-{search_id}.pt"
    path = services.store.local_path(artifact.key)
    if path is not None:
        return FileResponse(path, media_type="application/octet-stream", filename=filename)
    try:
        size = services.store.size(artifact.key)
    except ArtifactNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the checkpoint file is missing") from error
    return StreamingResponse(
        services.store.iter_bytes(artifact.key),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
