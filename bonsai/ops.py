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

from bonsai import native

__all__ = [
    "OPERATIONS",
    "OPERATION_NAMES",
    "OperationSpec",
    "DepthwiseConv2d",
    "ReLUConvBN",
    "ScaledBatchNorm2d",
    "ScaledSequential",
    "create_operation",
]


# From this many input elements on, an undilated 5 x 5 weight gradient is taken as four
# 3 x 3 ones (`_weight_grad_5x5`). On the CPU of docs/benchmarks.md the four were slower
# at 8 channels, 16x16, batch 32 (65,536 elements: 0.57 against 0.44 ms). They were
# faster at every larger size measured, from 225,792 elements on (1.1 against 1.8 ms).
# The bound lies between, and is an estimate.
WINDOWED_5X5_MIN_ELEMENTS = 2**17


def _takes_windows(kernel: int, x: torch.Tensor) -> bool:
    """Return whether the undilated weight gradient on x is taken by `_weight_grad_5x5`."""
    return kernel == 5 and x.numel() >= WINDOWED_5X5_MIN_ELEMENTS


def _takes_native(kernel: int, x: torch.Tensor) -> bool:
    """Return whether the weight gradient on x is taken by the C kernel of `bonsai.native`."""
    return x.dtype == torch.float32 and kernel <= native.MAX_KERNEL and native.active()


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise k x k convolution at stride 1 that keeps the height and width.

    On the CPU a dilated one, or a large 5 x 5 one, runs through
    `_DepthwiseFunction`, whose gradients take oneDNN's fast kernels. Without
    autograd (inference) it runs as a plain convolution, because both compute
    the same forward pass and the function only adds its call overhead.
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
        kernel = self.kernel_size[0]
        if (
            x.device.type == "cpu"
            and torch.is_grad_enabled()
            and (
                self.dilation[0] > 1
                or kernel == 5
                and (_takes_windows(kernel, x) or _takes_native(kernel, x))
            )
        ):
            return _DepthwiseFunction.apply(x, self.weight, self.padding[0], self.dilation[0])
        return super().forward(x)


class _DepthwiseFunction(torch.autograd.Function):
    """Depthwise convolution at stride 1 with "same" padding, and faster CPU gradients.

    oneDNN, the CPU back end of torch 2.14, has a direct depthwise kernel for
    the forward pass and for an undilated 3 x 3 weight gradient. It computes a
    dilated weight gradient through im2col and a matrix product, and a 5 x 5
    one, or a dilated input gradient, with its generic grouped kernel. At 8
    channels, 16 x 16, batch 32, one thread, the weight gradient of a 3 x 3
    kernel at dilation 2 took 1.0 ms, against 0.08 ms undilated
    (docs/benchmarks.md). So the backward pass is rewritten in terms of
    undilated kernels, which are faster:

    - The input gradient of a stride-1 convolution with "same" padding is the
      same convolution of the output gradient with the kernel flipped in
      height and width, a forward convolution.
    - The weight gradient is dW[i, j] = sum over n, h, w of
      g[n, h, w] * x[n, h + d*(i - r), w + d*(j - r)] per channel, for a
      kernel of radius r and dilation d. Both terms of a product lie on the
      same residue class of h, and of w, modulo d. The sum therefore splits
      into d * d undilated sums over those subgrids, which `_fold_residues`
      lays out as batch entries of one undilated gradient.
    - On large inputs, an undilated 5 x 5 weight gradient is four 3 x 3 ones
      (`_weight_grad_5x5`).

    The function saves the input and the weight, as `nn.Conv2d` does, so
    training memory is unchanged.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.dilation = dilation
        return nn.functional.conv2d(x, weight, None, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        d, groups = ctx.dilation, weight.shape[0]
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip((2, 3))
            grad_input = nn.functional.conv2d(grad, flipped, None, 1, ctx.padding, d, groups)
        if ctx.needs_input_grad[1]:
            kernel = weight.shape[-1]
            if _takes_native(kernel, x):
                grad_weight = native.depthwise_weight_grad(grad, x, kernel, d)
            else:
                if d > 1:
                    grad, x = _fold_residues(grad, d), _fold_residues(x, d)
                if _takes_windows(kernel, x):
                    grad_weight = _weight_grad_5x5(grad, x)
                else:
                    grad_weight = _weight_grad(grad, x, kernel, ctx.padding // d)
        return grad_input, grad_weight, None, None


def _weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: int, padding: int) -> torch.Tensor:
    """Torch's weight gradient of an undilated depthwise convolution at stride 1."""
    channels = x.shape[1]
    return torch.ops.aten.convolution_backward(
        grad,
        x,
        x.new_empty(channels, 1, kernel, kernel),
        None,
        [1, 1],
        [padding, padding],
        [1, 1],
        False,
        [0, 0],
        channels,
        [False, True, False],
    )[1]


