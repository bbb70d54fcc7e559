"""A fixed genotype and the same architecture written by hand, for `bonsai bench` target 4.

The genotype has three cells, normal, reduction and normal, one per section.
Each has four intermediate nodes, and each node is fed by two edges of one
operation, as in a DARTS cell. Input 1 of a cell is the output before its Input 0.
`HandWrittenNetwork` spells out that architecture with one plain module per
edge and no pruners or scales; its parameter names map onto the discovered
model's, so both can run with the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from bonsai.cell import CellInput, make_adapter
from bonsai.genotype import Genotype, genotype_from_network
from bonsai.network import SearchNetwork, Tower, make_stem
from bonsai.ops import OPERATION_NAMES, create_operation
from bonsai.pruner import input1_pruner_id, op_pruner_id

__all__ = ["FIXED_EDGES", "HandWrittenNetwork", "fixed_genotype", "hand_written_state"]

NODES = 4
SECTIONS = (("normal",), ("reduction",), ("normal",))
# (source, target): operation. Nodes 0 and 1 are Inputs 0 and 1, node 5 the output.
FIXED_EDGES: dict[tuple[int, int], str] = {
    (0, 2): "sep_conv_3x3",
    (1, 2): "sep_conv_5x5",
    (0, 3): "dil_conv_3x3",
    (2, 3): "identity",
    (1, 4): "max_pool_3x3",
    (3, 4): "sep_conv_3x3",
    (2, 5): "avg_pool_3x3",
    (4, 5): "dil_conv_5x5",
}


def fixed_genotype(channels: int, image_size: int, in_channels: int = 3) -> Genotype:
    """Build the fixed genotype at `channels` and `image_size` from a search network."""
    net = SearchNetwork(
        in_channels, image_size, 10, channels, channels, NODES, OPERATION_NAMES, 0.1, 1e5
    )
    for types in SECTIONS:
        net.add_section(types)
    for cell in net.cells:
        earlier = cell.input1  # the stem and every earlier cell; Input 0 is the last
        source = earlier[-2] if len(earlier) >= 2 else earlier[-1]
        keep = [input1_pruner_id(cell.index, source)]
        keep += [op_pruner_id(cell.index, s, t, op) for (s, t), op in FIXED_EDGES.items()]
        cell.keep_only(keep)
    return genotype_from_network(net)


class HandWrittenCell(nn.Module):
    """The fixed cell: adapters, then every node as a plain sum of its two edges."""

    def __init__(
        self, input0: CellInput, input1: CellInput, channels: int, resolution: int
    ) -> None:
        super().__init__()
        self.adapter0 = make_adapter(input0, channels, resolution)
        self.adapter1 = make_adapter(input1, channels, resolution)
        self.e0_2 = create_operation("sep_conv_3x3", channels)
        self.e1_2 = create_operation("sep_conv_5x5", channels)
        self.e0_3 = create_operation("dil_conv_3x3", channels)
        self.e3_4 = create_operation("sep_conv_3x3", channels)
        self.e4_5 = create_operation("dil_conv_5x5", channels)

    def forward(self, input0: torch.Tensor, input1: torch.Tensor) -> torch.Tensor:
        x0 = self.adapter0(input0)
        x1 = self.adapter1(input1)
        relu0 = torch.relu(x0)  # read by two convolutions
        n2 = self.e0_2(relu0) + self.e1_2(torch.relu(x1))
        n3 = self.e0_3(relu0) + n2
        n4 = nn.functional.max_pool2d(x1, 3, 1, 1) + self.e3_4(torch.relu(n3))
        pooled = nn.functional.avg_pool2d(n2, 3, 1, 1, count_include_pad=False)
        return pooled + self.e4_5(torch.relu(n4))


class HandWrittenNetwork(nn.Module):
    """Stem, the three fixed cells and a tower after each; returns the towers' logits."""

    def __init__(self, channels: int, image_size: int, in_channels: int = 3) -> None:
        super().__init__()
        stem = CellInput("stem", channels, image_size)
        reduced = (image_size + 1) // 2
        c0 = CellInput("c0", channels, image_size)
        c1 = CellInput("c1", 2 * channels, reduced)
        self.stem = make_stem(in_channels, channels)
        self.cells = nn.ModuleList(
            [
                HandWrittenCell(stem, stem, channels, image_size),
                HandWrittenCell(c0, stem, 2 * channels, reduced),
                HandWrittenCell(c1, c0, 2 * channels, reduced),
            ]
        )
        self.towers = nn.ModuleList(
            [Tower(channels, 10), Tower(2 * channels, 10), Tower(2 * channels, 10)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.stem(x)
        c0 = self.cells[0](stem, stem)
        c1 = self.cells[1](c0, stem)
        c2 = self.cells[2](c1, c0)
        return [tower(c) for tower, c in zip(self.towers, (c0, c1, c2), strict=True)]


def hand_written_state(discovered: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a discovered model's state dict to `HandWrittenNetwork`'s; scales are dropped."""
    state = {}
    for key, value in discovered.items():
        parts = key.split(".")
        if parts[0] == "cells":
            if parts[2] == "scales":
                continue
            if parts[2] == "adapters1":
                parts = [*parts[:2], "adapter1", *parts[4:]]
            elif parts[2] == "convs":
                edge = "_".join(parts[3].split("_")[:2])  # "e0_2_sep_conv_3x3" -> "e0_2"
                parts = [*parts[:2], edge, *parts[4:]]
        state[".".join(parts)] = value
    return state
