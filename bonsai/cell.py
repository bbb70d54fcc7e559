"""A hyper-connected search cell whose connections are removed as their pruners close.

Nodes of a cell with `nodes` intermediate nodes:

    0            Input 0: the previous cell's output, adapted to the cell's shape; never pruned
    1            Input 1: sum over the stem and every earlier cell, each term adapted and pruned
    2..nodes+1   intermediate nodes; node j sums an edge from every node i < j
    nodes+1      the output

Every edge contains every operation, each behind its own pruner. A reduction cell
doubles the channels and halves the resolution in its input adapters, so every
operation inside a cell keeps the shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from bonsai.ops import OPERATIONS, ReLUConvBN, create_operation
from bonsai.pruner import (
    gate_values,
    input1_pruner_id,
    op_pruner_id,
    parse_pruner_id,
    step_gate,
)

__all__ = [
    "CellInput",
    "SearchCell",
    "build_plan",
    "conv_key",
    "drop_path",
    "make_adapter",
    "reaches_output",
    "run_nodes",
]


@dataclass(frozen=True)
class CellInput:
    """A tensor that may feed a cell: the stem ("stem") or a cell's output ("c{k}")."""

    name: str
    channels: int
    resolution: int


def make_adapter(source: CellInput, channels: int, resolution: int) -> ReLUConvBN:
    """Return ReLU-conv-BN that brings `source` to (channels, resolution).

    Every input is adapted, even one of the cell's own shape: a node sums all
    earlier nodes, so magnitudes grow inside a cell, and the batch norm of the
    adapters brings each cell's inputs back to unit scale.
    """
    stride = max(1, round(source.resolution / resolution))
    return ReLUConvBN(source.channels, channels, stride)


def drop_path(x: torch.Tensor, probability: float) -> torch.Tensor:
    """Zero whole samples of `x` with `probability`, scaling the rest by 1 / (1 - probability)."""
    keep = 1.0 - probability
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * (mask / keep)


def conv_key(source: int, target: int, op: str) -> str:
    return f"e{source}_{target}_{op}"


