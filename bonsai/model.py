"""The discovered model: a plain `nn.Module` built from a genotype, with no pruners.

Its modules carry the same names as the search network's, so the trained weights
of a search load into it with strict key matching. Each surviving pruner's final
factor G(w) + S(w) is folded into a fixed `scales` buffer of its cell, so the
discovered model computes what the search model computed, and a freshly built
one (all scales 1) is the architecture to train from scratch.
"""

from __future__ import annotations

import torch
from torch import nn

from bonsai.cell import CellInput, build_plan, conv_key, make_adapter, run_nodes
from bonsai.genotype import Genotype
from bonsai.network import Tower, make_stem
from bonsai.ops import OPERATIONS, create_operation
from bonsai.pruner import input1_pruner_id, op_pruner_id

__all__ = ["DiscoveredCell", "DiscoveredNetwork", "build_model"]


class DiscoveredCell(nn.Module):
    """A cell with fixed connections: the surviving operations and Input-1 terms."""

    def __init__(self, cell: dict, sources: dict[str, CellInput]) -> None:
        super().__init__()
        self.index = cell["index"]
        self.section = cell["section"]
        self.nodes = cell["nodes"]
        self.channels = cell["channels"]
        self.resolution = cell["resolution"]
        self.drop_path_probability = 0.0
        self.adapter0 = make_adapter(sources[cell["input0"]], self.channels, self.resolution)
        self.input1 = [term["source"] for term in cell["input1"]]
        self.adapters1 = nn.ModuleDict(
            {
                name: make_adapter(sources[name], self.channels, self.resolution)
                for name in self.input1
            }
        )
        self.convs = nn.ModuleDict()
        edges: dict[tuple[int, int], list[str]] = {}
        pruner_ids = [input1_pruner_id(self.index, name) for name in self.input1]
        for edge in cell["edges"]:
            source, target = edge["source"], edge["target"]
            ops = [entry["op"] for entry in edge["ops"]]
            edges[(source, target)] = ops
            for op in ops:
                pruner_ids.append(op_pruner_id(self.index, source, target, op))
                if OPERATIONS[op].parametric:
                    self.convs[conv_key(source, target, op)] = create_operation(op, self.channels)
        self.pruner_ids = pruner_ids
        index = {pruner_id: i for i, pruner_id in enumerate(pruner_ids)}
        self._input1_plan = [
            (name, index[input1_pruner_id(self.index, name)]) for name in self.input1
        ]
        self._plan = build_plan(self.nodes, edges, index, self.index)
        self.register_buffer("scales", torch.ones(len(pruner_ids)))
        # A freshly built model has unit scales and skips multiplying by them;
        # loading a state dict (a folded search network) rechecks.
        self._unit_scales = True
        self.register_load_state_dict_post_hook(_check_unit_scales)

    def forward(self, input0: torch.Tensor, sources: dict[str, torch.Tensor]) -> torch.Tensor:
        scales = None if self._unit_scales else self.scales
        input1: torch.Tensor | None = None
        for name, k in self._input1_plan:
            term = self.adapters1[name](sources[name], None if scales is None else scales[k])
            input1 = term if input1 is None else input1 + term
        drop = self.drop_path_probability if self.training else 0.0
        x0 = self.adapter0(input0)
        return run_nodes(self._plan, self.convs, scales, x0, input1, drop)


def _check_unit_scales(cell: DiscoveredCell, incompatible_keys: object) -> None:
    cell._unit_scales = bool(torch.all(cell.scales == 1))


class DiscoveredNetwork(nn.Module):
    """Stem, discovered cells and one tower per section; returns every tower's logits."""

    def __init__(self, genotype: Genotype) -> None:
        super().__init__()
        data = genotype.data
        self.genotype = genotype
        self.in_channels = data["input"]["channels"]
        self.image_size = data["input"]["image_size"]
        self.num_classes = data["input"]["classes"]
        self.stem = make_stem(self.in_channels, data["stem_channels"])
        sources = {"stem": CellInput("stem", data["stem_channels"], self.image_size)}
        self.cells = nn.ModuleList()
        for cell in genotype.cells:
            self.cells.append(DiscoveredCell(cell, sources))
            sources[f"c{cell['index']}"] = CellInput(
                f"c{cell['index']}", cell["channels"], cell["resolution"]
            )
        self.section_ends = {cells[-1]: s for s, cells in enumerate(genotype.sections)}
        self.towers = nn.ModuleList(
            Tower(genotype.cells[cells[-1]]["channels"], self.num_classes)
            for cells in genotype.sections
        )

    def set_drop_path(self, probability: float) -> None:
        for cell in self.cells:
            cell.drop_path_probability = probability

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        previous = self.stem(x)
        outputs = {"stem": previous}
        logits = []
        for cell in self.cells:
            previous = cell(previous, outputs)
            outputs[f"c{cell.index}"] = previous
            if cell.index in self.section_ends:
                logits.append(self.towers[self.section_ends[cell.index]](previous))
        return logits

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(genotype: Genotype) -> DiscoveredNetwork:
    """Build the discovered model of `genotype`, freshly initialised."""
    return DiscoveredNetwork(genotype)


def fold_search_network(net: nn.Module, genotype: Genotype) -> DiscoveredNetwork:
    """Build the discovered model and copy the search network's trained state into it.

    The search network's pruner weights are folded into the cells' `scales`.
    """
    model = DiscoveredNetwork(genotype)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith((".weights", ".sizes"))}
    for cell in net.cells:
        state[f"cells.{cell.index}.scales"] = cell.gates().detach().float().cpu()
    model.load_state_dict(state, strict=True)
    return model
