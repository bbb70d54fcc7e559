"""The measurements behind `bonsai bench`, one function per target.

Each returns a JSON-ready dict with `target`, `name`, `ratio`, `limit`, `passed`
(None when skipped), `status` and `details`. Steps that are compared are timed
in turn in one process (`time_in_turn`), and a ratio is the median of the
rounds' ratios (`paired_ratio`).
"""

from __future__ import annotations

import copy
import importlib.util
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from bonsai._bench_handwritten import HandWrittenNetwork, fixed_genotype, hand_written_state
from bonsai._bench_timing import (
    inference_step,
    median,
    paired_ratio,
    time_in_turn,
    training_step,
)
from bonsai.cell import CellInput, SearchCell
from bonsai.memory import MemoryModel, measure_training_step
from bonsai.model import build_model
from bonsai.network import SearchNetwork
from bonsai.ops import OPERATION_NAMES
from bonsai.pruner import op_pruner_id
from bonsai.training import classification_loss

__all__ = [
    "BenchSize",
    "memory_model_target",
    "pruning_target",
    "retrained_model_target",
    "throughput_target",
]

THROUGHPUT_LIMIT = 2.5  # engine images/s over naive images/s, at least
PRUNING_SLACK = 0.15  # a pruned step costs at most (c + this) times the hyper-connected one
MEMORY_TOLERANCE = 0.10  # predicted memory within this fraction of the measured
MODEL_SLACK = 0.05  # discovered model at most this much slower than the hand-written one
LOSS_TOLERANCE = 1e-4  # relative difference of losses that still counts as the same
AUX_WEIGHT = 0.2
GATE_INIT = 0.1  # the naive reference's initial pruner weight
PRUNER_M = 1e5
IN_CHANNELS = 3
CLASSES = 10


@dataclass(frozen=True)
class BenchSize:
    """A network size: channels, normal cells, nodes per cell, image side, batch."""

    channels: int
    cells: int
    nodes: int
    image: int
    batch: int

    def label(self) -> str:
        return (
            f"{self.channels} channels, {self.cells} cells, {self.nodes} nodes, "
            f"{self.image}x{self.image}, batch {self.batch}"
        )


def _result(
    target: int, name: str, ratio: float | None, limit: str, passed: bool | None, **details: Any
) -> dict[str, Any]:
    if passed is None:
        status = "skipped"
    else:
        status = "pass" if passed else "miss"
    return {
        "target": target,
        "name": name,
        "ratio": ratio,
        "limit": limit,
        "passed": passed,
        "status": status,
        "details": details,
    }


