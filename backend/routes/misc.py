"""Data sets, config fields, memory estimates, login and health."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from backend import engine
from backend.auth import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_SECONDS,
    is_authenticated,
    require_auth,
    session_value,
    token_matches,
)
from backend.routes.searches import ConfigBody, invalid
from backend.schemas import Health, LoginRequest, SessionInfo
from backend.services import ServicesDep

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_auth)], tags=["engine"])
public_router = APIRouter(tags=["session"])


@router.get("/datasets")
def list_datasets(services: ServicesDep) -> list[dict[str, Any]]:
    """Return which data sets are available under the data directory."""
    return engine.available_datasets(services.settings)


@router.get("/config/fields")
def list_config_fields() -> list[dict[str, Any]]:
    """Return the engine's config fields with types, defaults and help."""
    return engine.config_fields()


@router.post("/estimate")
async def estimate(services: ServicesDep, body: ConfigBody) -> dict[str, Any]:
    """Predict each section's training memory against the budget, without training."""
    # Validation looks for the data set's files (and imports its loader on first use), so
    # it runs in the thread pool like the estimate, off the event loop of the live streams.
    try:
        config = await run_in_threadpool(engine.validate_config, body, services.settings)
    except engine.InvalidConfig as error:
        raise invalid(error) from error
    return await run_in_threadpool(engine.estimate_memory, config)


@public_router.post("/login")
def login(services: ServicesDep, body: LoginRequest, response: Response) -> SessionInfo:
    """Check the token and set the HttpOnly session cookie."""
    settings = services.settings
    if settings.token is None:
        return SessionInfo(auth_required=False, authenticated=True)
    if not token_matches(settings, body.token):
        logger.warning("Login with a wrong token rejected")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong token")
    response.set_cookie(
        SESSION_COOKIE,
        session_value(settings.token.get_secret_value()),
        max_age=SESSION_MAX_AGE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
    )
    return SessionInfo(auth_required=True, authenticated=True)


@public_router.post("/logout")
def logout(services: ServicesDep, response: Response) -> SessionInfo:
    """Clear the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/")
    return SessionInfo(auth_required=services.settings.token is not None, authenticated=False)


@public_router.get("/session")
def read_session(services: ServicesDep, request: Request) -> SessionInfo:
    """Tell the pages whether a token is needed and whether this client has a session."""
    return SessionInfo(
        auth_required=services.settings.token is not None,
        authenticated=is_authenticated(request, services.settings),
    )


def _check_database(services: Any) -> str:
    try:
        with services.db.read() as session:
            session.execute(text("SELECT 1"))
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"


def _check_broker(services: Any) -> str:
    try:
        services.queue.check()
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"


@public_router.get("/health")
async def health(services: ServicesDep, response: Response) -> Health:
    """Report whether the database and the broker respond."""
    database = await run_in_threadpool(_check_database, services)
    broker = await run_in_threadpool(_check_broker, services)
    healthy = database == "ok" and broker == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if healthy else "degraded",
        database=database,
        broker=broker,
        event_streams=services.open_streams,
    )
