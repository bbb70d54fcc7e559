"""The API in process, without a worker: validation, ids, auth, path tricks, JSON, pages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.auth import SESSION_COOKIE
from backend.db import Database
from backend.engine import validate_config
from backend.ingest import store_events
from backend.migrate import upgrade
from backend.models import Artifact, ArtifactKind, Search, SearchState
from backend.settings import Settings
from backend.storage import LocalStore, search_key

TOKEN = "correct-horse-battery-staple"


def make_settings(home: Path, **overrides: Any) -> Settings:
    return Settings(
        home=home,
        data_dir=home / "data",
        queue=f"api-test-{uuid.uuid4().hex[:8]}",
        **overrides,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("api-home")
    result = make_settings(home, max_epochs=50)
    upgrade(result.resolved_database_url)
    return result


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_reaper=False)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("api-secured")
    settings = make_settings(home, token=TOKEN)
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings, run_reaper=False)) as test_client:
        yield test_client


def insert_search(settings: Settings, state: SearchState, **fields: Any) -> str:
    search_id = uuid.uuid4().hex
    db = Database(settings.resolved_database_url)
    with db.write() as session:
        session.add(
            Search(
                id=search_id,
                name="inserted",
                dataset="digits",
                config={"preset": "tiny"},
                state=state,
                epochs=3,
                attempts=0,
                progress=0.0,
                baseline=0,
                **fields,
            )
        )
    db.dispose()
    return search_id


def field_of(response: Any) -> str:
    detail = response.json()["detail"]
    return str(detail[0]["loc"][-1])


# Creating searches.


def test_create_search_returns_201(client: TestClient) -> None:
    response = client.post("/api/searches", json={"preset": "tiny", "name": "a"})
    assert response.status_code == 201
    search = response.json()
    assert search["state"] == "queued"
    assert search["config"]["epochs"] == 3
    assert search["name"] == "a"


def test_create_search_takes_engine_defaults(client: TestClient) -> None:
    search = client.post("/api/searches", json={}).json()
    assert search["config"]["preset"] == "digits"
    assert search["config"]["seed"] == 0
    assert search["config"]["baseline"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": "many"}, "epochs"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"channels": -1}, "channels"),
        ({"sections": "NX"}, "sections"),
        ({"device": "tpu"}, "device"),
        ({"budget": "lots"}, "budget"),
        ({"colour": "green"}, "colour"),
        ({"baseline": 1}, "reference"),
    ],
)
def test_create_search_invalid_config_names_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/searches", json=body)
    assert response.status_code == 422
    assert field_of(response) == field


def test_create_search_lists_every_invalid_field(client: TestClient) -> None:
    response = client.post("/api/searches", json={"epochs": -3, "budget": "lots", "nodes": 0})
    assert response.status_code == 422
    fields = {entry["loc"][-1] for entry in response.json()["detail"]}
    assert fields == {"epochs", "budget", "nodes"}


def test_create_search_beyond_limit_rejected(client: TestClient) -> None:
    response = client.post("/api/searches", json={"preset": "tiny", "epochs": 51})
    assert response.status_code == 422
    assert field_of(response) == "epochs"
    assert "limit" in response.json()["detail"][0]["msg"]


def test_create_search_not_an_object_rejected(client: TestClient) -> None:
    response = client.post("/api/searches", json=[1, 2])
    assert response.status_code == 422


def test_create_search_missing_dataset_rejected(client: TestClient) -> None:
    response = client.post("/api/searches", json={"preset": "tiny", "dataset": "mnist"})
    assert response.status_code == 422
    assert field_of(response) == "dataset"
    message = response.json()["detail"][0]["msg"]
    assert "mnist data set not found" in message
    assert "download=True" in message


def test_create_search_missing_dataset_with_download(client: TestClient) -> None:
    body = {"preset": "tiny", "dataset": "mnist", "download": True}
    response = client.post("/api/searches", json=body)
    assert response.status_code == 201


def test_validate_config_leaves_datasets_to_remote_workers(tmp_path: Path) -> None:
    """With a network broker the workers may run elsewhere, with data sets this server lacks."""
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:6379/0")
    config = validate_config({"preset": "tiny", "dataset": "mnist"}, settings)
    assert config["dataset"] == "mnist"


def test_create_search_data_dir_outside_roots(client: TestClient) -> None:
    response = client.post("/api/searches", json={"preset": "tiny", "data_dir": "/etc"})
    assert response.status_code == 422
    assert field_of(response) == "data_dir"


def test_create_search_data_dir_escape_rejected(client: TestClient) -> None:
    response = client.post("/api/searches", json={"preset": "tiny", "data_dir": "../../etc"})
    assert response.status_code == 422
    assert field_of(response) == "data_dir"


def test_create_search_unknown_reference(client: TestClient) -> None:
    response = client.post(
        "/api/searches", json={"preset": "tiny", "baseline": 1, "reference": "0" * 32}
    )
    assert response.status_code == 422
    assert field_of(response) == "reference"


def test_estimate_invalid_config_names_field(client: TestClient) -> None:
    response = client.post("/api/estimate", json={"nodes": 0})
    assert response.status_code == 422
    assert field_of(response) == "nodes"


def test_estimate_missing_dataset_rejected(client: TestClient) -> None:
    response = client.post("/api/estimate", json={"preset": "tiny", "dataset": "svhn"})
    assert response.status_code == 422
    assert field_of(response) == "dataset"


# Unknown ids and path tricks.

UNKNOWN_PATHS = [
    "/api/searches/{id}",
    "/api/searches/{id}/genotype",
    "/api/searches/{id}/checkpoint",
    "/api/searches/{id}/metrics",
    "/api/searches/{id}/sections",
    "/api/searches/{id}/pruners",
    "/api/searches/{id}/deadheads",
    "/api/searches/{id}/graph",
    "/api/searches/{id}/compare",
    "/api/searches/{id}/events",
]


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_unknown_search_is_404(client: TestClient, path: str) -> None:
    response = client.get(path.format(id=uuid.uuid4().hex))
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


@pytest.mark.parametrize("method", ["post", "delete"])
def test_unknown_search_write_is_404(client: TestClient, method: str) -> None:
    path = f"/api/searches/{uuid.uuid4().hex}" + ("/cancel" if method == "post" else "")
    assert getattr(client, method)(path).status_code == 404


@pytest.mark.parametrize(
    "search_id",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "..",
        "abc",
        "0" * 31 + "/",
        "%00",
        "searches",
    ],
)
@pytest.mark.parametrize("kind", ["genotype", "checkpoint"])
def test_download_path_tricks_are_404(client: TestClient, search_id: str, kind: str) -> None:
    response = client.get(f"/api/searches/{search_id}/{kind}")
    assert response.status_code == 404
    assert b"root:" not in response.content


def test_download_ignores_path_query(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.SUCCEEDED)
    response = client.get(f"/api/searches/{search_id}/genotype", params={"path": "/etc/passwd"})
    assert response.status_code == 404
    assert "no genotype.json" in response.json()["detail"]


def test_download_genotype_stored_by_id(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.SUCCEEDED)
    source = settings.resolved_home / "genotype-source.json"
    source.write_text(json.dumps({"format": "bonsai-genotype", "cells": []}))
    store = LocalStore(Path(settings.resolved_artifact_url))
    key = search_key(search_id, ArtifactKind.GENOTYPE)
    size = store.put_file(key, source)
    db = Database(settings.resolved_database_url)
    with db.write() as session:
        session.add(Artifact(search_id=search_id, kind=ArtifactKind.GENOTYPE, key=key, size=size))
    db.dispose()
    response = client.get(f"/api/searches/{search_id}/genotype")
    assert response.status_code == 200
    assert response.json()["format"] == "bonsai-genotype"
    assert f'filename="genotype-{search_id}.json"' in response.headers["content-disposition"]


def test_graph_rejects_negative_epoch(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.RUNNING)
    assert client.get(f"/api/searches/{search_id}/graph?epoch=-1").status_code == 422


def test_pruners_rejects_negative_epoch(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.RUNNING)
    assert client.get(f"/api/searches/{search_id}/pruners?epoch=-1").status_code == 422


# States.


def test_cancel_queued_search_ends_cancelled(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.QUEUED)
    response = client.post(f"/api/searches/{search_id}/cancel")
    assert response.status_code == 202
    assert response.json()["state"] == "cancelled"


def test_cancel_running_search_sets_flag(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.RUNNING)
    response = client.post(f"/api/searches/{search_id}/cancel")
    assert response.status_code == 202
    assert response.json()["state"] == "running"
    assert response.json()["cancel_requested"] is True


@pytest.mark.parametrize("state", [SearchState.SUCCEEDED, SearchState.FAILED])
def test_cancel_finished_search_conflicts(
    client: TestClient, settings: Settings, state: SearchState
) -> None:
    search_id = insert_search(settings, state)
    assert client.post(f"/api/searches/{search_id}/cancel").status_code == 409


@pytest.mark.parametrize("state", [SearchState.QUEUED, SearchState.RUNNING])
def test_delete_active_search_conflicts(
    client: TestClient, settings: Settings, state: SearchState
) -> None:
    search_id = insert_search(settings, state)
    assert client.delete(f"/api/searches/{search_id}").status_code == 409


def test_baseline_of_unfinished_search_conflicts(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.RUNNING)
    response = client.post(f"/api/searches/{search_id}/baselines", json={"level": 1})
    assert response.status_code == 409


def test_baseline_level_validated(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.SUCCEEDED)
    response = client.post(f"/api/searches/{search_id}/baselines", json={"level": 3})
    assert response.status_code == 422


def test_list_searches_paging(client: TestClient, settings: Settings) -> None:
    for _ in range(3):
        insert_search(settings, SearchState.FAILED)
    page = client.get("/api/searches", params={"state": "failed", "limit": 2}).json()
    assert len(page["items"]) == 2
    assert page["total"] >= 3


def test_list_searches_rejects_unknown_state(client: TestClient) -> None:
    assert client.get("/api/searches", params={"state": "paused"}).status_code == 422


# Strict JSON.


def test_non_finite_values_become_null(client: TestClient, settings: Settings) -> None:
    search_id = insert_search(settings, SearchState.RUNNING)
    db = Database(settings.resolved_database_url)
    with db.write() as session:
        search = session.get_one(Search, search_id)
        store_events(
            session,
            search,
            1,
            [
                {
                    "seq": 0,
                    "type": "epoch_end",
                    "time": 1.0,
                    "epoch": 0,
                    "data": {"test_accuracy": float("nan"), "train_loss": float("inf")},
                }
            ],
        )
        search.compression = float("nan")
    db.dispose()
    metrics = client.get(f"/api/searches/{search_id}/metrics")
    assert "NaN" not in metrics.text
    assert "Infinity" not in metrics.text
    assert metrics.json()["items"][0]["train_loss"] is None
    detail = client.get(f"/api/searches/{search_id}")
    assert "NaN" not in detail.text
    assert detail.json()["compression"] is None


# Auth.


def test_no_token_needs_no_auth(client: TestClient) -> None:
    assert client.get("/api/session").json() == {"auth_required": False, "authenticated": True}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/searches"),
        ("get", "/api/searches"),
        ("post", "/api/estimate"),
        ("get", f"/api/searches/{'0' * 32}/genotype"),
        ("get", f"/api/searches/{'0' * 32}/checkpoint"),
        ("get", f"/api/searches/{'0' * 32}/events"),
        ("delete", f"/api/searches/{'0' * 32}"),
        ("post", f"/api/searches/{'0' * 32}/cancel"),
        ("get", "/api/datasets"),
    ],
)
def test_token_required(secured: TestClient, method: str, path: str) -> None:
    response = getattr(secured, method)(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_token_bearer_header_accepted(secured: TestClient) -> None:
    response = secured.post(
        "/api/searches", json={"preset": "tiny"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 201


def test_token_wrong_bearer_rejected(secured: TestClient) -> None:
    response = secured.get("/api/searches", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


def test_token_in_query_string_rejected(secured: TestClient) -> None:
    assert secured.get("/api/searches", params={"token": TOKEN}).status_code == 401


def test_health_needs_no_token(secured: TestClient) -> None:
    assert secured.get("/api/health").status_code == 200


def test_login_wrong_token_401(secured: TestClient) -> None:
    response = secured.post("/api/login", json={"token": "wrong"})
    assert response.status_code == 401
    assert SESSION_COOKIE not in response.cookies


def test_login_cookie_authorizes(secured: TestClient) -> None:
    response = secured.post("/api/login", json={"token": TOKEN})
    assert response.status_code == 200
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header
    assert "SameSite=strict" in header
    assert TOKEN not in header
    try:
        assert secured.get("/api/searches").status_code == 200
        assert secured.get("/api/session").json()["authenticated"] is True
        created = secured.post("/api/searches", json={"preset": "tiny"})
        assert created.status_code == 201
    finally:
        secured.post("/api/logout")
        secured.cookies.clear()
    assert secured.get("/api/searches").status_code == 401


def test_forged_cookie_rejected(secured: TestClient) -> None:
    secured.cookies.set(SESSION_COOKIE, TOKEN)
    try:
        assert secured.get("/api/searches").status_code == 401
    finally:
        secured.cookies.clear()


# Documents and pages.


def test_openapi_lists_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/searches" in paths
    assert "/api/searches/{search_id}/events" in paths
    assert "/api/estimate" in paths


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_plotly_served_locally(client: TestClient) -> None:
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    assert len(response.content) > 100_000


def test_index_page_or_json_404(client: TestClient) -> None:
    response = client.get("/")
    index = Path(__file__).resolve().parents[2] / "frontend" / "index.html"
    if index.is_file():
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
    else:
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"


def test_static_path_escape_is_404(client: TestClient) -> None:
    response = client.get("/static/..%2F..%2Fpyproject.toml")
    assert response.status_code == 404
