"""The differentiable pruner of Kim et al. (2019), as adapted by Bonsai-Net.

A pruner has one scalar weight w and scales a whole tensor x by

    G(w) = 1 if w > 0 else 0            (a step: derivative 0)
    S(w) = (M w - floor(M w)) / M        (a saw wave: derivative 1, value in [0, 1/M))
    P(x; w) = (G(w) + S(w)) x

With a large M the factor is 0 or 1 to within 1/M, yet its derivative with respect
to w is 1 almost everywhere, so d P / d w = x and gradient descent learns the gate
together with the model's weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

__all__ = [
    "PrunerId",
    "gate_values",
    "input1_pruner_id",
    "op_pruner_id",
    "parse_pruner_id",
    "step_gate",
]


def gate_values(weights: torch.Tensor, m: float) -> torch.Tensor:
    """Return G(w) + S(w) elementwise; differentiable, with d/dw = 1."""
    scaled = weights * m
    saw = (scaled - torch.floor(scaled)) / m
    return (weights > 0).to(weights.dtype) + saw


def step_gate(weights: torch.Tensor) -> torch.Tensor:
    """Return G(w): 1 where the gate is on (w > 0), else 0."""
    return (weights > 0).to(weights.dtype)


def op_pruner_id(cell: int, source: int, target: int, op: str) -> str:
    """Id of the pruner of operation `op` on edge source -> target of cell `cell`."""
    return f"c{cell}.e{source}_{target}.{op}"


def input1_pruner_id(cell: int, source: str) -> str:
    """Id of the pruner of Input-1 term `source` ("stem" or "c{k}") of cell `cell`."""
    return f"c{cell}.in1.{source}"


_OP_ID = re.compile(r"^c(\d+)\.e(\d+)_(\d+)\.([a-z0-9_]+)$")
_INPUT1_ID = re.compile(r"^c(\d+)\.in1\.(stem|c\d+)$")


@dataclass(frozen=True)
class PrunerId:
    """A parsed pruner id: an operation on an edge, or a term of Input 1."""

    cell: int
    kind: str  # "op" or "input1"
    source: int | str
    target: int | None = None
    op: str | None = None


def parse_pruner_id(pruner_id: str) -> PrunerId:
    """Parse an id made by `op_pruner_id` or `input1_pruner_id`; ValueError otherwise."""
    match = _OP_ID.match(pruner_id)
    if match:
        cell, source, target, op = match.groups()
        return PrunerId(int(cell), "op", int(source), int(target), op)
    match = _INPUT1_ID.match(pruner_id)
    if match:
        return PrunerId(int(match.group(1)), "input1", match.group(2))
    raise ValueError(f"invalid pruner id {pruner_id!r}")