def _weight_grad_5x5(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Undilated 5 x 5 weight gradient (padding 2) as four 3 x 3 ones, which oneDNN runs directly.

    With x padded by 2, the 3 x 3 gradient (padding 0) over the window of x that
    starts a rows and b columns in gives taps a..a+2 and b..b+2 of the 5 x 5
    kernel. Windows at a, b in {0, 2} cover all 25 taps; row and column 2 come
    twice and are taken once.
    """
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    blocks = {}
    for a in (0, 2):
        for b in (0, 2):
            window = padded[:, :, a : a + h + 2, b : b + w + 2]
            blocks[a, b] = _weight_grad(
                grad, window.contiguous(memory_format=torch.channels_last), 3, 0
            )
    top = torch.cat([blocks[0, 0], blocks[0, 2][..., 1:]], 3)
    bottom = torch.cat([blocks[2, 0][..., 1:, :], blocks[2, 2][..., 1:, 1:]], 3)
    return torch.cat([top, bottom], 2)


def _fold_residues(t: torch.Tensor, d: int) -> torch.Tensor:
    """(N, C, H, W) to (d*d*N, C, H/d, W/d): entry (p, q, n) is t[n, :, p::d, q::d].

    H and W are first padded with zeros up to multiples of d. Zeros are what
    the convolution's padding reads there, and in the output gradient they add
    nothing to the weight gradient. The result is channels-last, the layout
    that oneDNN's fast kernels read.
    """
    n, c, h, w = t.shape
    pad_h, pad_w = -h % d, -w % d
    if pad_h or pad_w:
        t = nn.functional.pad(t, (0, pad_w, 0, pad_h))
        h, w = h + pad_h, w + pad_w
    rows = t.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c)
    folded = rows.permute(2, 4, 0, 1, 3, 5).reshape(d * d * n, h // d, w // d, c)
    return folded.permute(0, 3, 1, 2)


class ScaledBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose output can be multiplied by a scalar scale within the norm.

    `forward(x, scale)` equals `scale * BatchNorm2d(x)`, computed as batch norm
    with weight `scale * gamma` and bias `scale * beta`. Running statistics
    describe x and do not depend on the scale. Multiplying the output instead
    would save that output for the scale's gradient and cost two more passes
    over it. Inside the norm, the scale's gradient comes from the gradients of
    gamma and beta, which batch norm's backward computes anyway. With a
    pruner's gate as the scale, a gated convolution therefore keeps one
    activation fewer for backward than a convolution followed by a gate.

    In training on the CPU, a channels-last float32 input on one thread goes
    through the C kernels of `bonsai.native` (`_BatchNormFunction`).
    """

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if scale is not None and not (
            self.affine and self.track_running_stats and self.momentum is not None
        ):
            raise ValueError(
                "ScaledBatchNorm2d can scale only a norm with affine=True, "
                "track_running_stats=True and a momentum; got "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
                f"momentum={self.momentum}"
            )
        if self.training and self._takes_native(x):
            self.num_batches_tracked.add_(1)
            return _BatchNormFunction.apply(
                x,
                self.weight,
                self.bias,
                scale,
                self.running_mean,
                self.running_var,
                self.momentum,
                self.eps,
            )
        if scale is None:
            return super().forward(x)
        if self.training:
            self.num_batches_tracked.add_(1)
        return nn.functional.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight * scale,
            self.bias * scale,
            self.training,
            self.momentum,
            self.eps,
        )

    def _takes_native(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and self.affine
            and self.track_running_stats
            and self.momentum is not None
            and self.running_mean is not None
            and self.running_mean.dtype == torch.float32
            and native.active()
        )


class _BatchNormFunction(torch.autograd.Function):
    """Training-mode `scale * batch_norm(x)` through the C kernels of `bonsai.native`.

    On one channels-last (32, 8, 16, 16) tensor, forward and backward took 0.24
    ms with torch's CPU batch norm and 0.15 ms here (docs/benchmarks.md), most
    of torch's time being fixed costs. Like torch's, the function saves x and
    the per-channel mean and invstd, and not its output.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        scale: torch.Tensor | None,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        factor = 1.0 if scale is None else float(scale)
        y, mean, invstd = native.batch_norm_forward(
            x, weight.detach(), bias.detach(), factor, running_mean, running_var, momentum, eps
        )
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.factor = factor
        ctx.scaled = scale is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias, grad_scale = native.batch_norm_backward(
            grad, x, mean, invstd, weight.detach(), bias.detach(), ctx.factor
        )
        return (
            grad_x,
            grad_weight,
            grad_bias,
            grad_scale if ctx.scaled else None,
            None,
            None,
            None,
            None,
        )


class ScaledSequential(nn.Sequential):
    """Layers whose last one is a `ScaledBatchNorm2d`; `forward(x, scale)` scales its output."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        *layers, norm = self
        for layer in layers:
            x = layer(x)
        return norm(x, scale)


class SepConv(ScaledSequential):
    """Separable convolution applied twice, DARTS-style, after an external ReLU.

    depthwise k x k -> pointwise 1 x 1 -> BN -> ReLU -> depthwise k x k -> pointwise -> BN.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(
            DepthwiseConv2d(channels, kernel_size),
            nn.Conv2d(channels, channels, 1, bias=False),
            ScaledBatchNorm2d(channels),
            nn.ReLU(),
            DepthwiseConv2d(channels, kernel_size),
            nn.Conv2d(channels, channels, 1, bias=False),
            ScaledBatchNorm2d(channels),
        )


class DilConv(ScaledSequential):
    """Dilated (rate 2) depthwise k x k conv -> pointwise 1 x 1 -> BN, after an external ReLU."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(
            DepthwiseConv2d(channels, kernel_size, dilation=2),
            nn.Conv2d(channels, channels, 1, bias=False),
            ScaledBatchNorm2d(channels),
        )


class ReLUConvBN(ScaledSequential):
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
            ScaledBatchNorm2d(out_channels),
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
