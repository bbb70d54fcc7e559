"""The memory model: measured sizes of connections, predicted memory, budget targets.

A training step's memory is counted as the tensors that autograd saves for the
backward pass (each storage once), plus the parameters, their gradients and their
SGD momentum buffers. On the CPU the saved tensors are collected with
`torch.autograd.graph.saved_tensors_hooks`; on CUDA a size is the rise of
`torch.cuda.max_memory_allocated` over a forward and backward pass.

Each prunable connection j (an operation on an edge, or a term of Input 1) is
measured on its own, at the shape it has in the network, and the size s_j is
cached per (what, shape, dtype, device). Parts that several connections share
are counted once in a prediction. They are the ReLU of a source node (read by
every convolution on its out-edges), a source node's pooled tensor (read by
every edge with that pooling), and a node's own tensor (saved by identity and
pooling edges that read it). Everything else (stem, Input-0 adapters, towers)
is fixed.

    predicted = fixed + sum_j own_j + sum over live shared parts + live node tensors
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from bonsai.cell import CellInput, SearchCell, make_adapter
from bonsai.ops import OPERATIONS, create_operation
from bonsai.pruner import parse_pruner_id

__all__ = [
    "BudgetPlan",
    "MemoryModel",
    "SectionFitError",
    "measure_training_step",
    "saved_tensor_bytes",
]

logger = logging.getLogger(__name__)

# SGD with momentum keeps, per parameter, the value, its gradient and a momentum buffer.
PARAMETER_COPIES = 3


class SectionFitError(ValueError):
    """A section does not fit the memory budget even at the smallest compression."""


def saved_tensor_bytes(
    run: Callable[[], torch.Tensor], exclude: list[torch.Tensor]
) -> tuple[int, torch.Tensor]:
    """Run `run()` and return the bytes of the unique storages it saved for backward.

    Storages of the tensors in `exclude` (inputs and parameters, counted elsewhere)
    are left out.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in excluded:
            storages[pointer] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = run()
    return sum(storages.values()), output


def parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) * PARAMETER_COPIES


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


@dataclass(frozen=True)
class ConnectionSize:
    """Bytes of one connection: its own, and those of a part it shares with others."""

    own: int
    shared: int = 0

    @property
    def alone(self) -> int:
        """s_j: what the connection costs when measured on its own."""
        return self.own + self.shared


