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
from typing import Any

import torch
from torch import nn

__all__ = [
    "OPERATIONS",
    "OPERATION_NAMES",
    "OperationSpec",
    "DepthwiseConv2d",
    "ReLUConvBN",
    "create_operation",
]


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise k x k convolution at stride 1 that keeps the height and width.

    On the CPU a dilated one runs through `_DepthwiseConvFunction`, whose input
    gradient is a forward convolution with the flipped kernel.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__(
            channels,
            channels,
            kernel_size,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=channels,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and self.dilation != (1, 1):
            return _DepthwiseConvFunction.apply(x, self.weight, self.padding, self.dilation)
        return super().forward(x)


class _DepthwiseConvFunction(torch.autograd.Function):
    """Depthwise convolution at stride 1 with "same" padding and a faster input gradient.

    The input gradient of such a convolution is the same convolution with the
    kernel flipped in height and width. On the CPU of docs/benchmarks.md (torch
    2.14, oneDNN, channels-last), torch's own input gradient of a dilated
    depthwise convolution took about 4 times as long as that forward
    convolution. The weight gradient is torch's own. The function saves the
    input and the weight, as `nn.Conv2d` does, so memory is unchanged.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.dilation = dilation
        return nn.functional.conv2d(x, weight, None, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        groups = weight.shape[0]
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip((2, 3))
            grad_input = nn.functional.conv2d(
                grad, flipped, None, 1, ctx.padding, ctx.dilation, groups
            )
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                None,
                [1, 1],
                list(ctx.padding),
                list(ctx.dilation),
                False,
                [0, 0],
                groups,
                [False, True, False],
            )[1]
        return grad_input, grad_weight, None, None


class SepConv(nn.Sequential):
    """Separable convolution applied twice, DARTS-style, after an external ReLU.

    depthwise k x k -> pointwise 1 x 1 -> BN -> ReLU -> depthwise k x k -> pointwise -> BN.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(
            DepthwiseConv2d(channels, kernel_size),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            DepthwiseConv2d(channels, kernel_size),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )


class DilConv(nn.Sequential):
    """Dilated (rate 2) depthwise k x k conv -> pointwise 1 x 1 -> BN, after an external ReLU."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(
            DepthwiseConv2d(channels, kernel_size, dilation=2),
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
