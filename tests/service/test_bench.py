"""The service benchmarks at their smallest sizes: the rows they return, never their timings."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from backend import _bench_ingest, _bench_stream, _bench_worker
from backend._bench_common import BenchmarkRow, make_row, percentile, scratch_database
from backend.bench import format_table

from .databases import backend_names
from .helpers import DATABASE_URL_VAR

ROW_KEYS = {"target", "value", "unit", "threshold", "passed", "detail"}


def check_row(row: BenchmarkRow, target_prefix: str) -> None:
    assert set(row) == ROW_KEYS
    assert row["target"].startswith(target_prefix)
    assert isinstance(row["value"], float)
    assert math.isfinite(row["value"])
    assert isinstance(row["threshold"], float)
    assert isinstance(row["passed"], bool)
    assert row["unit"]
    assert row["detail"]
    assert not row["detail"].startswith("not measured")


def admin_url(backend: str) -> str | None:
    return os.environ[DATABASE_URL_VAR] if backend == "postgres" else None


def test_percentile_nearest_rank() -> None:
    values = [float(value) for value in range(1, 21)]
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 1.0) == 20.0
    assert percentile([3.0], 0.95) == 3.0


def test_percentile_rejects_no_values() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_block_means_skip_epoch_and_block_starts() -> None:
    block = _bench_worker.BLOCK_STEPS
    # Two epochs of two blocks each. The skipped first steps of each block take 100 s and
    # every other step 1 s, so each block's mean is 1 s only if the skipped ones are left out.
    steps: list[list[float]] = []
    now = 0.0
    for epoch in range(2):
        for index in range(2 * block):
            now += 100.0 if index % block < _bench_worker.SKIPPED_STEPS else 1.0
            steps.append([epoch, now])
    blocks = _bench_worker.block_means(steps)
    assert [(epoch, recorded) for epoch, recorded, _mean in blocks] == [
        (0, True),
        (0, False),
        (1, False),
        (1, True),
    ]
    assert [mean for _epoch, _recorded, mean in blocks] == [1.0, 1.0, 1.0, 1.0]


def test_pair_ratios_stay_within_epoch() -> None:
    blocks = [(0, True, 1.1), (0, False, 1.0), (1, False, 2.0), (1, True, 3.0)]
    assert _bench_worker.pair_ratios(blocks) == pytest.approx([1.1, 1.5])


def test_pruner_ids_unique_engine_form() -> None:
    ids = _bench_ingest.pruner_ids(3000)
    assert len(ids) == 3000
    assert len(set(ids)) == 3000
    assert ids[0] == "c0.e0_2.identity"


def test_format_table_lists_each_row() -> None:
    rows = [
        make_row("5b stores enough", 12_000.0, "pruner states/s", 10_000.0, True, "fast"),
        make_row("5c reaches clients", None, "s", 1.0, False, "not measured: no server"),
    ]
    table = format_table(rows)
    assert "12,000.000" in table
    assert "pass" in table
    assert "miss" in table
    assert "5c reaches clients: not measured: no server" in table


def test_recording_cost_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 12 batches an epoch over 3 epochs: two blocks and so one timed pair per epoch.
    monkeypatch.setitem(_bench_worker.QUICK_CONFIG, "max_train_images", 384)
    with scratch_database(None, tmp_path) as url:
        row = _bench_worker.measure_recording_cost(tmp_path, url, quick=True)
    check_row(row, "5a")
    assert "pruner snapshots" in row["detail"]


@pytest.mark.parametrize("backend", backend_names())
def test_ingest_row(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bench_ingest, "QUICK_SIZES", (300,))
    monkeypatch.setattr(_bench_ingest, "QUICK_ROUNDS", 1)
    row = _bench_ingest.measure_ingest(backend, admin_url(backend), tmp_path, quick=True)
    check_row(row, "5b")
    assert "300:" in row["detail"]


def test_ingest_rates_count_every_flush(tmp_path: Path) -> None:
    with scratch_database(None, tmp_path) as url:
        rates = _bench_ingest.ingest_rates(url, (10, 20), rounds=3)
    assert sorted(rates) == [10, 20]
    assert all(len(values) == 3 for values in rates.values())
    assert all(rate > 0 for values in rates.values() for rate in values)


@pytest.mark.parametrize("backend", backend_names())
def test_stream_latency_row(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bench_stream, "QUICK_SECONDS", 1.0)
    url = admin_url(backend)
    if url is None:
        row = _bench_stream.measure_stream_latency(backend, tmp_path, None, quick=True)
    else:
        with scratch_database(url, tmp_path) as database_url:
            row = _bench_stream.measure_stream_latency(backend, tmp_path, database_url, True)
    check_row(row, "5c")
    assert "20 streams open" in row["detail"]
    assert ", 0 missing" in row["detail"]
