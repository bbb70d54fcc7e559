"""Fixtures of the browser tests: the real service, headless Chromium and one shared search.

The service runs as `python -m backend.cli serve` with its embedded worker, SQLite and
the filesystem broker under a temporary BONSAI_HOME, and with an API token so that
the pages go through the login dialog. The browser is Debian's chromium, driven by
Playwright; when it cannot start, the tests fail rather than skip.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("BONSAI_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-token"
SCREENSHOT = ROOT / "docs" / "screenshots" / "search-page.png"
VIEWPORT = {"width": 1440, "height": 1000}
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# The shared search: the tiny preset with more epochs and a short growth phase, so
# that the last section trains for several epochs while the page watches it.
SEARCH_NAME = "digits, tiny preset"
SEARCH_FIELDS = {"preset": "tiny", "epochs": "10", "growth_fraction": "0.2", "num_threads": "1"}
SEARCH_CELLS = 3  # the tiny preset's sections N,R,N
SEARCH_TIMEOUT_S = 240.0
POLL_S = 0.15


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """The API server with its embedded worker, as a process group that tests can restart."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home / "serve.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "BONSAI_HOME": str(self.home),
            "BONSAI_TOKEN": TOKEN,
            "BONSAI_LOG_LEVEL": "INFO",
            "BONSAI_LEASE_SECONDS": "6",
            "BONSAI_HEARTBEAT_SECONDS": "1",
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited at start-up: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    logger.info("Service is up at %s", self.url)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the service did not answer within {START_TIMEOUT_S} s")

    def stop(self, graceful: bool = True) -> None:
        """Stop the server, its worker and the worker's children, which share its group.

        ``graceful`` False kills the whole group at once, as a crash would.
        """
        if self.process is None:
            return
        group = self.process.pid
        if graceful:
            # SIGINT, as from Ctrl-C, makes `serve` stop uvicorn and its embedded worker.
            os.kill(group, signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("Service group %d did not stop on SIGINT, killing it", group)
        # Whatever is left of the group, the worker's children included, is killed.
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    server = Service(tmp_path_factory.mktemp("bonsai-home"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api(service: Service) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as error:  # any launch failure must fail the tests, never skip them
            pytest.fail(f"Chromium at {CHROMIUM} failed to start: {error}", pytrace=False)
        yield chromium
        chromium.close()


def sign_in(page: Any, token: str = TOKEN) -> None:
    """Fill in and submit the login dialog that a fresh context's first API call opens."""
    page.locator("#login-token").fill(token)
    page.locator("#login-dialog button[type=submit]").click()


@pytest.fixture(scope="session")
def context(browser: Any, service: Service) -> Iterator[Any]:
    """A browser context signed in once, whose session cookie authenticates every later page."""
    browser_context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = browser_context.new_page()
    page.goto(f"{service.url}/#/")
    sign_in(page)
    page.locator("#search-rows").wait_for()
    page.close()
    yield browser_context
    browser_context.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    tab.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@dataclass
class Observation:
    """What the search page showed at one moment of the live search."""

    elapsed: float
    state: str
    cells: int
    pruners: frozenset[str]
    seq: str


@dataclass
class LiveRun:
    """The shared search, submitted through the form and watched live on its page."""

    search_id: str
    name: str
    observations: list[Observation] = field(default_factory=list)
    screenshot_state: str | None = None
    screenshot_cells: int = 0
    estimate: dict[str, Any] = field(default_factory=dict)

    def running(self) -> list[Observation]:
        return [o for o in self.observations if o.state == "running"]


OBSERVE_SCRIPT = """() => {
  const grid = document.querySelector('#cells');
  const badge = document.querySelector('#search-state [data-state]');
  return {
    state: badge ? badge.dataset.state : '',
    cells: grid ? grid.querySelectorAll('.cell-card').length : 0,
    pruners: grid ? [...grid.querySelectorAll('[data-pruner]')].map((n) => n.dataset.pruner) : [],
    seq: grid ? grid.dataset.seq || '' : '',
  };
}"""


def submit_search_form(page: Any, url: str, name: str, fields: dict[str, str]) -> dict[str, Any]:
    """Fill the new-search form, start the search and return the memory check's estimate.

    When the estimate is over budget, the button is pressed a second time.
    """
    page.goto(f"{url}/#/new")
    page.locator("#search-form").wait_for()
    page.locator("#field-name").fill(name)
    page.locator("#field-preset").select_option(fields["preset"])
    page.locator("details.advanced summary").click()
    for key, value in fields.items():
        if key != "preset":
            page.locator(f"#field-{key}").fill(value)
    with page.expect_response("**/api/estimate", timeout=60_000) as response:
        page.locator("#submit-search").click()
    estimate: dict[str, Any] = response.value.json()
    if not estimate["fits"]:
        page.locator("#submit-search", has_text="Start anyway").click()
    page.wait_for_url("**/#/searches/*", timeout=30_000)
    return estimate


@pytest.fixture(scope="session")
def live_run(context: Any, service: Service) -> Iterator[LiveRun]:
    """Submit the shared search through the form and record its page until it ends.

    The page is polled every POLL_S seconds for the state badge, the drawn cells and
    the pruner ids on them. The screenshot is taken once every cell is drawn while
    the search still runs.
    """
    page = context.new_page()
    started = time.monotonic()
    estimate = submit_search_form(page, service.url, SEARCH_NAME, SEARCH_FIELDS)
    search_id = page.url.rsplit("/", 1)[1]
    run = LiveRun(search_id=search_id, name=SEARCH_NAME, estimate=estimate)

    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    while time.monotonic() < deadline:
        seen = page.evaluate(OBSERVE_SCRIPT)
        observation = Observation(
            elapsed=time.monotonic() - started,
            state=seen["state"],
            cells=seen["cells"],
            pruners=frozenset(seen["pruners"]),
            seq=seen["seq"],
        )
        run.observations.append(observation)
        if (
            run.screenshot_state is None
            and observation.state == "running"
            and observation.cells == SEARCH_CELLS
        ):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            run.screenshot_state = page.evaluate(OBSERVE_SCRIPT)["state"]
            run.screenshot_cells = observation.cells
        if observation.state in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(POLL_S)
    else:
        pytest.fail(f"the shared search did not end in {SEARCH_TIMEOUT_S} s")
    # Let the page settle on the final graph before tests look at it.
    page.wait_for_timeout(1000)
    run.observations.append(
        Observation(time.monotonic() - started, *_final(page.evaluate(OBSERVE_SCRIPT)))
    )
    page.close()
    logger.info("Shared search %s ended after %.1f s", search_id, time.monotonic() - started)
    yield run


def _final(seen: dict[str, Any]) -> tuple[str, int, frozenset[str], str]:
    return seen["state"], seen["cells"], frozenset(seen["pruners"]), seen["seq"]
