import random

import pytest
import torch
import torch.nn.functional as F

from bonsai.memory import MemoryModel, SectionFitError, measure_training_step, plan_budget
from bonsai.network import SearchNetwork
from bonsai.ops import OPERATION_NAMES

SECTIONS = [("normal", "normal"), ("reduction",), ("normal",)]


def build(channels=4, nodes=2, sections=SECTIONS) -> SearchNetwork:
    torch.manual_seed(0)
    net = SearchNetwork(1, 8, 10, channels, channels, nodes, OPERATION_NAMES, 0.05, 1e5)
    for types in sections:
        net.add_section(types)
    return net


def measured(net: SearchNetwork, batch: int) -> int:
    x = torch.randn(batch, 1, 8, 8)
    y = torch.randint(0, 10, (batch,))
    total = measure_training_step(
        net, x, lambda logits: sum(F.cross_entropy(o, y) for o in logits)
    )
    net.zero_grad(set_to_none=True)
    return total


def test_sizes_cached_per_shape() -> None:
    memory = MemoryModel(8)
    first = memory.operation("sep_conv_3x3", 4, 8)
    count = memory.measurements
    again = memory.operation("sep_conv_3x3", 4, 8)
    other = memory.operation("sep_conv_3x3", 4, 4)
    assert again is first
    assert memory.measurements == count + 1
    assert other.alone < first.alone


def test_identity_costs_nothing_convs_cost_most() -> None:
    memory = MemoryModel(8)
    sizes = {op: memory.operation(op, 4, 8).alone for op in OPERATION_NAMES}
    assert sizes["identity"] == 0
    assert 0 < sizes["avg_pool_3x3"] < sizes["sep_conv_3x3"]
    assert sizes["dil_conv_3x3"] < sizes["sep_conv_3x3"] <= sizes["sep_conv_5x5"]


@pytest.mark.parametrize(
    "channels,nodes,sections",
    [
        (4, 2, SECTIONS),
        (8, 3, [("normal", "normal")]),
        (6, 2, [("normal",), ("reduction",), ("reduction",)]),
    ],
)
def test_prediction_within_ten_percent(channels, nodes, sections) -> None:
    net = build(channels, nodes, sections)
    memory = MemoryModel(16)
    for cell in net.cells:
        memory.assign_sizes(cell)
    predicted = memory.network_bytes(net)
    real = measured(net, 16)
    assert abs(predicted - real) <= 0.1 * real


def test_prediction_holds_after_pruning() -> None:
    net = build(6, 3)
    memory = MemoryModel(16)
    rng = random.Random(0)
    for cell in net.cells:
        memory.assign_sizes(cell)
        cell.remove_pruners(rng.sample(cell.pruner_ids, len(cell.pruner_ids) // 2))
    predicted = memory.network_bytes(net)
    real = measured(net, 16)
    assert abs(predicted - real) <= 0.1 * real


def test_memory_falls_with_deadheading() -> None:
    net = build()
    memory = MemoryModel(16)
    for cell in net.cells:
        memory.assign_sizes(cell)
    before_real, before_predicted = measured(net, 16), memory.network_bytes(net)
    cell = net.cells[0]
    convs = [p for p in cell.pruner_ids if "conv" in p]
    cell.remove_pruners(convs[: len(convs) // 2])
    assert measured(net, 16) < before_real
    assert memory.network_bytes(net) < before_predicted


def test_budget_gives_targets_below_one() -> None:
    net = build()
    plan = plan_budget(net, MemoryModel(16), None, 0.6)
    assert plan.budget == int(plan.hyper_connected * 0.6)
    assert len(plan.targets) == 3
    assert plan.targets[-1] is None
    assert all(0 < t < 1 for t in plan.targets[:-1])
    assert all(p <= plan.budget * 1.0001 for p in plan.predicted[1:])


def test_large_budget_needs_no_compression() -> None:
    net = build()
    plan = plan_budget(net, MemoryModel(16), 10 * 1024**3, 0.6)
    assert plan.targets[:-1] == [1.0, 1.0]


def test_section_that_cannot_fit_raises() -> None:
    net = build()
    with pytest.raises(
        SectionFitError, match="section 1 .* does not fit .* raise the budget to at least"
    ):
        plan_budget(net, MemoryModel(16), 64 * 1024, 0.6)


def test_out_of_memory_halves_batch() -> None:
    memory = MemoryModel(16)
    reference = MemoryModel(16).operation("sep_conv_3x3", 4, 8)
    calls = []
    original = memory._tensor

    def failing_tensor(batch, channels, resolution):
        calls.append(batch)
        if batch == 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(batch, channels, resolution)

    memory._tensor = failing_tensor
    size = memory.operation("sep_conv_3x3", 4, 8)
    assert calls[0] == 16
    assert 8 in calls
    assert size.alone == pytest.approx(reference.alone, rel=0.05)
