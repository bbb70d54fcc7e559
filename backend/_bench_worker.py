"""The cost of recording events to a search's training steps, under the real worker.

Each search goes through `worker.job.run_search_job`, as the Celery task calls it: the
worker claims the search, trains it in a spawned search process, reads its events from
the pipe and stores them every `flush_interval_seconds`. The search function is
`timed_search`, which times every training step with the engine's `progress` callback and
switches recording on and off in blocks of `BLOCK_STEPS` steps. In a block with recording
off, the `on_event` it gives the engine drops every event, so nothing reaches the pipe or
the database. Whole runs on the same shared machine differ by up to half their step time
from one minute to the next, so the two variants alternate inside one run instead.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from backend._bench_common import BenchmarkRow, add_search, make_row
from backend.db import Database
from backend.models import Event, PrunerSnapshot, Search, SearchState
from backend.settings import Settings
from backend.storage import create_store
from worker.job import run_search_job

SEARCH_FUNCTION = "backend._bench_worker:timed_search"
STEPS_FILE_VAR = "BONSAI_BENCH_STEPS_FILE"
MAX_OVERHEAD = 0.03
BLOCK_STEPS = 6
# The first steps of a block are not timed, because the worker may still be storing the
# previous block's events. NOTE: one flush interval (0.25 s) is 2.5 steps at 100 ms a step,
# the digits preset's on the CPU of docs/benchmarks.md. With steps under 84 ms part of
# that spill is timed, which understates the overhead.
SKIPPED_STEPS = 3

# A pruner_snapshot and a batch event after every step, the heaviest recording a config
# can ask for.
QUICK_CONFIG: dict[str, Any] = {
    "preset": "tiny",
    "max_train_images": 640,
    "snapshot_every": 1,
    "batch_event_every": 1,
    "device": "cpu",
}
FULL_CONFIG: dict[str, Any] = {
    "preset": "digits",
    "epochs": 3,
    "max_train_images": 1920,
    "max_test_images": 128,
    "snapshot_every": 1,
    "batch_event_every": 1,
    "device": "cpu",
}
QUICK_EPOCHS = 3  # the tiny preset's
QUICK_SEARCHES = 1
FULL_SEARCHES = 2


def is_recorded(epoch: int, index: int) -> bool:
    """Return whether step `index` (0-based) of `epoch` sends its events.

    Blocks restart at each epoch, and odd epochs start with a dropped block, because the
    engine grows the network between epochs and steps get slower as training goes on.
    """
    return (index // BLOCK_STEPS + epoch) % 2 == 0


def timed_search(
    config: Any,
    on_event: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
    workdir: str,
    resume: bool,
) -> Any:
    """Run `bonsai.run_search` and write each step's end time to `$BONSAI_BENCH_STEPS_FILE`.

    Runs in the search process, as `BONSAI_SEARCH_FUNCTION`. Events emitted during a step
    that `is_recorded` rejects are dropped; events before the first step and after the
    last one are always sent. The file contains a JSON object: `steps`, one
    `[epoch, perf_counter seconds]` per training step, and `send_seconds` and `sent`, the
    time spent in the worker's `on_event` (the pipe send) and the events it sent.
    """
    # Imported by name, as worker/child.py does, so that mypy on backend leaves the engine out.
    bonsai: Any = importlib.import_module("bonsai")
    steps: list[tuple[int, float]] = []
    steps_in_epoch: dict[int, int] = {}
    sending = [0.0, 0]  # seconds spent in the worker's on_event, and events it sent

    def progress(epoch: int, _batch: int, _batches: int, _loss: float) -> None:
        steps.append((epoch, time.perf_counter()))
        steps_in_epoch[epoch] = steps_in_epoch.get(epoch, 0) + 1

    def send_or_drop(event: dict[str, Any]) -> None:
        # The events of step n of an epoch come before its progress call, so n steps of that
        # epoch have been counted when they are emitted.
        epoch = int(event["epoch"] or 0)
        step = steps_in_epoch.get(epoch, 0)
        if event["type"] not in ("batch", "pruner_snapshot") or is_recorded(epoch, step):
            start = time.perf_counter()
            on_event(event)
            sending[0] += time.perf_counter() - start
            sending[1] += 1

    result = bonsai.run_search(
        config,
        on_event=send_or_drop,
        should_stop=should_stop,
        workdir=workdir,
        resume=resume,
        progress=progress,
    )
    timings = {"steps": steps, "send_seconds": sending[0], "sent": sending[1]}
    Path(os.environ[STEPS_FILE_VAR]).write_text(json.dumps(timings))
    return result


def block_means(steps: list[list[float]]) -> list[tuple[int, bool, float]]:
    """Return (epoch, recorded, mean step seconds) of each block, in order.

    A step's time is the interval since the previous step of the same epoch, so the first
    step of an epoch (whose interval contains the previous epoch's evaluation) is left out,
    and so are the first `SKIPPED_STEPS` of each block.
    """
    durations: dict[tuple[int, int], list[float]] = {}
    index = 0
    for step in range(1, len(steps)):
        epoch = int(steps[step][0])
        index = index + 1 if epoch == steps[step - 1][0] else 0
        if index == 0 or index % BLOCK_STEPS < SKIPPED_STEPS:
            continue
        seconds = steps[step][1] - steps[step - 1][1]
        durations.setdefault((epoch, index // BLOCK_STEPS), []).append(seconds)
    return [
        (epoch, is_recorded(epoch, block * BLOCK_STEPS), statistics.fmean(values))
        for (epoch, block), values in sorted(durations.items())
    ]


def pair_ratios(blocks: list[tuple[int, bool, float]]) -> list[float]:
    """Return recorded / dropped mean step time for each adjacent pair in one epoch."""
    ratios: list[float] = []
    for first, second in zip(blocks, blocks[1:], strict=False):
        if first[0] != second[0] or first[1] == second[1]:
            continue
        recorded, dropped = (first, second) if first[1] else (second, first)
        ratios.append(recorded[2] / dropped[2])
    return ratios


@dataclass
class RunTimes:
    ratios: list[float]
    mean_step: float
    steps: int
    send_per_event: float
    # An upper bound of what recording takes from training where no core is free: the
    # worker's whole CPU time (its supervision included) plus the search process's time in
    # the pipe send, over the search process's CPU time.
    recording_cpu_share: float
    events_stored: int
    snapshots_stored: int


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _run_once(settings: Settings, db: Database, config: dict[str, Any], epochs: int) -> RunTimes:
    search_id = add_search(db, config, epochs)
    steps_file = settings.resolved_home / f"steps-{search_id}.json"
    store = create_store(settings.resolved_artifact_url, settings.s3_endpoint_url)
    child_env = {STEPS_FILE_VAR: str(steps_file)}
    worker_before = resource.getrusage(resource.RUSAGE_SELF)
    child_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_search_job(settings, db, store, search_id, f"bench-{search_id[:8]}", child_env)
    worker_after = resource.getrusage(resource.RUSAGE_SELF)
    child_after = resource.getrusage(resource.RUSAGE_CHILDREN)

    with db.read() as session:
        search = session.get_one(Search, search_id)
        if search.state != SearchState.SUCCEEDED:
            raise RuntimeError(
                f"benchmark search {search_id} ended {search.state}: {search.error}"
            )
        events = session.scalar(select(func.count()).where(Event.search_id == search_id))
        snapshots = session.scalar(
            select(func.count()).where(PrunerSnapshot.search_id == search_id)
        )
    timings = json.loads(steps_file.read_text())
    steps = timings["steps"]
    blocks = block_means(steps)
    return RunTimes(
        ratios=pair_ratios(blocks),
        mean_step=statistics.fmean(block[2] for block in blocks),
        steps=len(steps),
        send_per_event=timings["send_seconds"] / max(timings["sent"], 1),
        recording_cpu_share=(_cpu(worker_after) - _cpu(worker_before) + timings["send_seconds"])
        / (_cpu(child_after) - _cpu(child_before)),
        events_stored=events or 0,
        snapshots_stored=snapshots or 0,
    )


def measure_recording_cost(home: Path, database_url: str, quick: bool) -> BenchmarkRow:
    """Train searches that alternate recording and return the median step-time overhead.

    The overhead is recorded / dropped mean step time - 1, per pair of adjacent blocks,
    and the figure is its median over every pair of every search.
    """
    config = QUICK_CONFIG if quick else FULL_CONFIG
    epochs = QUICK_EPOCHS if quick else int(FULL_CONFIG["epochs"])
    searches = QUICK_SEARCHES if quick else FULL_SEARCHES
    settings = Settings(
        home=home,
        database_url=database_url,
        search_function=SEARCH_FUNCTION,
        search_threads=1,
        log_level="WARNING",
    )
    db = Database(database_url)
    try:
        runs = [_run_once(settings, db, config, epochs) for _ in range(searches)]
    finally:
        db.dispose()

    ratios = [ratio for run in runs for ratio in run.ratios]
    if not ratios:
        raise RuntimeError("the searches had too few steps for one recorded and dropped block")
    overhead = statistics.median(ratios) - 1
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    last = runs[-1]
    detail = (
        f"{config['preset']} preset, snapshot_every=1, {searches} search(es) of {last.steps} "
        f"steps alternating {BLOCK_STEPS}-step blocks with and without recording, "
        f"{len(ratios)} block pairs; mean step {last.mean_step * 1000:.1f} ms, pipe send "
        f"{last.send_per_event * 1e6:.0f} us an event; worker CPU + pipe send "
        f"{statistics.median(run.recording_cpu_share for run in runs):.1%} of the search's CPU "
        f"time; wall-clock overhead "
        f"quartiles {quartiles[0] - 1:+.1%} / {quartiles[1] - 1:+.1%} / {quartiles[2] - 1:+.1%}; "
        f"a search stored {last.events_stored} events, {last.snapshots_stored} pruner "
        f"snapshots ({database_url.split(':', 1)[0]})"
    )
    return make_row(
        "5a event recording costs the worker at most 3% of its step time",
        overhead * 100,
        "%",
        MAX_OVERHEAD * 100,
        overhead <= MAX_OVERHEAD,
        detail,
    )
