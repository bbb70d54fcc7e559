"""The FastAPI application: the API under /api and the viewer's pages at / and /static."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import backend
from backend.auth import require_auth
from backend.db import Database
from backend.reaper import Reaper
from backend.responses import StrictJSONResponse
from backend.routes import events, misc, searches, views
from backend.services import Services
from backend.settings import Settings
from backend.storage import create_store
from worker.celery_app import TaskQueue

logger = logging.getLogger(__name__)

FRONTEND_DIR = Path(backend.__file__).resolve().parents[1] / "frontend"


def _plotly_bundle() -> Path | None:
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> Response:
        return StrictJSONResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> Response:
        details = [
            {"loc": list(item.get("loc", [])), "msg": item.get("msg"), "type": item.get("type")}
            for item in error.errors()
        ]
        return StrictJSONResponse(
            {"detail": details}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
        )

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, error: Exception) -> Response:
        logger.exception("Unhandled error on %s %s", request.method, request.url.path)
        return StrictJSONResponse(
            {"detail": "internal server error"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )


def _install_pages(app: FastAPI) -> None:
    plotly_bundle = _plotly_bundle()

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = FRONTEND_DIR / "index.html"
        if not page.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the pages are not installed")
        return FileResponse(page, media_type="text/html")

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        if plotly_bundle is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "plotly is not installed")
        return FileResponse(plotly_bundle, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=FRONTEND_DIR, check_dir=False), name="static")


def create_app(settings: Settings, run_reaper: bool = True) -> FastAPI:
    """Create the app; its lifespan opens the database, store and broker, and runs the reaper."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url)
        services = Services(
            settings=settings,
            db=db,
            store=create_store(settings.resolved_artifact_url, settings.s3_endpoint_url),
            queue=TaskQueue(settings),
        )
        app.state.services = services
        reaper = Reaper(settings, db, services.queue) if run_reaper else None
        if reaper is not None:
            reaper.start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            services.queue.close()
            db.dispose()

    app = FastAPI(
        title="Bonsai-Net Studio",
        summary="One-shot neural architecture search with differentiable pruners",
        default_response_class=StrictJSONResponse,
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    api = APIRouter(prefix="/api")
    protected = APIRouter(dependencies=[Depends(require_auth)])
    protected.include_router(searches.router)
    protected.include_router(views.router)
    protected.include_router(events.router)
    api.include_router(protected)
    api.include_router(misc.router)
    api.include_router(misc.public_router)
    app.include_router(api)
    _install_pages(app)
    return app
