"""How many pruner states per second `backend.ingest.store_events` stores on one back end.

Each timed batch is what the worker stores in one flush while a search records a
pruner_snapshot after every step: `STEPS_PER_FLUSH` batch events and as many snapshots,
written in one `Database.write()` transaction the way `worker.job.SearchJob._write_events`
writes them. Event construction is outside the timer; `finite()`, the ORM flush and the
commit are inside it.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

from backend._bench_common import BenchmarkRow, add_search, make_row, scratch_database
from backend.analysis import OPERATIONS
from backend.db import Database
from backend.ingest import store_events
from backend.models import Search, SearchState

MIN_RATE = 10_000.0
STEPS_PER_FLUSH = 8
QUICK_SIZES = (300, 3000)
FULL_SIZES = (300, 1000, 3000)
QUICK_ROUNDS = 2
FULL_ROUNDS = 8


def pruner_ids(count: int) -> list[str]:
    """Return `count` pruner ids in the engine's `c{cell}.e{source}_{target}.{op}` form."""
    ids: list[str] = []
    cell = 0
    while len(ids) < count:
        for target in range(2, 6):
            for source in range(target):
                for operation in OPERATIONS:
                    ids.append(f"c{cell}.e{source}_{target}.{operation}")
        cell += 1
    return ids[:count]


def flush_events(
    first_seq: int, epoch: int, ids: list[str], rng: random.Random
) -> list[dict[str, Any]]:
    """Build one flush's events: per step, a batch event and a pruner_snapshot of every id."""
    events: list[dict[str, Any]] = []
    now = time.time()
    for step in range(STEPS_PER_FLUSH):
        seq = first_seq + 2 * step
        events.append(
            {
                "seq": seq,
                "type": "batch",
                "time": now,
                "epoch": epoch,
                "data": {"index": step, "batches": STEPS_PER_FLUSH, "loss": rng.random()},
            }
        )
        pruners = [[pruner, rng.random() * 0.1, int(rng.random() < 0.8)] for pruner in ids]
        events.append(
            {
                "seq": seq + 1,
                "type": "pruner_snapshot",
                "time": now,
                "epoch": epoch,
                "data": {"pruners": pruners},
            }
        )
    return events


def _store_flush(db: Database, search_id: str, events: list[dict[str, Any]]) -> float:
    """Store one flush and return the seconds it took."""
    start = time.perf_counter()
    with db.write() as session:
        search = session.get_one(Search, search_id)
        store_events(session, search, 1, events)
    return time.perf_counter() - start


def ingest_rates(database_url: str, sizes: tuple[int, ...], rounds: int) -> dict[int, list[float]]:
    """Return, per snapshot size, the pruner states per second of each timed flush.

    The sizes take turns within each round, in an order that rotates between rounds.
    """
    rng = random.Random(0)
    ids = {size: pruner_ids(size) for size in sizes}
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    db = Database(database_url)
    try:
        search_id = add_search(db, {"preset": "tiny"}, 3, SearchState.RUNNING)
        seq = 0
        # One untimed flush first, so that connection set-up and statement caches are warm.
        _store_flush(db, search_id, flush_events(seq, 0, ids[sizes[0]], rng))
        seq += 2 * STEPS_PER_FLUSH
        for round_index in range(rounds):
            shift = round_index % len(sizes)
            for size in sizes[shift:] + sizes[:shift]:
                events = flush_events(seq, round_index, ids[size], rng)
                seq += len(events)
                seconds = _store_flush(db, search_id, events)
                rates[size].append(size * STEPS_PER_FLUSH / seconds)
    finally:
        db.dispose()
    return rates


def measure_ingest(
    backend_label: str, admin_url: str | None, directory: Path, quick: bool
) -> BenchmarkRow:
    """Measure one back end: a SQLite file in `directory` without `admin_url`, else PostgreSQL.

    The figure is the smallest, over snapshot sizes, of the median rate of that size.
    """
    sizes = QUICK_SIZES if quick else FULL_SIZES
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    with scratch_database(admin_url, directory) as url:
        rates = ingest_rates(url, sizes, rounds)
    medians = {size: statistics.median(values) for size, values in rates.items()}
    slowest = min(medians.values())
    detail = (
        f"{STEPS_PER_FLUSH} batch events + {STEPS_PER_FLUSH} pruner_snapshots per transaction, "
        f"{rounds} rounds; median pruner states/s by snapshot size: "
        + ", ".join(f"{size}: {rate:,.0f}" for size, rate in medians.items())
    )
    return make_row(
        f"5b the database stores at least 10,000 pruner states/s ({backend_label})",
        slowest,
        "pruner states/s",
        MIN_RATE,
        slowest >= MIN_RATE,
        detail,
    )