class SearchCell(nn.Module):
    """One distinct cell of the search network with a pruner on every connection.

    The pruner weights of the cell form one vector parameter, `weights`, in the
    order of `pruner_ids`. `sizes` contains each connection's training-memory size
    in bytes (set by `bonsai.memory`), and `initial_size` their sum before any
    pruning, the denominator of the cell's compression.
    """

    def __init__(
        self,
        index: int,
        cell_type: str,
        section: int,
        nodes: int,
        channels: int,
        resolution: int,
        input0: CellInput,
        input1_sources: list[CellInput],
        ops: tuple[str, ...],
        gate_init: float,
        pruner_m: float,
    ) -> None:
        super().__init__()
        self.index = index
        self.cell_type = cell_type
        self.section = section
        self.nodes = nodes
        self.channels = channels
        self.resolution = resolution
        self.pruner_m = pruner_m
        self.drop_path_probability = 0.0
        self.input0_source = input0
        self.input1_descriptions = {source.name: source for source in input1_sources}

        self.adapter0 = make_adapter(input0, channels, resolution)
        self.adapters1 = nn.ModuleDict(
            {s.name: make_adapter(s, channels, resolution) for s in input1_sources}
        )
        self.convs = nn.ModuleDict()

        pruner_ids = [input1_pruner_id(index, s.name) for s in input1_sources]
        self.edges: dict[tuple[int, int], list[str]] = {}
        for target in range(2, nodes + 2):
            for source in range(target):
                self.edges[(source, target)] = list(ops)
                for op in ops:
                    pruner_ids.append(op_pruner_id(index, source, target, op))
                    if OPERATIONS[op].parametric:
                        self.convs[conv_key(source, target, op)] = create_operation(op, channels)
        self.input1: list[str] = [s.name for s in input1_sources]
        self.pruner_ids: list[str] = pruner_ids
        self.weights = nn.Parameter(torch.full((len(pruner_ids),), float(gate_init)))
        self.register_buffer("sizes", torch.zeros(len(pruner_ids), dtype=torch.float64))
        self.initial_size = 0.0
        self._rebuild_plan()

    # -- structure ---------------------------------------------------------------------

    @property
    def output_node(self) -> int:
        return self.nodes + 1

    def live_nodes(self) -> list[int]:
        """Nodes that take part in the output: inputs in use and intermediate nodes."""
        used = {0} | ({1} if self.input1 else set())
        for source, target in self.edges:
            used.add(source)
            used.add(target)
        return sorted(used)

    def _rebuild_plan(self) -> None:
        """Precompute the forward pass over live connections (`build_plan`)."""
        index = {pruner_id: i for i, pruner_id in enumerate(self.pruner_ids)}
        self._pruner_index = index
        self._input1_plan = [
            (name, index[input1_pruner_id(self.index, name)]) for name in self.input1
        ]
        self._plan = build_plan(self.nodes, self.edges, index, self.index)

    def _reaches_output(self, edges: dict[tuple[int, int], list[str]], input1: list[str]) -> bool:
        live = [edge for edge, ops in edges.items() if ops]
        return reaches_output(live, bool(input1), self.nodes)

    def can_remove(self, pruner_id: str) -> bool:
        """Return True when removing `pruner_id` leaves a path from an input to the output."""
        edges = {key: list(ops) for key, ops in self.edges.items()}
        input1 = list(self.input1)
        _remove_from(edges, input1, parse_pruner_id(pruner_id))
        edges = {key: ops for key, ops in edges.items() if ops}
        return self._reaches_output(edges, input1)

    def remove_pruners(self, pruner_ids: list[str]) -> tuple[list[str], list[str], torch.Tensor]:
        """Remove connections for good, then any node left without inputs or without use.

        Connections are removed in the order given; one whose removal would cut
        the last path from the inputs to the output is kept. Returns the removed
        pruner ids (those asked for and those of dead nodes), the removed node
        names ("c3.n4"), and the indices into the old `weights` that survive.
        """
        removed: list[str] = []
        for pruner_id in pruner_ids:
            if pruner_id not in self._pruner_index or pruner_id in removed:
                continue
            if not self.can_remove(pruner_id):
                continue
            _remove_from(self.edges, self.input1, parse_pruner_id(pruner_id))
            self.edges = {key: ops for key, ops in self.edges.items() if ops}
            removed.append(pruner_id)
        before = set(self.live_nodes())
        removed += self._remove_dead_nodes()
        removed_nodes = [f"c{self.index}.n{n}" for n in sorted(before - set(self.live_nodes()))]
        return removed, removed_nodes, self._apply_removal(set(removed))

    def keep_only(self, pruner_ids: list[str]) -> None:
        """Restore a saved structure: remove every connection not in `pruner_ids`."""
        alive = set(pruner_ids)
        for pruner_id in self.pruner_ids:
            if pruner_id not in alive:
                _remove_from(self.edges, self.input1, parse_pruner_id(pruner_id))
        self.edges = {key: ops for key, ops in self.edges.items() if ops}
        self._apply_removal(set(self.pruner_ids) - alive)

    def _remove_dead_nodes(self) -> list[str]:
        removed: list[str] = []
        changed = True
        while changed:
            changed = False
            # A node without live inputs feeds nothing useful.
            has_input = {0} | ({1} if self.input1 else set())
            for target in range(2, self.nodes + 2):
                if any(t == target and s in has_input for s, t in self.edges):
                    has_input.add(target)
            # A node whose outputs never reach the cell output is wasted work.
            useful = {self.output_node}
            for source in range(self.nodes, -1, -1):
                if any(s == source and t in useful for s, t in self.edges):
                    useful.add(source)
            for (source, target), ops in list(self.edges.items()):
                if source not in has_input or target not in useful:
                    removed += [op_pruner_id(self.index, source, target, op) for op in ops]
                    del self.edges[(source, target)]
                    changed = True
            if self.input1 and 1 not in useful:
                removed += [input1_pruner_id(self.index, name) for name in self.input1]
                self.input1 = []
                changed = True
        return removed

    def _apply_removal(self, removed: set[str]) -> torch.Tensor:
        keep = [i for i, pruner_id in enumerate(self.pruner_ids) if pruner_id not in removed]
        keep_index = torch.tensor(keep, dtype=torch.long)
        for pruner_id in removed:
            parsed = parse_pruner_id(pruner_id)
            if parsed.kind == "input1":
                del self.adapters1[str(parsed.source)]
            elif OPERATIONS[str(parsed.op)].parametric:
                del self.convs[
                    conv_key(int(parsed.source), int(parsed.target or 0), str(parsed.op))
                ]
        self.pruner_ids = [self.pruner_ids[i] for i in keep]
        with torch.no_grad():
            self.weights = nn.Parameter(self.weights.detach()[keep_index].clone())
            self.sizes = self.sizes[keep_index].clone()
        self._rebuild_plan()
        return keep_index

    # -- values ------------------------------------------------------------------------

    def gates(self) -> torch.Tensor:
        """G(w) + S(w) of every live pruner, in the order of `pruner_ids`."""
        return gate_values(self.weights, self.pruner_m)

    def compression(self, gates: torch.Tensor | None = None) -> torch.Tensor:
        """c_actual = sum_j s_j (G(w_j) + S(w_j)) / sum_j s_j, over the initial connections."""
        if gates is None:
            gates = self.gates()
        if self.initial_size <= 0:
            return gates.new_ones(())
        sizes = self.sizes.to(gates.dtype)
        return (sizes * gates).sum() / self.initial_size

    def open_sizes(self) -> torch.Tensor:
        """Sizes (float64, on the CPU) of the connections whose gate is on, 0 for the others."""
        return step_gate(self.weights.detach().cpu()).double() * self.sizes.cpu()

    def open_compression(self) -> float:
        """c_actual with G(w) alone: the share of the initial size whose gates are on."""
        if self.initial_size <= 0:
            return 1.0
        return float(self.open_sizes().sum()) / self.initial_size

    def live_size(self) -> float:
        """Sum of the sizes of the live connections, in bytes."""
        return float(self.sizes.sum())

    # -- forward -----------------------------------------------------------------------

    def forward(self, input0: torch.Tensor, sources: dict[str, torch.Tensor]) -> torch.Tensor:
        gates = self.gates()

        # Input 1: the pruned sum of the adapted earlier outputs.
        input1: torch.Tensor | None = None
        for name, k in self._input1_plan:
            term = self.adapters1[name](sources[name], gates[k])
            input1 = term if input1 is None else input1 + term
        return self.forward_nodes(self.adapter0(input0), input1, gates)

    def forward_nodes(
        self, input0: torch.Tensor, input1: torch.Tensor | None, gates: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the intermediate nodes and the output from the adapted Input 0 and Input 1."""
        if gates is None:
            gates = self.gates()
        drop = self.drop_path_probability if self.training else 0.0
        return run_nodes(self._plan, self.convs, gates, input0, input1, drop)

    # -- description -------------------------------------------------------------------

    def structure(self) -> dict:
        """Describe the cell and every live pruner, as in the `section_added` event."""
        pruners = []
        for i, pruner_id in enumerate(self.pruner_ids):
            parsed = parse_pruner_id(pruner_id)
            entry: dict = {"id": pruner_id, "kind": parsed.kind, "source": parsed.source}
            if parsed.kind == "op":
                entry.update(target=parsed.target, op=parsed.op)
            entry["size"] = int(self.sizes[i])
            pruners.append(entry)
        return {
            "index": self.index,
            "type": self.cell_type,
            "section": self.section,
            "channels": self.channels,
            "resolution": self.resolution,
            "nodes": self.nodes,
            "input0": self.input0_source.name,
            "pruners": pruners,
        }


# Kinds of plan step: a convolution module, the source node itself (identity), or a
# parameter-free function of it (pooling).
CONV, IDENTITY, POOL = 0, 1, 2

# (source, kind, name, gate index): `name` is the conv key of a convolution and the
# operation's name otherwise.
PlanStep = tuple[int, int, str, int]
# (target, steps, released): `released` lists the nodes that no later target reads.
PlanNode = tuple[int, list[PlanStep], list[int]]
Plan = list[PlanNode]


def build_plan(
    nodes: int, edges: dict[tuple[int, int], list[str]], pruner_index: dict[str, int], cell: int
) -> Plan:
    """Order the live edges for `run_nodes`, one entry per target node with live inputs.

    Every operation is resolved here (its kind, conv key and gate index), so
    that `run_nodes` does no lookups by name.
    """
    plan: Plan = []
    last_reader: dict[int, int] = {}
    for target in range(2, nodes + 2):
        steps: list[PlanStep] = []
        for source in range(target):
            for op in edges.get((source, target)) or ():
                k = pruner_index[op_pruner_id(cell, source, target, op)]
                if OPERATIONS[op].parametric:
                    steps.append((source, CONV, conv_key(source, target, op), k))
                elif op == "identity":
                    steps.append((source, IDENTITY, op, k))
                else:
                    steps.append((source, POOL, op, k))
                last_reader[source] = target
        if steps:
            plan.append((target, steps, []))
    for target, _, released in plan:
        released.extend(source for source, last in last_reader.items() if last == target)
    return plan


def run_nodes(
    plan: Plan,
    convs: nn.ModuleDict,
    gates: torch.Tensor | None,
    input0: torch.Tensor,
    input1: torch.Tensor | None,
    drop: float,
) -> torch.Tensor:
    """Compute a cell's nodes; returns the last one, the cell output.

    Node j = sum over live edges i -> j and their operations of gate * op(node i).
    ReLU and pooling of a source node are computed once and shared by every edge
    that reads them. A convolution's gate scales its last batch norm
    (`ScaledBatchNorm2d`), which saves no gated output for backward; a pooling
    or identity term is multiplied by its gate. `gates` None sums the
    operations unscaled, which equals gates of exactly 1 at less cost. With
    `drop` > 0, drop-path zeroes whole samples of each non-identity
    operation's output. A node, its ReLU and its pooling are released once the
    last node reading them is computed, so that the allocator can reuse their
    memory for the next nodes (autograd keeps what backward needs).
    """
    factors = gates.unbind() if gates is not None else None
    states: dict[int, torch.Tensor] = {0: input0}
    if input1 is not None:
        states[1] = input1
    relu: dict[int, torch.Tensor] = {}
    pooled: dict[tuple[int, str], torch.Tensor] = {}
    total: torch.Tensor | None = None
    for target, steps, released in plan:
        total = None
        owned = False  # whether `total` is a fresh tensor that may be added to in place
        for source, kind, name, k in steps:
            x = states[source]
            gate = None if factors is None else factors[k]
            if kind == CONV:
                if source not in relu:
                    relu[source] = torch.relu(x)
                y = convs[name](relu[source], gate)
                gate = None
                fresh = True
            elif kind == IDENTITY:
                y = x
                fresh = False
            else:
                y = pooled.get((source, name))
                if y is None:
                    apply = OPERATIONS[name].apply
                    assert apply is not None
                    y = pooled[source, name] = apply(x)
                fresh = False
            if drop > 0 and kind != IDENTITY:
                y = drop_path(y, drop)
                fresh = True
            if total is None:
                total, owned = (y, fresh) if gate is None else (y * gate, True)
            elif not owned:
                total = total + y if gate is None else torch.addcmul(total, y, gate)
                owned = True
            elif gate is None:
                total = total.add_(y)
            else:
                total = total.addcmul_(y, gate)
        assert total is not None
        states[target] = total
        for source in released:
            del states[source]
            relu.pop(source, None)
            for key in [key for key in pooled if key[0] == source]:
                del pooled[key]
    assert total is not None
    return total


def reaches_output(edges: Iterable[tuple[int, int]], has_input1: bool, nodes: int) -> bool:
    """Return True when the edges (source, target) connect an input node to the output node."""
    edges = list(edges)
    reached = {0} | ({1} if has_input1 else set())
    for target in range(2, nodes + 2):
        if any(source in reached for source, t in edges if t == target):
            reached.add(target)
    return nodes + 1 in reached


def _remove_from(edges: dict[tuple[int, int], list[str]], input1: list[str], parsed) -> None:
    if parsed.kind == "input1":
        if parsed.source in input1:
            input1.remove(parsed.source)
        return
    ops = edges.get((parsed.source, parsed.target))
    if ops and parsed.op in ops:
        ops.remove(parsed.op)
