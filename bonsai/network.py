"""The search network: a stem, cells grown section by section, and one tower per section.

Cell i reads the previous cell's output as Input 0 and the stem and every earlier
cell as the pruned terms of Input 1. Each section ends in a tower (global average
pooling and a linear layer). The last tower classifies; the earlier ones become
auxiliary towers when the next section is appended, and keep their weights.
"""

from __future__ import annotations

import torch
from torch import nn

from bonsai.cell import CellInput, SearchCell

__all__ = ["SearchNetwork", "Tower"]


class Tower(nn.Module):
    """Batch norm, global average pooling and a linear classifier.

    A cell's output sums every path through it, so its scale grows with the
    number of open connections. The batch norm keeps the classifier's input at
    unit scale while pruning changes that number.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(x).mean((2, 3)))


def make_stem(in_channels: int, channels: int) -> nn.Sequential:
    """3 x 3 convolution and batch norm."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
    )


class SearchNetwork(nn.Module):
    """Stem, search cells and towers; `add_section` appends hyper-connected cells."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        channels: int,
        stem_channels: int,
        nodes: int,
        ops: tuple[str, ...],
        gate_init: float,
        pruner_m: float,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.channels = channels
        self.stem_channels = stem_channels
        self.nodes = nodes
        self.ops = ops
        self.gate_init = gate_init
        self.pruner_m = pruner_m
        self.stem = make_stem(in_channels, stem_channels)
        self.cells = nn.ModuleList()
        self.towers = nn.ModuleList()
        self.section_types: list[tuple[str, ...]] = []

    # -- growth ------------------------------------------------------------------------

    def outputs(self) -> list[CellInput]:
        """Describe the stem and every cell's output as inputs of a next cell."""
        result = [CellInput("stem", self.stem_channels, self.image_size)]
        for cell in self.cells:
            result.append(CellInput(f"c{cell.index}", cell.channels, cell.resolution))
        return result

    def add_section(self, cell_types: tuple[str, ...]) -> list[SearchCell]:
        """Append hyper-connected cells of `cell_types` and a new classification tower."""
        section = len(self.section_types)
        new_cells = []
        for cell_type in cell_types:
            earlier = self.outputs()
            previous = earlier[-1]
            if not self.cells:
                channels, resolution = self.channels, self.image_size
            else:
                channels, resolution = previous.channels, previous.resolution
            if cell_type == "reduction":
                channels, resolution = channels * 2, (resolution + 1) // 2
            cell = SearchCell(
                index=len(self.cells),
                cell_type=cell_type,
                section=section,
                nodes=self.nodes,
                channels=channels,
                resolution=resolution,
                input0=previous,
                input1_sources=earlier,
                ops=self.ops,
                gate_init=self.gate_init,
                pruner_m=self.pruner_m,
            )
            self.cells.append(cell)
            new_cells.append(cell)
        self.towers.append(Tower(new_cells[-1].channels, self.num_classes))
        self.section_types.append(tuple(cell_types))
        return new_cells

    def set_drop_path(self, probability: float) -> None:
        for cell in self.cells:
            cell.drop_path_probability = probability

    # -- forward -----------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the logits of every tower, the classification tower's last."""
        stem = self.stem(x)
        outputs = {"stem": stem}
        previous = stem
        logits = []
        section_ends = self.section_end_cells()
        for cell in self.cells:
            previous = cell(previous, outputs)
            outputs[f"c{cell.index}"] = previous
            if cell.index in section_ends:
                logits.append(self.towers[section_ends[cell.index]](previous))
        return logits

    def section_end_cells(self) -> dict[int, int]:
        """Map the index of each section's last cell to the section."""
        ends, count = {}, 0
        for section, types in enumerate(self.section_types):
            count += len(types)
            ends[count - 1] = section
        return ends

    # -- parameters and compression ----------------------------------------------------

    def gate_parameters(self) -> list[nn.Parameter]:
        return [cell.weights for cell in self.cells]

    def weight_parameters(self) -> list[nn.Parameter]:
        gate_ids = {id(p) for p in self.gate_parameters()}
        return [p for p in self.parameters() if id(p) not in gate_ids]

    def count_parameters(self, include_pruners: bool = False) -> int:
        params = self.parameters() if include_pruners else self.weight_parameters()
        return sum(p.numel() for p in params)

    def compression(self) -> torch.Tensor:
        """Vector of c_actual, one entry per cell."""
        return torch.stack([cell.compression() for cell in self.cells])

    def pruner_count(self) -> int:
        return sum(len(cell.pruner_ids) for cell in self.cells)
