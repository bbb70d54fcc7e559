import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bonsai
from bonsai import native
from bonsai import search as search_module
from bonsai.events import EVENT_TYPES
from bonsai.search import _Search


def test_events_have_the_documented_shape(tiny_search) -> None:
    for event in tiny_search.events:
        assert set(event) == {"seq", "type", "time", "epoch", "data"}
        assert event["type"] in EVENT_TYPES
        assert isinstance(event["data"], dict)
        json.dumps(event, allow_nan=False)  # no NaN or infinity anywhere
    seqs = [e["seq"] for e in tiny_search.events]
    assert seqs == list(range(len(seqs)))


def test_events_file_matches_callback(tiny_search) -> None:
    lines = (tiny_search.workdir / "events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == tiny_search.events


def test_event_order(tiny_search) -> None:
    types = [e["type"] for e in tiny_search.events]
    assert types[0] == "search_started"
    assert types[1] == "section_added"
    assert types[-1] == "finished"
    assert tiny_search.events[-1]["data"]["state"] == "succeeded"


def test_search_grows_all_sections(tiny_search) -> None:
    added = tiny_search.of_type("section_added")
    assert [e["data"]["section"] for e in added] == [0, 1, 2]
    starts = [e["data"]["start_epoch"] for e in added]
    assert starts == sorted(starts)
    assert starts[-1] < tiny_search.config.epochs


def test_epoch_total_is_fixed(tiny_search) -> None:
    epochs = [e["epoch"] for e in tiny_search.of_type("epoch_end")]
    assert epochs == list(range(tiny_search.config.epochs))


def test_section_added_lists_every_pruner(tiny_search) -> None:
    first = tiny_search.of_type("section_added")[0]["data"]["cells"][0]
    nodes = first["nodes"]
    ops = len(tiny_search.config.ops)
    edges = sum(target for target in range(2, nodes + 2))
    assert len([p for p in first["pruners"] if p["kind"] == "op"]) == edges * ops
    assert [p["source"] for p in first["pruners"] if p["kind"] == "input1"] == ["stem"]


def test_started_event_states_c_kernels(tiny_search) -> None:
    started = tiny_search.of_type("search_started")[0]["data"]
    # A CPU search trains on one thread, where the kernels run whenever they are built.
    if not native._enabled():
        expected = "off (BONSAI_NATIVE)"
    elif native.available():
        expected = "on"
    else:
        expected = "off (not built, see the warning above)"
    assert started["c_kernels"] == expected


def test_growth_phases_have_targets_final_has_none(tiny_search) -> None:
    ends = tiny_search.of_type("epoch_end")
    started = tiny_search.of_type("search_started")[0]["data"]
    assert started["targets"][-1] is None
    assert all(0 < t <= 1 for t in started["targets"][:-1])
    last = ends[-1]["data"]
    assert last["section"] == 2
    assert all(t is None for t in last["targets"])
    assert last["lambda"] == 0.0
    growth = [e["data"] for e in ends if e["data"]["section"] < 2]
    assert growth
    assert all(d["targets"][0] == started["targets"][d["section"]] for d in growth)


def test_growth_meets_targets_before_next_section(tiny_search) -> None:
    ends = tiny_search.of_type("epoch_end")
    added = tiny_search.of_type("section_added")
    targets = tiny_search.of_type("search_started")[0]["data"]["targets"]
    for section_event in added[1:]:
        start = section_event["data"]["start_epoch"]
        previous = ends[start - 1]["data"]
        forced = [
            e
            for e in tiny_search.of_type("deadheaded")
            if e["epoch"] == start - 1 and e["data"]["reason"] == "forced"
        ]
        target = targets[previous["section"]]
        assert forced or all(c <= target + 1e-3 for c in previous["compression"])


def test_search_deadheads_connections(tiny_search) -> None:
    deadheaded = tiny_search.of_type("deadheaded")
    assert deadheaded
    removed = [p for e in deadheaded for p in e["data"]["pruner_ids"]]
    assert len(removed) == len(set(removed))
    final = tiny_search.result.genotype
    live = {
        op["pruner"] for cell in final["cells"] for edge in cell["edges"] for op in edge["ops"]
    }
    assert not live & set(removed)
    assert tiny_search.of_type("epoch_end")[-1]["data"]["deadheaded_total"] > 0


def test_snapshots_cover_live_pruners(tiny_search) -> None:
    snapshots = tiny_search.of_type("pruner_snapshot")
    assert len(snapshots) >= tiny_search.config.epochs
    for snapshot in snapshots:
        for pruner_id, weight, gate in snapshot["data"]["pruners"]:
            assert isinstance(pruner_id, str)
            assert gate == (1 if weight > 0 else 0)


def test_epoch_end_reports_memory_and_rates(tiny_search) -> None:
    for event in tiny_search.of_type("epoch_end"):
        data = event["data"]
        assert data["memory_measured"] > 0
        assert (
            abs(data["memory_predicted"] - data["memory_measured"])
            <= 0.1 * data["memory_measured"]
        )
        assert data["budget"] > 0
        assert data["lr"] > 0
        assert 0 <= data["test_accuracy"] <= 100


def test_state_written_every_epoch(tiny_search) -> None:
    written = [
        e for e in tiny_search.of_type("checkpoint_written") if e["data"]["kind"] == "state"
    ]
    assert len(written) >= tiny_search.config.epochs
    state = torch.load(tiny_search.workdir / "state.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == tiny_search.config.epochs


def test_checkpoint_loads_weights_only_strict(tiny_search) -> None:
    payload = torch.load(
        tiny_search.workdir / "checkpoint.pt", map_location="cpu", weights_only=True
    )
    model = bonsai.build_model(bonsai.load_genotype(payload["genotype"]))
    model.load_state_dict(payload["state_dict"], strict=True)
    assert payload["test_accuracy"] == pytest.approx(tiny_search.result.test_accuracy)


def test_checkpoint_accuracy_in_fresh_process(tiny_search) -> None:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "bonsai.cli",
            "evaluate",
            str(tiny_search.workdir / "checkpoint.pt"),
            "--dataset",
            "digits",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    accuracy = float(output.strip().removeprefix("test accuracy: ").removesuffix("%"))
    assert abs(accuracy - tiny_search.result.test_accuracy) <= 0.1


def test_genotype_file_matches_result(tiny_search) -> None:
    genotype = bonsai.load_genotype(tiny_search.workdir / "genotype.json")
    assert genotype.data == tiny_search.result.genotype
    assert genotype.data["search"]["test_accuracy"] == pytest.approx(
        tiny_search.result.test_accuracy
    )


def test_resumed_search_matches_uninterrupted(tiny_search, tmp_path: Path) -> None:
    batches = {"count": 0}

    def stop_in_second_epoch() -> bool:
        batches["count"] += 1
        return batches["count"] > 11  # the tiny preset has 8 batches an epoch

    events: list[dict] = []
    first = bonsai.run_search(tiny_search.config, events.append, stop_in_second_epoch, tmp_path)
    assert first.state == "cancelled"
    assert events[-1]["data"] == {"state": "cancelled"}
    resumed_events: list[dict] = []
    second = bonsai.run_search(
        tiny_search.config, resumed_events.append, None, tmp_path, resume=True
    )
    assert second.state == "succeeded"
    assert second.genotype is not None
    expected = tiny_search.result.genotype
    assert _structure(second.genotype) == _structure(expected)
    assert second.test_accuracy == pytest.approx(tiny_search.result.test_accuracy, abs=1e-6)
    state_seq = [e for e in events if e["type"] == "checkpoint_written"][-1]["seq"]
    # The resumed run starts at the seq of the state's checkpoint_written event.
    assert resumed_events[0]["seq"] == state_seq


def test_event_log_complete_at_each_state(
    tiny_search, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """events.jsonl contains every event emitted so far whenever state.pt is written.

    A worker killed before storing those events stores them from the log when
    the search resumes from that state. A process killed right after the write
    cannot be produced on cue, so the check runs inside the write instead.
    """
    events: list[dict] = []
    logged_at_save: list[tuple[list[int], int]] = []
    original_save = search_module.atomic_save

    def save_after_checking(state, path: Path) -> None:
        if path.name == "state.pt":
            lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()
            logged_at_save.append(([json.loads(line)["seq"] for line in lines], len(events)))
        original_save(state, path)

    monkeypatch.setattr(search_module, "atomic_save", save_after_checking)
    result = bonsai.run_search(tiny_search.config, events.append, workdir=tmp_path)
    assert result.state == "succeeded"
    assert logged_at_save
    for logged, emitted in logged_at_save:
        assert logged == list(range(emitted))


def _structure(genotype: dict) -> list:
    return [
        (
            cell["index"],
            [t["source"] for t in cell["input1"]],
            [(e["source"], e["target"], [o["op"] for o in e["ops"]]) for e in cell["edges"]],
        )
        for cell in genotype["cells"]
    ]


def test_resume_without_state_rejected(tmp_path: Path) -> None:
    with pytest.raises(bonsai.ConfigError, match="no search state"):
        bonsai.run_search(bonsai.make_config("tiny", device="cpu"), workdir=tmp_path, resume=True)


def test_resume_with_other_config_rejected(tiny_search) -> None:
    other = tiny_search.config.replace(channels=6)
    with pytest.raises(bonsai.ConfigError, match="differs"):
        bonsai.run_search(other, workdir=tiny_search.workdir, resume=True)


def test_diverged_loss_fails_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real loss cannot be made to diverge on demand, so one is replaced by NaN.
    real = search_module.classification_loss
    calls = {"count": 0}

    def diverging(logits, labels, weight):
        calls["count"] += 1
        loss = real(logits, labels, weight)
        return loss * math.nan if calls["count"] == 3 else loss

    monkeypatch.setattr(search_module, "classification_loss", diverging)
    events: list[dict] = []
    result = bonsai.run_search(
        bonsai.make_config("tiny", device="cpu"), events.append, workdir=tmp_path
    )
    assert result.state == "failed"
    assert "diverged" in (result.error or "")
    assert events[-1]["type"] == "failed"
    assert "diverged" in events[-1]["data"]["reason"]


def test_forced_cut_meets_target(tmp_path: Path) -> None:
    # With a zero gate learning rate nothing closes by itself, so every growth
    # phase must end by cutting the smallest gates.
    config = bonsai.make_config("tiny", device="cpu", gate_lr=0.0)
    events: list[dict] = []
    result = bonsai.run_search(config, events.append, workdir=tmp_path)
    assert result.state == "succeeded"
    forced = [e for e in events if e["type"] == "deadheaded" and e["data"]["reason"] == "forced"]
    assert len(forced) == 2
    targets = [e for e in events if e["type"] == "search_started"][0]["data"]["targets"]
    genotype = result.genotype
    assert genotype is not None
    first_cell = genotype["cells"][0]
    assert first_cell["compression"] <= targets[1] + 1e-3
    # The target is never met while learning, so lambda doubles every period (one
    # batch here, 8 a epoch) and starts again from lambda_init in the next cycle.
    lambdas = [e["data"]["lambda"] for e in events if e["type"] == "epoch_end"]
    assert lambdas[0] == pytest.approx(config.lambda_init * 2**8)
    assert lambdas[1] == pytest.approx(config.lambda_init * 2**8)


def test_cpu_run_makes_no_cuda_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.cuda was called on a CPU run")

    for name in (
        "is_available",
        "max_memory_allocated",
        "memory_allocated",
        "reset_peak_memory_stats",
        "synchronize",
        "device_count",
        "empty_cache",
    ):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    config = bonsai.make_config("tiny", device="cpu", epochs=3, max_train_images=64)
    result = bonsai.run_search(config, workdir=tmp_path)
    assert result.state == "succeeded", result.error


def test_optimizer_groups_follow_the_model(tmp_path: Path) -> None:
    config = bonsai.make_config("tiny", device="cpu")
    search = _Search(config, tmp_path, None, None)
    result = search.run(False)
    assert result.state == "succeeded"
    weights, gates = search.optimizer.param_groups
    assert gates["weight_decay"] == 0.0
    assert weights["weight_decay"] == config.weight_decay
    grouped = [id(p) for group in search.optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in search.net.parameters())
    assert len(grouped) == len(set(grouped))
    live = {id(p) for p in search.net.parameters()}
    assert all(id(p) in live for p in search.optimizer.state)
    # Every parameter, those of the last section too, has been trained.
    assert all(p in search.optimizer.state for p in search.net.parameters())


def test_should_stop_cancels_between_batches(tmp_path: Path) -> None:
    events: list[dict] = []
    result = bonsai.run_search(
        bonsai.make_config("tiny", device="cpu"), events.append, lambda: True, tmp_path
    )
    assert result.state == "cancelled"
    assert [e["type"] for e in events][-1] == "finished"
    assert not [e for e in events if e["type"] == "batch"]


def test_baseline_level2_random_at_final_compression(tiny_search, tmp_path: Path) -> None:
    config = bonsai.make_config(
        "tiny", device="cpu", baseline=2, reference=str(tiny_search.workdir)
    )
    events: list[dict] = []
    result = bonsai.run_search(config, events.append, workdir=tmp_path)
    assert result.state == "succeeded", result.error
    assert not [e for e in events if e["type"] == "deadheaded"]
    added = [e for e in events if e["type"] == "section_added"]
    assert len(added) == 3
    assert all(e["data"]["start_epoch"] == 0 for e in added)
    target = tiny_search.result.genotype["compression"]
    for cell in result.genotype["cells"]:
        assert cell["compression"] <= target + 0.2
    assert all(e["data"]["targets"][0] is None for e in events if e["type"] == "epoch_end")


def test_baseline_level1_keeps_last_section_whole(tiny_search, tmp_path: Path) -> None:
    config = bonsai.make_config(
        "tiny", device="cpu", baseline=1, reference=str(tiny_search.workdir)
    )
    events: list[dict] = []
    result = bonsai.run_search(config, events.append, workdir=tmp_path)
    assert result.state == "succeeded", result.error
    added = [e for e in events if e["type"] == "section_added"]
    last_cells = added[-1]["data"]["cells"]
    first_cells = added[0]["data"]["cells"]
    hyper = len(config.ops) * sum(range(2, config.nodes + 2))
    assert all(len([p for p in c["pruners"] if p["kind"] == "op"]) == hyper for c in last_cells)
    assert all(len([p for p in c["pruners"] if p["kind"] == "op"]) < hyper for c in first_cells)


def test_baseline_without_reference_search_rejected(tmp_path: Path) -> None:
    config = bonsai.make_config("tiny", device="cpu", baseline=2, reference=str(tmp_path))
    with pytest.raises(bonsai.ConfigError, match="holds no finished search"):
        bonsai.run_search(config, workdir=tmp_path / "out")


def test_sanitize_replaces_non_finite() -> None:
    from bonsai.events import sanitize

    cleaned = sanitize({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": torch.tensor(2.0)})
    assert cleaned == {"a": None, "b": [None, None, 1.5], "c": 2.0}