@dataclass
class MemoryModel:
    """Measures and caches sizes at one batch size, dtype, device and memory format."""

    batch_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    cache: dict[tuple, ConnectionSize] = field(default_factory=dict)
    measurements: int = 0

    # -- measuring ---------------------------------------------------------------------

    def _tensor(self, batch: int, channels: int, resolution: int) -> torch.Tensor:
        x = torch.randn(
            batch, channels, resolution, resolution, device=self.device, dtype=self.dtype
        )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.requires_grad_()

    def _measure(self, key: tuple, build: Callable[[int], tuple[int, int]]) -> ConnectionSize:
        """Measure through `build(batch) -> (own, shared)`, cached by `key`.

        An out-of-memory error halves the batch and scales the result up, so
        sizing a large network never ends the search.
        """
        if key in self.cache:
            return self.cache[key]
        batch = self.batch_size
        while True:
            try:
                own, shared = build(batch)
                break
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_out_of_memory(error) or batch <= 1:
                    raise
                logger.warning("out of memory while measuring %s at batch %d; halving", key, batch)
                batch //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        scale = self.batch_size / batch
        size = ConnectionSize(int(own * scale), int(shared * scale))
        self.cache[key] = size
        self.measurements += 1
        return size

    def _activation_bytes(
        self, module: nn.Module | None, run: Callable[[], torch.Tensor], inputs: list[torch.Tensor]
    ) -> int:
        params = list(module.parameters()) if module is not None else []
        if self.device.type == "cuda":
            return self._cuda_rise(run)
        saved, _ = saved_tensor_bytes(run, inputs + params)
        return saved

    def _cuda_rise(self, run: Callable[[], torch.Tensor]) -> int:
        # NOTE: this path has not been run on a GPU in this project's tests.
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        output = run()
        output.sum().backward()
        torch.cuda.synchronize(self.device)
        return max(0, torch.cuda.max_memory_allocated(self.device) - base)

    def operation(self, op: str, channels: int, resolution: int) -> ConnectionSize:
        """Size of operation `op` on one edge, gated and added to a node's sum."""
        key = ("op", op, channels, resolution, self.batch_size, self.dtype, self.device.type)

        def build(batch: int) -> tuple[int, int]:
            spec = OPERATIONS[op]
            x = self._tensor(batch, channels, resolution)
            total = self._tensor(batch, channels, resolution)
            gate = torch.ones((), device=self.device, dtype=self.dtype, requires_grad=True)
            module = None
            if spec.parametric:
                module = create_operation(op, channels).to(self.device, self.dtype)
                if self.channels_last:
                    module = module.to(memory_format=torch.channels_last)

                def run() -> torch.Tensor:
                    return total + module(torch.relu(x), gate)

            else:
                assert spec.apply is not None
                apply = spec.apply

                def run() -> torch.Tensor:
                    return torch.addcmul(total, apply(x), gate)

            saved = self._activation_bytes(module, run, [x, total, gate])
            params = parameter_bytes(module) if module is not None else 0
            if spec.parametric:
                relu = x.numel() * x.element_size()  # ReLU(x), shared per source node
                return max(0, saved - relu) + params, min(relu, saved)
            if op == "identity":
                return 0, 0
            return 0, saved  # the pooled tensor, shared per source node

        return self._measure(key, build)

    def adapter(
        self, source: CellInput, channels: int, resolution: int, gated: bool
    ) -> ConnectionSize:
        """Size of an input adapter; `gated` for an Input-1 term (adapter, gate and sum)."""
        key = (
            "adapter",
            gated,
            source.channels,
            source.resolution,
            channels,
            resolution,
            self.batch_size,
            self.dtype,
            self.device.type,
        )

        def build(batch: int) -> tuple[int, int]:
            module = make_adapter(source, channels, resolution).to(self.device, self.dtype)
            if self.channels_last:
                module = module.to(memory_format=torch.channels_last)
            x = self._tensor(batch, source.channels, source.resolution)
            total = self._tensor(batch, channels, resolution)
            gate = torch.ones((), device=self.device, dtype=self.dtype, requires_grad=True)

            def run() -> torch.Tensor:
                return total + module(x, gate) if gated else module(x)

            saved = self._activation_bytes(module, run, [x, total, gate])
            return saved + parameter_bytes(module), 0

        return self._measure(key, build)

    def fixed_module(self, name: str, module: nn.Module, shape: tuple[int, ...]) -> int:
        """Bytes of a fixed part (stem, tower), measured on its own."""
        key = ("fixed", name, shape, self.batch_size, self.dtype, self.device.type)

        def build(batch: int) -> tuple[int, int]:
            probe = _copy_module(module).to(self.device, self.dtype)
            x = torch.randn(batch, *shape[1:], device=self.device, dtype=self.dtype)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
                probe = probe.to(memory_format=torch.channels_last)
            x.requires_grad_()
            saved = self._activation_bytes(probe, lambda: probe(x), [x])
            return saved + parameter_bytes(probe), 0

        return self._measure(key, build).own

    # -- per connection ----------------------------------------------------------------

    def connection(self, cell: SearchCell, pruner_id: str) -> tuple[ConnectionSize, tuple | None]:
        """Size of one connection of `cell`, and the key of the part it shares (or None)."""
        parsed = parse_pruner_id(pruner_id)
        if parsed.kind == "input1":
            source = cell.input1_descriptions[str(parsed.source)]
            return self.adapter(source, cell.channels, cell.resolution, gated=True), None
        op = str(parsed.op)
        size = self.operation(op, cell.channels, cell.resolution)
        if OPERATIONS[op].parametric:
            return size, (cell.index, parsed.source, "relu")
        if op == "identity":
            return size, None
        return size, (cell.index, parsed.source, op)

    def assign_sizes(self, cell: SearchCell) -> None:
        """Measure every connection of a new cell and set its `sizes` and `initial_size`."""
        sizes = [float(self.connection(cell, p)[0].alone) for p in cell.pruner_ids]
        cell.sizes = torch.tensor(sizes, dtype=torch.float64)
        cell.initial_size = float(sum(sizes))

    # -- predictions -------------------------------------------------------------------

    def cell_bytes(self, cell: SearchCell) -> dict[str, int]:
        """Predict a cell's bytes as it is now: fixed, connections, shared parts, node tensors."""
        state_bytes = (
            self.batch_size * cell.channels * cell.resolution**2 * _element_size(self.dtype)
        )
        fixed = self.adapter(cell.input0_source, cell.channels, cell.resolution, gated=False).own
        own = 0
        shared: dict[tuple, int] = {}
        saved_nodes: set[int] = set()
        for pruner_id in cell.pruner_ids:
            size, shared_key = self.connection(cell, pruner_id)
            own += size.own
            if shared_key is not None:
                shared[shared_key] = size.shared
            parsed = parse_pruner_id(pruner_id)
            if parsed.kind == "op" and not OPERATIONS[str(parsed.op)].parametric:
                saved_nodes.add(int(parsed.source))  # identity and pooling save their input
        states = state_bytes * len(saved_nodes)
        return {
            "fixed": fixed,
            "connections": own,
            "shared": sum(shared.values()),
            "states": states,
            "total": fixed + own + sum(shared.values()) + states,
        }

    def network_bytes(self, net: nn.Module, cells: list[SearchCell] | None = None) -> int:
        """Predicted training-step bytes of `net` (a `SearchNetwork`) as it is now."""
        total = self.stem_bytes(net)
        for cell in cells if cells is not None else list(net.cells):
            total += self.cell_bytes(cell)["total"]
        for section, tower in enumerate(net.towers):
            total += self.tower_bytes(net, section, tower)
        total += (
            sum(c.weights.numel() for c in net.cells)
            * _element_size(self.dtype)
            * PARAMETER_COPIES
        )
        return total

    def stem_bytes(self, net: nn.Module) -> int:
        shape = (self.batch_size, net.in_channels, net.image_size, net.image_size)
        return self.fixed_module("stem", net.stem, shape)

    def tower_bytes(self, net: nn.Module, section: int, tower: nn.Module) -> int:
        last = [cell for cell in net.cells if cell.section == section][-1]
        shape = (self.batch_size, last.channels, last.resolution, last.resolution)
        return self.fixed_module("tower", tower, shape)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _copy_module(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def measure_training_step(
    net: nn.Module,
    batch: torch.Tensor,
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    optimizer_state_bytes: int | None = None,
) -> int:
    """Measure one real training step of `net` on `batch`, counted as the memory model counts.

    On the CPU: unique storages saved for backward by the forward pass, plus the
    parameters, their gradients and momentum buffers (`optimizer_state_bytes` when
    given, else one buffer per parameter). On CUDA: the rise of the peak allocated
    memory over forward and backward, plus the same parameter state. Gradients are
    left in the parameters' `.grad`; the caller zeroes them.
    """
    params = list(net.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    state = optimizer_state_bytes if optimizer_state_bytes is not None else weights
    if batch.device.type == "cuda":
        torch.cuda.synchronize(batch.device)
        torch.cuda.reset_peak_memory_stats(batch.device)
        base = torch.cuda.memory_allocated(batch.device)
        loss_fn(net(batch)).backward()
        torch.cuda.synchronize(batch.device)
        activations = max(0, torch.cuda.max_memory_allocated(batch.device) - base)
    else:
        activations, loss = saved_tensor_bytes(lambda: loss_fn(net(batch)), [batch, *params])
        loss.backward()
    return activations + 2 * weights + state


@dataclass(frozen=True)
class BudgetPlan:
    """Per-section compression targets derived from a memory budget.

    `targets[n]` is the compression the cells before section n+1 must reach
    before section n+1 is appended; the last section has none.
    """

    budget: int
    targets: list[float | None]
    predicted: list[int]  # predicted bytes right after each section is appended
    hyper_connected: int  # predicted bytes of the whole network with nothing pruned
    section_bytes: list[int]  # predicted bytes of each section's cells when hyper-connected

    def to_dict(self) -> dict:
        return {
            "budget": self.budget,
            "targets": self.targets,
            "predicted": self.predicted,
            "hyper_connected": self.hyper_connected,
            "section_bytes": self.section_bytes,
        }


def plan_budget(
    net: nn.Module, memory: MemoryModel, budget: int | None, fraction: float
) -> BudgetPlan:
    """Derive per-section compression targets from `budget` by measurement.

    `net` is a `SearchNetwork` with every section appended and nothing pruned,
    used only for its shapes. Before section n is appended, the cells of
    sections 0..n-1 must shrink to compression c_n so that

        fixed(0..n) + c_n * variable(0..n-1) + hyper_connected(n) <= budget

    where fixed parts are the stem, towers and Input-0 adapters, variable parts
    are the connections, the parts they share and the node tensors, and
    hyper_connected(n) is the predicted memory of section n with nothing pruned.
    Without a budget, `fraction` of the whole network's predicted memory is used.
    Raises SectionFitError when a section cannot fit at the smallest compression
    a cell can reach (one path of the cheapest operation).
    """
    for cell in net.cells:
        if cell.initial_size == 0:
            memory.assign_sizes(cell)
    sections = sorted({cell.section for cell in net.cells})
    per_cell = {cell.index: memory.cell_bytes(cell) for cell in net.cells}
    towers = [memory.tower_bytes(net, s, net.towers[s]) for s in sections]
    gate_bytes = sum(c.weights.numel() for c in net.cells) * 4 * PARAMETER_COPIES
    stem = memory.stem_bytes(net) + gate_bytes

    def cells_of(section: int) -> list[SearchCell]:
        return [cell for cell in net.cells if cell.section == section]

    section_bytes = [
        sum(per_cell[c.index]["total"] for c in cells_of(s)) + towers[s] for s in sections
    ]
    hyper_connected = stem + sum(section_bytes)
    if budget is None:
        budget = int(hyper_connected * fraction)

    targets: list[float | None] = []
    predicted: list[int] = [stem + section_bytes[0]]
    for n in sections[1:]:
        earlier = [c for c in net.cells if c.section < n]
        fixed = (
            stem
            + sum(towers[s] for s in sections if s < n)
            + sum(per_cell[c.index]["fixed"] for c in earlier)
        )
        variable = sum(per_cell[c.index]["total"] - per_cell[c.index]["fixed"] for c in earlier)
        smallest = sum(_smallest_path_bytes(memory, c) for c in earlier) / max(variable, 1)
        free = budget - fixed - section_bytes[n]
        target = free / max(variable, 1)
        if target < smallest:
            needed = int(fixed + section_bytes[n] + smallest * variable)
            raise SectionFitError(
                f"section {n} ({len(cells_of(n))} cells) does not fit the budget of "
                f"{_format(budget)}: it needs {_format(section_bytes[n])} hyper-connected, "
                "and the "
                f"cells before it cannot shrink below {_format(fixed + smallest * variable)}; "
                f"raise the budget to at least {_format(needed)} or use fewer channels or nodes"
            )
        target = min(1.0, target)
        targets.append(target)
        predicted.append(int(fixed + target * variable + section_bytes[n]))
    targets.append(None)
    return BudgetPlan(budget, targets, predicted, hyper_connected, section_bytes)


def _smallest_path_bytes(memory: MemoryModel, cell: SearchCell) -> float:
    """Bytes of the cheapest single path a cell can keep: one operation on edge 0 -> output."""
    state = memory.batch_size * cell.channels * cell.resolution**2 * _element_size(memory.dtype)
    ops = {str(parse_pruner_id(p).op) for p in cell.pruner_ids if parse_pruner_id(p).kind == "op"}
    costs = []
    for op in ops:
        size = memory.operation(op, cell.channels, cell.resolution)
        costs.append(size.alone + (0 if OPERATIONS[op].parametric else state))
    return float(min(costs)) if costs else 0.0


def _format(size: float) -> str:
    from bonsai.config import format_size

    return format_size(size)