def _batch(size: BenchSize, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.randn(size.batch, IN_CHANNELS, size.image, size.image, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _search_network(size: BenchSize, sections: list[tuple[str, ...]]) -> SearchNetwork:
    net = SearchNetwork(
        IN_CHANNELS,
        size.image,
        CLASSES,
        size.channels,
        size.channels,
        size.nodes,
        OPERATION_NAMES,
        GATE_INIT,
        PRUNER_M,
    )
    for types in sections:
        net.add_section(types)
    return net


def _to(net: nn.Module, device: torch.device) -> nn.Module:
    return net.to(device).to(memory_format=torch.channels_last)


# -- target 1: throughput against the naive hypernet ------------------------------------


def load_naive(path: Path) -> ModuleType | None:
    """Import the naive reference from `path`, or return None when the file is missing."""
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("bonsai_bench_naive", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the naive reference from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def throughput_target(
    naive: ModuleType | None,
    naive_path: Path,
    size: BenchSize,
    device: torch.device,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Training images per second of the engine's hyper-connected network over the naive one's.

    The engine's network is a `SearchNetwork` of `size.cells` normal cells in one
    section, channels-last, as a search trains it. It also computes input
    adapters and a tower that the naive network lacks. The naive network runs
    as its file writes it.
    """
    name = "training throughput against the naive hypernet"
    if naive is None:
        return _result(
            1, name, None, f">= {THROUGHPUT_LIMIT}", None,
            size=asdict(size), reason=f"skipped: baseline not found at {naive_path}",
        )  # fmt: skip
    torch.manual_seed(0)
    labels = torch.randint(0, CLASSES, (size.batch,), device=device)
    naive_net = naive.Net(size.channels, size.cells, size.nodes).to(device)
    engine_net = _to(_search_network(size, [("normal",) * size.cells]), device)
    x = _batch(size, device, channels_last=False)
    steps = {
        "engine": training_step(
            engine_net,
            x.contiguous(memory_format=torch.channels_last),
            lambda logits: classification_loss(logits, labels, AUX_WEIGHT),
        ),
        "naive": training_step(
            naive_net, x, lambda logits: nn.functional.cross_entropy(logits, labels)
        ),
    }
    times = time_in_turn(steps, repeats, warmup, device)
    engine_rate = size.batch / median(times["engine"])
    naive_rate = size.batch / median(times["naive"])
    ratio = paired_ratio(times["naive"], times["engine"])  # images/s of engine over naive
    equivalence = cell_equivalence(naive, size, device)
    passed = ratio >= THROUGHPUT_LIMIT and equivalence["same_losses"]
    return _result(
        1,
        name,
        ratio,
        f">= {THROUGHPUT_LIMIT} and the same losses",
        passed,
        size=asdict(size),
        engine_images_per_second=engine_rate,
        naive_images_per_second=naive_rate,
        engine_step_seconds=times["engine"],
        naive_step_seconds=times["naive"],
        equivalence=equivalence,
    )


def cell_equivalence(
    naive: ModuleType, size: BenchSize, device: torch.device, steps: int = 3
) -> dict[str, Any]:
    """Train a naive `Cell` and the engine's cell from the same weights; compare the losses.

    The engine's `SearchCell.forward_nodes` (the per-cell computation `run_nodes`)
    gets the naive cell's weights and gate weights, random and partly negative
    so that some gates are off. Both train for `steps` SGD steps on the same
    inputs and targets, with a mean-squared-error loss. The naive file's average
    pooling counts the zero padding while the engine's (DARTS's) does not, so
    the naive cell's average-pooling modules are switched to
    `count_include_pad=False` for this comparison only.
    """
    torch.manual_seed(1)
    channels, nodes, image, batch = size.channels, size.nodes, min(size.image, 8), 8
    reference = naive.Cell(channels, nodes).to(device)
    source = CellInput("stem", channels, image)
    cell = SearchCell(
        0, "normal", 0, nodes, channels, image, source, [source],
        OPERATION_NAMES, GATE_INIT, PRUNER_M,
    )  # fmt: skip
    cell = _to(cell, device)
    _copy_naive_weights(reference, cell)
    inputs = [torch.randn(batch, channels, image, image, device=device) for _ in range(3)]
    x0, x1, goal = inputs

    def engine_forward() -> torch.Tensor:
        fmt = torch.channels_last
        out = cell.forward_nodes(
            x0.contiguous(memory_format=fmt), x1.contiguous(memory_format=fmt)
        )
        return nn.functional.mse_loss(out, goal)

    def naive_forward() -> torch.Tensor:
        return nn.functional.mse_loss(reference(x0, x1), goal)

    losses: dict[str, list[float]] = {"engine": [], "naive": []}
    for name, module, forward in (
        ("engine", cell, engine_forward),
        ("naive", reference, naive_forward),
    ):
        optimizer = torch.optim.SGD(module.parameters(), 0.05, momentum=0.9)
        module.train()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
            optimizer.step()
            losses[name].append(float(loss.detach()))
    differences = [
        abs(a - b) / max(abs(b), 1e-12)
        for a, b in zip(losses["engine"], losses["naive"], strict=True)
    ]
    return {
        "losses": losses,
        "max_relative_difference": max(differences),
        "tolerance": LOSS_TOLERANCE,
        "same_losses": max(differences) <= LOSS_TOLERANCE,
    }


def _copy_naive_weights(reference: nn.Module, cell: SearchCell) -> None:
    """Copy a naive `Cell`'s weights into `cell`; naive node j is engine node j + 2."""
    generator = torch.Generator().manual_seed(2)
    index = {pruner_id: i for i, pruner_id in enumerate(cell.pruner_ids)}
    weights = cell.weights.detach().clone()
    with torch.no_grad():
        for key, edge in reference.edges.items():
            source, target = (int(part) + 2 for part in key.split("_"))
            for op, module, gate in zip(OPERATION_NAMES, edge.ops, edge.gates, strict=True):
                gate.w.copy_(torch.empty(()).uniform_(-0.3, 0.7, generator=generator))
                weights[index[op_pruner_id(cell.index, source, target, op)]] = gate.w
                if isinstance(module, nn.AvgPool2d):
                    module.count_include_pad = False
                if not isinstance(module, nn.Sequential):
                    continue
                # The naive module starts with its own ReLU; the engine's shares one per node.
                ours = cell.convs[f"e{source}_{target}_{op}"]
                ours.load_state_dict(nn.Sequential(*list(module)[1:]).state_dict())
        cell.weights.copy_(weights)


# -- target 2: pruning pays --------------------------------------------------------------


def deadhead_to(net: SearchNetwork, compression: float, seed: int) -> float:
    """Deadhead random connections (`SearchCell.remove_pruners`) to `compression` per cell.

    Returns the network's memory compression: the live connections' sizes over
    their sizes before pruning, summed over the cells.
    """
    rng = random.Random(seed)
    for cell in net.cells:
        order = list(cell.pruner_ids)
        rng.shuffle(order)
        for pruner_id in order:
            if cell.live_size() <= compression * cell.initial_size:
                break
            if pruner_id in cell.pruner_ids:
                cell.remove_pruners([pruner_id])
    return network_compression(net)


def network_compression(net: SearchNetwork) -> float:
    initial = sum(cell.initial_size for cell in net.cells)
    return sum(cell.live_size() for cell in net.cells) / initial if initial > 0 else 1.0


def pruning_target(
    size: BenchSize, device: torch.device, repeats: int, warmup: int
) -> list[dict[str, Any]]:
    """Training step of deadheaded networks against the hyper-connected one, at c = 0.5, 0.25."""
    torch.manual_seed(0)
    memory = MemoryModel(size.batch, device, channels_last=True)
    hyper = _search_network(size, [("normal",) * size.cells])
    for cell in hyper.cells:
        memory.assign_sizes(cell)
    nets = {"hyper-connected": hyper}
    reached = {}
    for goal in (0.5, 0.25):
        pruned = copy.deepcopy(hyper)
        reached[goal] = deadhead_to(pruned, goal, seed=int(goal * 100))
        nets[f"c={goal}"] = pruned

    x = _batch(size, device, channels_last=True)
    labels = torch.randint(0, CLASSES, (size.batch,), device=device)
    steps = {
        name: training_step(
            _to(net, device), x, lambda logits: classification_loss(logits, labels, AUX_WEIGHT)
        )
        for name, net in nets.items()
    }
    times = time_in_turn(steps, repeats, warmup, device)

    results = []
    for goal, compression in reached.items():
        ratio = paired_ratio(times[f"c={goal}"], times["hyper-connected"])
        limit = compression + PRUNING_SLACK
        results.append(
            _result(
                2,
                f"pruning pays at memory compression {compression:.2f}",
                ratio,
                f"<= c + {PRUNING_SLACK} = {limit:.2f}",
                ratio <= limit,
                size=asdict(size),
                requested_compression=goal,
                compression=compression,
                pruners=sum(len(c.pruner_ids) for c in nets[f"c={goal}"].cells),
                hyper_connected_pruners=sum(len(c.pruner_ids) for c in hyper.cells),
                step_seconds=times[f"c={goal}"],
                hyper_connected_step_seconds=times["hyper-connected"],
            )
        )
    return results


# -- target 3: the memory model's accuracy ----------------------------------------------


def memory_shapes(size: BenchSize) -> list[tuple[str, int, list[tuple[str, ...]]]]:
    """Three section shapes: (label, nodes, sections)."""
    return [
        ("N", 3, [("normal",)]),
        ("NN,R", 3, [("normal", "normal"), ("reduction",)]),
        ("N,R,N", size.nodes, [("normal",), ("reduction",), ("normal",)]),
    ]


def memory_model_target(size: BenchSize, device: torch.device) -> list[dict[str, Any]]:
    """Predicted training memory (`MemoryModel.network_bytes`) over one measured step.

    Every shape is measured hyper-connected and deadheaded to a compression of
    about 0.5. On CUDA the measured figure is the rise of peak allocated memory.
    """
    results = []
    for label, nodes, sections in memory_shapes(size):
        shape = BenchSize(size.channels, 0, nodes, size.image, size.batch)
        torch.manual_seed(0)
        net = _search_network(shape, sections)
        memory = MemoryModel(size.batch, device, channels_last=True)
        for cell in net.cells:
            memory.assign_sizes(cell)
        for state in ("hyper-connected", "deadheaded"):
            compression = 1.0
            if state == "deadheaded":
                compression = deadhead_to(net, 0.5, seed=len(label))
            net = _to(net, device)
            x = _batch(shape, device, channels_last=True)
            labels = torch.randint(0, CLASSES, (size.batch,), device=device)
            predicted = memory.network_bytes(net)
            measured = measure_training_step(
                net, x, lambda logits, y=labels: classification_loss(logits, y, AUX_WEIGHT)
            )
            net.zero_grad(set_to_none=True)
            ratio = predicted / measured
            results.append(
                _result(
                    3,
                    f"memory model, sections {label}, {state}",
                    ratio,
                    f"within 1 +- {MEMORY_TOLERANCE}",
                    abs(ratio - 1) <= MEMORY_TOLERANCE,
                    channels=size.channels,
                    nodes=nodes,
                    image=size.image,
                    batch=size.batch,
                    compression=compression,
                    predicted_bytes=predicted,
                    measured_bytes=measured,
                    device=device.type,
                )
            )
    return results


# -- target 4: the discovered model has no pruner overhead -------------------------------


def retrained_model_target(
    size: BenchSize, device: torch.device, repeats: int, warmup: int
) -> list[dict[str, Any]]:
    """Discovered model (`build_model`) against the hand-written network: training, inference."""
    torch.manual_seed(0)
    genotype = fixed_genotype(size.channels, size.image, IN_CHANNELS)
    discovered = _to(build_model(genotype), device)
    hand = _to(HandWrittenNetwork(size.channels, size.image, IN_CHANNELS), device)
    hand.load_state_dict(hand_written_state(discovered.state_dict()), strict=True)
    x = _batch(size, device, channels_last=True)
    labels = torch.randint(0, CLASSES, (size.batch,), device=device)
    discovered.eval()
    hand.eval()
    with torch.no_grad():
        difference = float((discovered(x)[-1] - hand(x)[-1]).abs().max())

    def loss(logits: list[torch.Tensor]) -> torch.Tensor:
        return classification_loss(logits, labels, AUX_WEIGHT)

    results = []
    for mode in ("training", "inference"):
        if mode == "training":
            steps = {"discovered": training_step(discovered, x, loss)}
            steps["hand-written"] = training_step(hand, x, loss)
        else:
            steps = {"discovered": inference_step(discovered, x)}
            steps["hand-written"] = inference_step(hand, x)
        times = time_in_turn(steps, repeats, warmup, device)
        ratio = paired_ratio(times["discovered"], times["hand-written"])
        results.append(
            _result(
                4,
                f"discovered model against hand-written, {mode}",
                ratio,
                f"<= {1 + MODEL_SLACK}",
                ratio <= 1 + MODEL_SLACK,
                size={"channels": size.channels, "image": size.image, "batch": size.batch},
                parameters=discovered.count_parameters(),
                max_output_difference=difference,
                step_seconds=times["discovered"],
                hand_written_step_seconds=times["hand-written"],
            )
        )
    return results
