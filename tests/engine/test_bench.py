"""The pieces of `bonsai bench` at a minimal size: structure of results, never timings."""

import json
from pathlib import Path

import pytest
import torch

from bonsai import _bench_timing, bench
from bonsai._bench_targets import (
    BenchSize,
    load_naive,
    memory_model_target,
    pruning_target,
    retrained_model_target,
    throughput_target,
)
from bonsai.cli import build_parser

TINY = BenchSize(channels=4, cells=1, nodes=2, image=8, batch=4)
CPU = torch.device("cpu")
NAIVE = Path(__file__).resolve().parents[2] / bench.DEFAULT_NAIVE
RESULT_KEYS = {"target", "name", "ratio", "limit", "passed", "status", "details"}


def check_result(result: dict, target: int) -> None:
    assert set(result) == RESULT_KEYS
    assert result["target"] == target
    assert result["status"] in {"pass", "miss"}
    assert result["passed"] == (result["status"] == "pass")
    assert result["ratio"] > 0


def test_throughput_skipped_without_naive(tmp_path: Path) -> None:
    missing = tmp_path / "naive.py"
    result = throughput_target(None, missing, TINY, CPU, repeats=1, warmup=0)
    assert result["status"] == "skipped"
    assert result["passed"] is None
    assert result["details"]["reason"] == f"skipped: baseline not found at {missing}"


def test_load_naive_missing_file(tmp_path: Path) -> None:
    assert load_naive(tmp_path / "absent.py") is None


@pytest.mark.skipif(not NAIVE.is_file(), reason="the naive reference is not checked out")
def test_throughput_result_and_same_losses() -> None:
    result = throughput_target(load_naive(NAIVE), NAIVE, TINY, CPU, repeats=1, warmup=0)
    check_result(result, 1)
    details = result["details"]
    assert details["engine_images_per_second"] > 0
    assert details["naive_images_per_second"] > 0
    assert details["equivalence"]["same_losses"]
    assert len(details["equivalence"]["losses"]["engine"]) == 3


def test_pruning_results_deadhead() -> None:
    results = pruning_target(TINY, CPU, repeats=1, warmup=0)
    assert len(results) == 2
    for result in results:
        check_result(result, 2)
        details = result["details"]
        assert details["compression"] < 1
        assert details["pruners"] < details["hyper_connected_pruners"]
    assert results[1]["details"]["pruners"] <= results[0]["details"]["pruners"]


def test_memory_model_results_per_shape() -> None:
    results = memory_model_target(TINY, CPU)
    assert len(results) == 6
    for result in results:
        check_result(result, 3)
        assert result["details"]["predicted_bytes"] > 0
        assert result["details"]["measured_bytes"] > 0
    deadheaded = [r for r in results if r["name"].endswith("deadheaded")]
    assert all(r["details"]["compression"] < 1 for r in deadheaded)


def test_retrained_model_matches_hand_written() -> None:
    results = retrained_model_target(TINY, CPU, repeats=1, warmup=0)
    assert [r["name"].rsplit(", ", 1)[1] for r in results] == ["training", "inference"]
    for result in results:
        check_result(result, 4)
        assert result["details"]["max_output_difference"] <= 1e-5


def test_run_bench_report_is_json(tmp_path: Path) -> None:
    sizes = [(4, 1, 2, 8, 4)]
    report = bench.run_bench(sizes, {2, 4}, CPU, tmp_path / "absent.py", repeats=1, warmup=0)
    assert {"date", "machine", "device", "repeats", "results", "seconds"} <= set(report)
    assert {"nproc", "cpu", "torch", "threads", "c_kernels"} <= set(report["machine"])
    assert [r["target"] for r in report["results"]] == [2, 2, 4, 4]
    json.dumps(report)
    for result in report["results"]:
        assert result["status"] in bench.format_result(result)


def test_bench_subcommand_registered() -> None:
    args = build_parser().parse_args(["bench", "--quick", "--json", "out.json"])
    assert args.quick
    assert args.json == "out.json"
    assert args.handler.__module__ == "bonsai.bench"


class FakeEntryPoint:
    def __init__(self, name: str, run) -> None:
        self.name = name
        self._run = run

    def load(self):
        return self._run


def failing_run(quick: bool) -> list:
    raise RuntimeError("no database")


def test_plugin_benchmarks_rows_and_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    row = {
        "target": "5b stores rows",
        "value": 12000.0,
        "unit": "rows/s",
        "threshold": 10000.0,
        "passed": True,
        "detail": "sqlite",
    }
    entries = [
        FakeEntryPoint("service", lambda quick: [row]),
        FakeEntryPoint("broken", failing_run),
    ]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: entries)
    results = bench.run_plugin_benchmarks(quick=True)
    assert [r["name"] for r in results] == ["broken: broken benchmark", "service: 5b stores rows"]
    assert results[0]["status"] == "miss"
    assert "no database" in results[0]["details"]["detail"]
    assert results[1]["status"] == "pass"
    assert results[1]["ratio"] == 12000.0


class FakeClock:
    """A `time.perf_counter` that only the steps advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float, calls: list[str], name: str):
        def run() -> None:
            self.now += seconds
            calls.append(name)

        return run


def test_time_in_turn_repeats_short_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(_bench_timing, "perf_counter", clock)
    calls: list[str] = []
    steps = {"fast": clock.step(0.01, calls, "fast"), "slow": clock.step(0.02, calls, "slow")}
    times = _bench_timing.time_in_turn(steps, repeats=3, warmup=2, device=CPU, min_seconds=0.05)
    # The first warmup round runs each step once. The fastest took 0.01 s, so the second
    # warmup round and every timed round run each step 5 times.
    assert calls.count("fast") == 1 + 5 + 3 * 5
    assert calls.count("slow") == 1 + 5 + 3 * 5
    assert calls[-10:] == ["fast"] * 5 + ["slow"] * 5
    assert times["fast"] == pytest.approx([0.01] * 3)
    assert times["slow"] == pytest.approx([0.02] * 3)


def test_time_in_turn_runs_long_steps_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(_bench_timing, "perf_counter", clock)
    calls: list[str] = []
    steps = {"a": clock.step(0.2, calls, "a"), "b": clock.step(0.1, calls, "b")}
    times = _bench_timing.time_in_turn(steps, repeats=2, warmup=1, device=CPU, min_seconds=0.05)
    assert calls == ["a", "b"] * 3
    assert times == {"a": pytest.approx([0.2, 0.2]), "b": pytest.approx([0.1, 0.1])}
