"""Browser tests of the pages against the real service and a real tiny search.

The tests share one search (the `live_run` fixture), which is submitted through the
form and watched live. The tests below run in file order: those that need the
finished search come after the live checks, and the server restart comes last.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from typing import Any

import httpx
import pytest

from tests.frontend.conftest import (
    SCREENSHOT,
    SEARCH_CELLS,
    TOKEN,
    VIEWPORT,
    LiveRun,
    Service,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.service]

TERMINAL = {"succeeded", "failed", "cancelled"}


def search_url(service: Service, search_id: str) -> str:
    return f"{service.url}/#/searches/{search_id}"


def wait_for_state(api: httpx.Client, search_id: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        search = api.get(f"/api/searches/{search_id}").json()
        if search["state"] in TERMINAL:
            return search
        time.sleep(0.5)
    raise AssertionError(f"search {search_id} did not finish within {timeout} s")


def shown_pruners(page: Any) -> set[str]:
    return set(
        page.evaluate(
            "() => [...document.querySelectorAll('#cells [data-pruner]')]"
            ".map((node) => node.dataset.pruner)"
        )
    )


def graph_pruners(graph: dict[str, Any]) -> set[str]:
    return {
        op["pruner"] for cell in graph["cells"] for edge in cell["edges"] for op in edge["ops"]
    }


def open_finished_search(page: Any, service: Service, run: LiveRun) -> None:
    page.goto(search_url(service, run.search_id))
    page.locator("#cells .cell-card").first.wait_for()
    page.locator("#search-state [data-state=succeeded]").wait_for()


def test_form_submits_search(live_run: LiveRun, api: httpx.Client) -> None:
    search = api.get(f"/api/searches/{live_run.search_id}").json()
    assert search["name"] == live_run.name
    assert search["config"]["preset"] == "tiny"
    assert search["config"]["epochs"] == 10
    assert search["config"]["dataset"] == "digits"
    assert search["state"] == "succeeded"
    # The memory check ran on the submitted fields before the search was created.
    assert len(live_run.estimate["sections"]) == 3


def test_memory_check_per_section(page: Any, service: Service, api: httpx.Client) -> None:
    page.goto(f"{service.url}/#/new")
    page.locator("#field-preset").select_option("tiny")
    page.locator("#check-memory").click()
    rows = page.locator("#memory-check tbody tr")
    rows.first.wait_for()
    estimate = api.post("/api/estimate", json={"preset": "tiny"}).json()
    assert rows.count() == len(estimate["sections"])
    for row, section in zip(rows.all(), estimate["sections"], strict=True):
        assert row.locator("td").nth(3).locator(".meter-fill").count() == 1
        assert row.locator("td").nth(5).text_content() == (
            "fits" if section["fits"] else "over budget"
        )
    assert page.locator("#memory-check h3").text_content().startswith("Memory check: budget")
    assert "#/new" in page.url


def test_search_appears_in_list(live_run: LiveRun, page: Any, service: Service) -> None:
    page.goto(f"{service.url}/#/")
    row = page.locator(f"tr[data-search-id='{live_run.search_id}']")
    row.wait_for()
    assert row.locator(".search-name").text_content() == live_run.name
    assert row.locator("[data-state]").text_content() == "succeeded"
    page.locator("#state-filter").select_option("failed")
    row.wait_for(state="detached")
    page.locator("#state-filter").select_option("succeeded")
    row.wait_for()


def test_cell_graphs_render_live(live_run: LiveRun) -> None:
    running = live_run.running()
    assert running, "the page never showed the search as running"
    assert max(o.cells for o in running) == SEARCH_CELLS
    # Sections arrive one by one, so fewer cells were drawn at first.
    assert min(o.cells for o in running if o.cells) < SEARCH_CELLS
    distinct = {o.pruners for o in running if o.pruners}
    assert len(distinct) >= 2, "the cell graphs never changed while the search ran"


def test_deadheaded_connection_vanishes(live_run: LiveRun, api: httpx.Client) -> None:
    deadheaded = {
        pruner
        for row in api.get(f"/api/searches/{live_run.search_id}/deadheads").json()
        for pruner in row["pruner_ids"]
    }
    observations = [o for o in live_run.observations if o.pruners]
    vanished = set()
    for earlier, later in zip(observations, observations[1:], strict=False):
        if earlier.state == "running":
            vanished |= earlier.pruners - later.pruners
    # Edges can also vanish because their node lost its inputs, so only some of the
    # vanished pruners need a deadheaded event of their own.
    assert vanished & deadheaded, "no deadheaded connection disappeared from the live page"
    assert not vanished & observations[-1].pruners


def test_screenshot_of_running_search(live_run: LiveRun) -> None:
    assert live_run.screenshot_state == "running"
    assert live_run.screenshot_cells == SEARCH_CELLS
    assert SCREENSHOT.stat().st_size > 50_000
    assert SCREENSHOT.stat().st_mtime > time.time() - 3600


def test_search_page_matches_graph_api(
    live_run: LiveRun, page: Any, service: Service, api: httpx.Client
) -> None:
    open_finished_search(page, service, live_run)
    graph = api.get(f"/api/searches/{live_run.search_id}/graph").json()
    assert page.locator("#cells .cell-card").count() == len(graph["cells"])
    assert shown_pruners(page) == graph_pruners(graph)
    for cell in graph["cells"]:
        card = page.locator(f".cell-card[data-cell-index='{cell['index']}']")
        assert card.locator(".node").count() == len(cell["layout"]["nodes"])
    totals = graph["motif_counts"]
    assert page.locator("#motif-residual-edge").text_content() == str(totals["residual_edge"])
    assert page.locator("#motif-residual-path").text_content() == str(totals["residual_path"])
    assert page.locator("#inter-cell svg .cell-box").count() == len(graph["cells"]) + 1
    for chart in ("op-type", "op-depth", "accuracy", "loss", "compression", "lambda", "memory"):
        assert page.locator(f"#chart-{chart} .main-svg").count() > 0, chart
    metrics = api.get(f"/api/searches/{live_run.search_id}/metrics").json()["items"]
    accuracy = page.evaluate("() => document.querySelector('#chart-accuracy').data[1].y")
    assert accuracy == [row["test_accuracy"] for row in metrics]


def test_edge_details_show_weight_and_gate(
    live_run: LiveRun, page: Any, service: Service, api: httpx.Client
) -> None:
    open_finished_search(page, service, live_run)
    graph = api.get(f"/api/searches/{live_run.search_id}/graph").json()
    # An edge inside a motif where there is one: its halo, wider than the edge, must not
    # take the click.
    in_motif = {
        pruner for c in graph["cells"] for motif in c["motifs"] for pruner in motif["pruners"]
    }
    candidates = [(c, e) for c in graph["cells"] for e in c["edges"]]
    cell, edge = next(
        ((c, e) for c, e in candidates if any(op["pruner"] in in_motif for op in e["ops"])),
        candidates[0],
    )
    card = page.locator(f".cell-card[data-cell-index='{cell['index']}']")
    card.locator(f"[data-edge='{edge['source']}-{edge['target']}']").click()
    rows = page.locator("#edge-details tbody tr")
    assert rows.count() == len(edge["ops"])
    first = rows.nth(0).locator("td")
    assert first.nth(1).text_content() == edge["ops"][0]["pruner"]
    assert first.nth(3).text_content() in {"on", "off"}


def test_replay_slider_scrubs(
    live_run: LiveRun, page: Any, service: Service, api: httpx.Client
) -> None:
    open_finished_search(page, service, live_run)
    epochs = api.get(f"/api/searches/{live_run.search_id}/graph").json()["epochs"]
    slider = page.locator("#replay-slider")
    assert json.loads(slider.get_attribute("data-epochs")) == epochs
    for position in (0, len(epochs) // 2, len(epochs) - 1):
        epoch = epochs[position]
        slider.fill(str(position))
        page.locator(f"#cells[data-replay='{epoch}'][data-epoch='{epoch}']").wait_for()
        expected = api.get(f"/api/searches/{live_run.search_id}/graph?epoch={epoch}").json()
        assert shown_pruners(page) == graph_pruners(expected), f"epoch {epoch}"
        assert page.locator("#cells .cell-card").count() == len(expected["cells"])
        assert page.locator("#replay-label").text_content().startswith(f"epoch {epoch}")
    # The first epoch shows connections that later deadheadings removed.
    first = graph_pruners(api.get(f"/api/searches/{live_run.search_id}/graph?epoch=0").json())
    last = graph_pruners(api.get(f"/api/searches/{live_run.search_id}/graph").json())
    assert first - last
    page.locator("#replay-live").click()
    page.locator("#cells[data-replay='live']").wait_for()
    assert shown_pruners(page) == last


def test_download_genotype(
    live_run: LiveRun, page: Any, service: Service, api: httpx.Client
) -> None:
    open_finished_search(page, service, live_run)
    with page.expect_download() as download_info:
        page.locator("#download-genotype").click()
    download = download_info.value
    assert download.suggested_filename == f"genotype-{live_run.search_id}.json"
    with open(download.path()) as file:
        downloaded = json.load(file)
    assert downloaded == api.get(f"/api/searches/{live_run.search_id}/genotype").json()
    checkpoint = page.locator("#download-checkpoint").get_attribute("href")
    assert checkpoint == f"/api/searches/{live_run.search_id}/checkpoint"
    response = api.get(checkpoint)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0


def test_form_shows_422_at_field(page: Any, service: Service) -> None:
    page.goto(f"{service.url}/#/new")
    page.locator("#field-epochs").fill("0")
    page.locator("#submit-search").click()
    error = page.locator("#error-epochs")
    error.wait_for(state="visible")
    assert "0" in error.text_content()
    assert page.locator("#field-epochs").get_attribute("aria-invalid") == "true"
    assert "#/new" in page.url
    # Correcting the field clears its message.
    page.locator("#field-epochs").fill("3")
    assert error.text_content() == ""


def test_form_lists_every_config_field(page: Any, service: Service, api: httpx.Client) -> None:
    page.goto(f"{service.url}/#/new")
    page.locator("#search-form").wait_for()
    hidden = {"baseline", "reference"}
    for field in api.get("/api/config/fields").json():
        if field["name"] in hidden:
            continue
        row = page.locator(f".field[data-field='{field['name']}']")
        assert row.count() == 1, field["name"]
        if field["unit"]:
            assert row.locator(".unit").text_content() == field["unit"]
    available = {d["name"]: d["available"] for d in api.get("/api/datasets").json()}
    expected = "fashion-mnist" if available.get("fashion-mnist") else "digits"
    assert page.locator("#field-dataset").input_value() == expected


def test_failed_search_shows_reason(page: Any, service: Service, api: httpx.Client) -> None:
    # This machine has no CUDA, so the worker fails the search as it starts.
    name = '<img src=x onerror="window.__injected = 1">needs CUDA'
    created = api.post("/api/searches", json={"preset": "tiny", "device": "cuda", "name": name})
    assert created.status_code == 201
    search_id = created.json()["id"]
    page.goto(search_url(service, search_id))
    wait_for_state(api, search_id)
    page.locator("#search-state [data-state=failed]").wait_for()
    message = page.locator("#search-error")
    message.wait_for(state="visible")
    assert "CUDA" in message.text_content()
    assert page.locator("#search-title").text_content() == name

    # Names are text wherever they appear, never markup.
    page.goto(f"{service.url}/#/")
    row = page.locator(f"tr[data-search-id='{search_id}']")
    row.wait_for()
    assert row.locator(".search-name").text_content() == name
    assert page.locator("#search-rows img").count() == 0
    assert page.evaluate("() => window.__injected") is None


def test_compare_with_baselines(
    live_run: LiveRun, page: Any, service: Service, api: httpx.Client
) -> None:
    open_finished_search(page, service, live_run)
    page.locator("#baseline-1").click()
    page.wait_for_url(f"**/#/searches/{live_run.search_id}/compare")
    page.locator("#compare-table tbody tr").nth(1).wait_for()
    page.locator("#compare-baseline-2").click()
    page.locator("#compare-table tbody tr").nth(2).wait_for()
    compare = api.get(f"/api/searches/{live_run.search_id}/compare").json()
    assert sorted(b["baseline"] for b in compare["baselines"]) == [1, 2]
    for baseline in compare["baselines"]:
        assert baseline["reference_id"] == live_run.search_id
        wait_for_state(api, baseline["id"])
    page.reload()
    rows = page.locator("#compare-table tbody tr")
    rows.nth(2).wait_for()
    roles = [rows.nth(i).locator("td").nth(0).text_content() for i in range(3)]
    assert roles == ["Bonsai-Net", "random level 1", "random level 2"]
    for i in range(3):
        cells = rows.nth(i).locator("td")
        assert re.fullmatch(r"[\d.]+ %", cells.nth(3).text_content()), i
        assert cells.nth(4).text_content() != "–"
        assert cells.nth(5).text_content() != "–"
        assert cells.nth(6).text_content() != "–"
    traces = page.evaluate("() => document.querySelector('#chart-compare-total').data.length")
    assert traces == 3


def test_list_cancels_search(page: Any, service: Service, api: httpx.Client) -> None:
    created = api.post("/api/searches", json={"preset": "tiny", "epochs": 30}).json()
    page.goto(f"{service.url}/#/")
    row = page.locator(f"tr[data-search-id='{created['id']}']")
    row.locator("button", has_text="Cancel").click()
    page.locator(f"tr[data-search-id='{created['id']}'][data-state=cancelled]").wait_for(
        timeout=60_000
    )
    assert api.get(f"/api/searches/{created['id']}").json()["state"] == "cancelled"
    assert page.locator(f"tr[data-search-id='{created['id']}'] button").count() == 0


def test_login_asked_once(browser: Any, service: Service) -> None:
    fresh = browser.new_context(viewport=VIEWPORT)
    try:
        tab = fresh.new_page()
        tab.goto(f"{service.url}/#/")
        sign_in(tab, "wrong-token")
        tab.locator("#login-error", has_text="invalid").wait_for()
        sign_in(tab, TOKEN)
        tab.locator("#search-rows tr").first.wait_for()
        tab.goto(f"{service.url}/#/new")
        tab.locator("#search-form").wait_for()
        tab.reload()
        tab.locator("#search-form").wait_for()
        assert tab.locator("#login-dialog").count() == 0
        cookies = {cookie["name"]: cookie for cookie in fresh.cookies()}
        assert cookies["bonsai_session"]["httpOnly"]
        # Signing out clears the cookie, so the next page asks again.
        tab.locator("#sign-out").click()
        tab.locator("#login-dialog").wait_for()
    finally:
        fresh.close()


def test_restart_reproduces_pictures(
    live_run: LiveRun, context: Any, service: Service, api: httpx.Client
) -> None:
    pictures = """() => ({
      cells: document.querySelector('#cells').innerHTML,
      interCell: document.querySelector('#inter-cell').innerHTML,
      motifs: document.querySelector('#motifs').innerHTML,
      byDepth: JSON.stringify(document.querySelector('#chart-op-depth').data),
      byType: JSON.stringify(document.querySelector('#chart-op-type').data),
      accuracy: JSON.stringify(document.querySelector('#chart-accuracy').data),
      compression: JSON.stringify(document.querySelector('#chart-compression').data),
    })"""
    finished = context.new_page()
    open_finished_search(finished, service, live_run)
    before = finished.evaluate(pictures)

    # A second page follows a live search, so its event stream loses the server.
    live = api.post("/api/searches", json={"preset": "tiny", "epochs": 30}).json()
    watcher = context.new_page()
    watcher.goto(search_url(service, live["id"]))
    watcher.locator("#stream-status[data-status=open]").wait_for()

    # Without the work and artifact directories, only the database can redraw the page.
    service.stop(graceful=False)
    for directory in ("artifacts", "work"):
        shutil.rmtree(service.home / directory, ignore_errors=True)
    banner = watcher.locator("#connection-banner")
    banner.wait_for(state="visible", timeout=20_000)
    assert "Reconnecting" in banner.text_content()
    assert watcher.locator("#stream-status").text_content() == "reconnecting…"

    service.start()
    watcher.locator("#stream-status[data-status=open]").wait_for(timeout=30_000)
    assert banner.is_hidden()
    api.post(f"/api/searches/{live['id']}/cancel")
    watcher.close()

    finished.reload()
    finished.locator("#cells .cell-card").first.wait_for()
    finished.wait_for_timeout(500)
    after = finished.evaluate(pictures)
    finished.close()
    for key, value in before.items():
        assert after[key] == value, key
