"""The operation set of every edge, as a registry of factories.

The set is PC-DARTS's without "none": identity, 3x3 average and max pooling,
3x3 and 5x5 separable convolutions, 3x3 and 5x5 dilated convolutions. Every
operation keeps the shape of its input, because a reduction cell changes the
shape in its input adapters (see `bonsai.cell`) and its edges run at stride 1.

Convolutions start with a ReLU in DARTS. Here that ReLU is applied once per
source node and shared by every convolution reading the node, so the modules
below begin after it. Parameter-free operations read the node itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "OPERATIONS",
    "OPERATION_NAMES",
    "OperationSpec",
    "ReLUConvBN",
    "create_operation",
]


class SepConv(nn.Sequential):
    """Separable convolution applied twice, DARTS-style, after an external ReLU.

    depthwise k x k -> pointwise 1 x 1 -> BN -> ReLU -> depthwise k x k -> pointwise -> BN.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        padding = kernel_size // 2
        super().__init__(
            nn.Conv2d(
                channels, channels, kernel_size, padding=padding, groups=channels, bias=False
            ),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(
                channels, channels, kernel_size, padding=padding, groups=channels, bias=False
            ),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )


class DilConv(nn.Sequential):
    """Dilated (rate 2) depthwise k x k conv -> pointwise 1 x 1 -> BN, after an external ReLU."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        padding = kernel_size - 1  # keeps the size at dilation 2
        super().__init__(
            nn.Conv2d(
                channels,
                channels,
                kernel_size,
                padding=padding,
                dilation=2,
                groups=channels,
                bias=False,
            ),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )


class ReLUConvBN(nn.Sequential):
    """ReLU -> optional average pooling by `stride` -> 1 x 1 convolution -> BN.

    Brings a tensor of `in_channels` to `out_channels` and divides its height and
    width by `stride`; used to adapt cell inputs to a cell's shape.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        layers: list[nn.Module] = [nn.ReLU()]
        if stride > 1:
            layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        layers += [
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        super().__init__(*layers)


@dataclass(frozen=True)
class OperationSpec:
    """One registered operation.

    `factory(channels)` builds the module of a parametric operation and is None
    for a parameter-free one, whose `apply(x)` is computed directly from the node.
    `reads_relu` is true when the module reads ReLU(x) rather than x.
    """

    name: str
    parametric: bool
    factory: Callable[[int], nn.Module] | None = None
    apply: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def reads_relu(self) -> bool:
        return self.parametric


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.max_pool2d(x, 3, 1, 1)


OPERATIONS: dict[str, OperationSpec] = {
    "identity": OperationSpec("identity", False, apply=_identity),
    "avg_pool_3x3": OperationSpec("avg_pool_3x3", False, apply=_avg_pool),
    "max_pool_3x3": OperationSpec("max_pool_3x3", False, apply=_max_pool),
    "sep_conv_3x3": OperationSpec("sep_conv_3x3", True, factory=lambda c: SepConv(c, 3)),
    "sep_conv_5x5": OperationSpec("sep_conv_5x5", True, factory=lambda c: SepConv(c, 5)),
    "dil_conv_3x3": OperationSpec("dil_conv_3x3", True, factory=lambda c: DilConv(c, 3)),
    "dil_conv_5x5": OperationSpec("dil_conv_5x5", True, factory=lambda c: DilConv(c, 5)),
}

OPERATION_NAMES: tuple[str, ...] = tuple(OPERATIONS)


def create_operation(name: str, channels: int) -> nn.Module:
    """Build the module of parametric operation `name` for `channels` channels."""
    spec = OPERATIONS[name]
    if spec.factory is None:
        raise ValueError(f"operation {name!r} has no parameters and no module")
    return spec.factory(channels)
