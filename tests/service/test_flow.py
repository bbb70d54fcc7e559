"""End-to-end: the API and a real Celery worker run tiny searches on digits."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from backend.settings import Settings
from worker.celery_app import TaskQueue

from .helpers import (
    SEARCH_TIMEOUT_SECONDS,
    Stack,
    create_search,
    search_row,
    wait_for,
    wait_state,
)
from .sse import read_messages

pytestmark = pytest.mark.service

FINAL = {"succeeded", "failed", "cancelled"}
# Measured at 0.2 to 1 s an epoch of `tiny` on two shared cores, so a search of 40 epochs is
# still running when the checks made during it are done.
LONG_EPOCHS = 40


def stream(client: httpx.Client, search_id: str, last_event_id: int | None = None) -> list[Any]:
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with client.stream("GET", f"/api/searches/{search_id}/events", headers=headers) as response:
        assert response.status_code == 200
        return list(read_messages(response))


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def event_count(stack: Stack, search_id: str) -> int:
    with stack.db.engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM events WHERE search_id = :id"), {"id": search_id}
            ).scalar_one()
        )


def test_search_succeeds_on_digits(finished_search: dict[str, Any]) -> None:
    assert finished_search["state"] == "succeeded", finished_search["error"]
    assert finished_search["progress"] == 1.0
    assert finished_search["attempts"] == 1
    assert finished_search["test_accuracy"] is not None


def test_genotype_download(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    response = client.get(f"/api/searches/{finished_search['id']}/genotype")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    genotype = response.json()
    assert genotype["format"] == "bonsai-genotype"
    assert genotype["cells"]


def test_checkpoint_download(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    response = client.get(f"/api/searches/{finished_search['id']}/checkpoint")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert len(response.content) > 0
    assert 'filename="checkpoint-' in response.headers["content-disposition"]


def test_checkpoint_loads_weights_only(
    client: httpx.Client, finished_search: dict[str, Any], tmp_path: Any
) -> None:
    import torch

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(client.get(f"/api/searches/{finished_search['id']}/checkpoint").content)
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    assert isinstance(checkpoint, dict)


def test_metrics_cover_every_epoch(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    metrics = client.get(f"/api/searches/{finished_search['id']}/metrics").json()
    assert metrics["total"] == finished_search["epochs"]
    assert [item["epoch"] for item in metrics["items"]] == list(range(metrics["total"]))


def test_metrics_paging(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    page = client.get(
        f"/api/searches/{finished_search['id']}/metrics", params={"offset": 1, "limit": 1}
    ).json()
    assert [item["epoch"] for item in page["items"]] == [1]
    assert page["total"] == finished_search["epochs"]


def test_sections_and_pruners(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    search_id = finished_search["id"]
    sections = client.get(f"/api/searches/{search_id}/sections").json()
    assert [section["section"] for section in sections] == list(range(len(sections)))
    pruners = client.get(f"/api/searches/{search_id}/pruners", params={"epoch": 0}).json()
    assert pruners["epoch"] == 0
    assert pruners["total"] == len(pruners["items"])
    assert all(set(item) == {"id", "weight", "gate", "alive"} for item in pruners["items"])


def test_deadheads_listed(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    deadheads = client.get(f"/api/searches/{finished_search['id']}/deadheads").json()
    seqs = [item["seq"] for item in deadheads]
    assert seqs == sorted(seqs)


def test_graph_of_latest_epoch(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    response = client.get(f"/api/searches/{finished_search['id']}/graph")
    assert response.status_code == 200, response.text
    assert "cells" in response.json()


def test_graph_rejects_unknown_epoch(
    client: httpx.Client, finished_search: dict[str, Any]
) -> None:
    response = client.get(f"/api/searches/{finished_search['id']}/graph", params={"epoch": 999})
    assert response.status_code == 422


def test_events_replay_whole_history(
    client: httpx.Client, finished_search: dict[str, Any]
) -> None:
    messages = stream(client, finished_search["id"])
    events = [m for m in messages if m.id is not None]
    assert [m.id for m in events] == list(range(len(events)))
    assert events[0].event == "search_started"
    assert events[-1].event == "finished"
    assert all(m.data["type"] == m.event for m in events)
    assert messages[-1].event == "state"
    assert messages[-1].data["state"] == "succeeded"


def test_events_resume_after_last_event_id(
    client: httpx.Client, finished_search: dict[str, Any]
) -> None:
    messages = stream(client, finished_search["id"], last_event_id=5)
    ids = [m.id for m in messages if m.id is not None]
    assert ids[0] == 6
    assert ids == list(range(6, 6 + len(ids)))


@pytest.mark.parametrize("header", [2**63, -7, "abc"])
def test_events_invalid_last_event_id_replays_all(
    client: httpx.Client, finished_search: dict[str, Any], header: object
) -> None:
    with client.stream(
        "GET",
        f"/api/searches/{finished_search['id']}/events",
        headers={"Last-Event-ID": str(header)},
    ) as response:
        assert response.status_code == 200
        messages = list(read_messages(response))
    ids = [m.id for m in messages if m.id is not None]
    assert ids[0] == 0
    assert messages[-1].event == "state"


def test_failed_search_error_has_no_traceback(stack: Stack, client: httpx.Client) -> None:
    # The tests run without eight GPUs, so this device fails when the search starts.
    search = create_search(client, name="no-gpu", device="cuda:7")
    final = wait_state(client, search["id"], FINAL, timeout=60)
    assert final["state"] == "failed"
    assert "cuda:7" in final["error"]
    assert "Traceback" not in final["error"]


def test_events_headers(client: httpx.Client, finished_search: dict[str, Any]) -> None:
    with client.stream("GET", f"/api/searches/{finished_search['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"


def test_events_unknown_search_is_404(client: httpx.Client) -> None:
    response = client.get(f"/api/searches/{'0' * 32}/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


def test_duplicate_delivery_exits(
    stack: Stack, client: httpx.Client, finished_search: dict[str, Any]
) -> None:
    search_id = finished_search["id"]
    before = event_count(stack, search_id)
    settings = Settings(
        home=stack.home,
        broker_url=stack.env.get("BONSAI_BROKER_URL", "filesystem://"),
        database_url=stack.database_url,
        queue=stack.env["BONSAI_QUEUE"],
    )
    queue = TaskQueue(settings)
    queue.send(search_id)
    queue.close()
    wait_for(
        lambda: f"for search {search_id} exits" in stack.worker_log(),
        60,
        "the worker to drop the duplicate task",
    )
    assert client.get(f"/api/searches/{search_id}").json()["attempts"] == 1
    assert event_count(stack, search_id) == before


def test_events_follow_live_search(stack: Stack, client: httpx.Client) -> None:
    search = create_search(client, name="live", epochs=LONG_EPOCHS)
    try:
        with client.stream("GET", f"/api/searches/{search['id']}/events") as response:
            delays = []
            for message in read_messages(response):
                if message.event == "batch":
                    delays.append(message.received_at - message.data["time"])
                if len(delays) >= 5:
                    break
        # An event reaches the client within a second of the engine emitting it.
        assert max(delays) < 1.0, delays
        wait_for(
            lambda: client.get("/api/health").json()["event_streams"] == 0,
            10,
            "the closed stream to be released",
        )
        row = search_row(stack, search["id"])
        assert row["state"] == "running"

        # Cancel: the search stops between batches and ends cancelled, not failed.
        child = row["child_pid"]
        response = client.post(f"/api/searches/{search['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["cancel_requested"] is True
        final = wait_state(client, search["id"], FINAL, timeout=60)
        assert final["state"] == "cancelled"
        assert final["error"] is None
        wait_for(lambda: not process_exists(child), 30, "the search process to exit")
    finally:
        client.post(f"/api/searches/{search['id']}/cancel")


def test_cancel_finished_search_conflicts(
    client: httpx.Client, finished_search: dict[str, Any]
) -> None:
    response = client.post(f"/api/searches/{finished_search['id']}/cancel")
    assert response.status_code == 409


def test_cancel_queued_search(stack: Stack, client: httpx.Client) -> None:
    # The worker trains one search at a time, so the second one waits in the queue.
    first = create_search(client, name="blocker", epochs=LONG_EPOCHS)
    second = create_search(client, name="queued")
    try:
        wait_state(client, first["id"], {"running"}, timeout=60)
        response = client.post(f"/api/searches/{second['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["state"] == "cancelled"
    finally:
        client.post(f"/api/searches/{first['id']}/cancel")
        client.post(f"/api/searches/{second['id']}/cancel")
    wait_state(client, first["id"], FINAL, timeout=60)


def test_delete_running_search_conflicts(stack: Stack, client: httpx.Client) -> None:
    search = create_search(client, name="delete-running", epochs=LONG_EPOCHS)
    try:
        wait_state(client, search["id"], {"running"}, timeout=60)
        assert client.delete(f"/api/searches/{search['id']}").status_code == 409
    finally:
        client.post(f"/api/searches/{search['id']}/cancel")
    wait_state(client, search["id"], FINAL, timeout=60)
    assert client.delete(f"/api/searches/{search['id']}").status_code == 204
    assert client.get(f"/api/searches/{search['id']}").status_code == 404


def test_killed_search_process_fails_search(stack: Stack, client: httpx.Client) -> None:
    search = create_search(client, name="kill-child", epochs=LONG_EPOCHS)
    pid = wait_for(
        lambda: search_row(stack, search["id"])["child_pid"], 60, "the search process to start"
    )
    wait_for(lambda: event_count(stack, search["id"]) > 0, 60, "the first event")
    os.kill(pid, signal.SIGKILL)
    final = wait_state(client, search["id"], FINAL, timeout=60)
    assert final["state"] == "failed"
    assert "SIGKILL" in final["error"]


def _artifact_kinds(stack: Stack, search_id: str) -> set[str]:
    with stack.db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT kind FROM artifacts WHERE search_id = :id"), {"id": search_id}
        )
        return {row[0] for row in rows}


def test_killed_worker_search_resumes(stack: Stack, client: httpx.Client) -> None:
    search = create_search(client, name="kill-worker", epochs=8)
    search_id = search["id"]
    wait_for(
        lambda: "state.pt" in _artifact_kinds(stack, search_id), 90, "the first stored state.pt"
    )
    row = search_row(stack, search_id)
    worker_pid = int(row["worker"].rsplit(":", 1)[1])
    child_pid = row["child_pid"]
    os.kill(worker_pid, signal.SIGKILL)
    if stack.separate_worker:
        stack.processes["worker"].wait(10)
        stack.start_worker()  # what a process supervisor does in production
    else:
        wait_for(
            lambda: "Embedded worker" in stack.log("serve").split(f"{worker_pid} exited")[-1],
            30,
            "serve to restart its worker",
        )
    wait_for(lambda: not process_exists(child_pid), 10, "the orphaned search process to die")

    final = wait_state(client, search_id, FINAL, timeout=SEARCH_TIMEOUT_SECONDS)
    assert final["state"] == "succeeded", final["error"]
    assert final["attempts"] == 2
    assert final["worker"] != row["worker"]

    # One consistent history: every seq once, in order, ending with `finished`.
    events = [m for m in stream(client, search_id) if m.id is not None]
    assert [m.id for m in events] == list(range(len(events)))
    assert events[-1].event == "finished"
    metrics = client.get(f"/api/searches/{search_id}/metrics").json()
    assert [item["epoch"] for item in metrics["items"]] == list(range(8))


def test_search_list_filters_by_state(
    client: httpx.Client, finished_search: dict[str, Any]
) -> None:
    listing = client.get("/api/searches", params={"state": "succeeded"}).json()
    assert finished_search["id"] in [item["id"] for item in listing["items"]]
    assert all(item["state"] == "succeeded" for item in listing["items"])


def test_baseline_of_finished_search(
    client: httpx.Client, finished_search: dict[str, Any]
) -> None:
    response = client.post(f"/api/searches/{finished_search['id']}/baselines", json={"level": 1})
    assert response.status_code == 201, response.text
    baseline = response.json()
    final = wait_state(client, baseline["id"], FINAL)
    assert final["state"] == "succeeded", final["error"]
    assert final["reference_id"] == finished_search["id"]
    compare = client.get(f"/api/searches/{finished_search['id']}/compare").json()
    assert baseline["id"] in [item["id"] for item in compare["baselines"]]


def test_datasets_lists_digits(client: httpx.Client) -> None:
    datasets = {item["name"]: item for item in client.get("/api/datasets").json()}
    assert datasets["digits"]["available"] is True


def test_estimate_reports_sections(client: httpx.Client) -> None:
    response = client.post("/api/estimate", json={"preset": "tiny"})
    assert response.status_code == 200, response.text
    estimate = response.json()
    assert len(estimate["sections"]) == 3
    assert json.dumps(estimate, allow_nan=False)


def test_worker_shutdown_requeues_search(stack: Stack, client: httpx.Client) -> None:
    search = create_search(client, name="worker-shutdown", epochs=6)
    search_id = search["id"]
    wait_for(
        lambda: "state.pt" in _artifact_kinds(stack, search_id), 90, "the first stored state.pt"
    )
    row = search_row(stack, search_id)
    worker_pid = int(row["worker"].rsplit(":", 1)[1])
    # SIGTERM is Celery's warm shutdown, as `docker stop` or a service manager sends it.
    os.kill(worker_pid, signal.SIGTERM)
    if stack.separate_worker:
        # The test started this worker, so only the test can reap its exit.
        stack.processes["worker"].wait(30)
        stack.start_worker()
    else:
        wait_for(lambda: not process_exists(worker_pid), 30, "the worker to exit")

    final = wait_state(client, search_id, FINAL)
    assert final["state"] == "succeeded", final["error"]
    assert final["attempts"] == 1
    events = [m for m in stream(client, search_id) if m.id is not None]
    assert [m.id for m in events] == list(range(len(events)))


def _database_hiccup(stack: Stack) -> None:
    """Cut the worker off from the database for a moment, the real way for each back end."""
    if stack.name == "postgres":
        with stack.db.engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        return
    # SQLite: an exclusive lock makes every other writer wait on its busy timeout.
    with stack.db.engine.execution_options(sqlite_begin="EXCLUSIVE").begin() as connection:
        connection.exec_driver_sql("SELECT count(*) FROM searches")
        time.sleep(2)


def test_database_hiccup_retries(stack: Stack, client: httpx.Client) -> None:
    search = create_search(client, name="hiccup", epochs=4)
    wait_for(lambda: event_count(stack, search["id"]) > 2, 90, "the first events")
    _database_hiccup(stack)
    final = wait_state(client, search["id"], FINAL)
    assert final["state"] == "succeeded", final["error"]
    assert final["attempts"] == 1
    events = [m for m in stream(client, search["id"]) if m.id is not None]
    assert [m.id for m in events] == list(range(len(events)))
