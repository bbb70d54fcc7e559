"""The operations' own CPU code paths: dilated depthwise gradients and gated batch norm."""

import itertools

import pytest
import torch
from torch import nn

from bonsai import ops
from bonsai.memory import saved_tensor_bytes
from bonsai.ops import DepthwiseConv2d, ScaledBatchNorm2d, create_operation


def _gradients(run, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_()
    output = run(x)
    return (output, *torch.autograd.grad(output, (x, weight), grad))


def _assert_matches_conv2d(module: DepthwiseConv2d, x: torch.Tensor) -> None:
    """Check the module's output and gradients against `nn.functional.conv2d`'s."""
    grad = torch.randn(x.shape, dtype=x.dtype)

    def reference(inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(
            inputs, module.weight, None, 1, module.padding, module.dilation, x.shape[1]
        )

    ours = _gradients(module, x, module.weight, grad)
    expected = _gradients(reference, x, module.weight, grad)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("kernel", "dilation", "height", "width", "channels_last"),
    [
        (k, d, h, w, cl)
        for k, d, (h, w), cl in itertools.product(
            (3, 5), (2, 3), ((8, 8), (7, 9), (5, 16)), (True, False)
        )
    ],
)
def test_dilated_depthwise_matches_torch(
    kernel: int, dilation: int, height: int, width: int, channels_last: bool
) -> None:
    torch.manual_seed(0)
    module = DepthwiseConv2d(5, kernel, dilation).double()
    x = torch.randn(3, 5, height, width, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_matches_conv2d(module, x)


@pytest.mark.parametrize("dilation", [1, 2])
def test_windowed_5x5_matches_torch(monkeypatch: pytest.MonkeyPatch, dilation: int) -> None:
    monkeypatch.setattr(ops, "WINDOWED_5X5_MIN_ELEMENTS", 0)
    torch.manual_seed(0)
    module = DepthwiseConv2d(5, 5, dilation).double()
    x = torch.randn(3, 5, 7, 10, dtype=torch.float64)
    _assert_matches_conv2d(module, x.contiguous(memory_format=torch.channels_last))


def test_dilated_depthwise_saves_what_conv2d_saves() -> None:
    module = DepthwiseConv2d(4, 3, 2)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    ours, _ = saved_tensor_bytes(lambda: module(x), [x, module.weight])
    plain, _ = saved_tensor_bytes(lambda: nn.Conv2d.forward(module, x), [x, module.weight])
    assert ours == plain == 0


def _norm_pair() -> tuple[ScaledBatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(1)
    scaled = ScaledBatchNorm2d(6).double()
    with torch.no_grad():
        scaled.weight.uniform_(0.5, 1.5)
        scaled.bias.uniform_(-0.5, 0.5)
    plain = nn.BatchNorm2d(6).double()
    plain.load_state_dict(scaled.state_dict())
    return scaled, plain


@pytest.mark.parametrize("training", [True, False])
def test_scaled_batch_norm_equals_scale_times_norm(training: bool) -> None:
    scaled, plain = _norm_pair()
    scaled.train(training)
    plain.train(training)
    x = (torch.randn(4, 6, 5, 5, dtype=torch.float64) * 3 + 1).requires_grad_()
    grad = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    results = []
    for norm, forward in (
        (scaled, lambda s: scaled(x, s)),
        (plain, lambda s: s * plain(x)),
    ):
        scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        output = forward(scale)
        grads = torch.autograd.grad(output, (x, scale, norm.weight, norm.bias), grad)
        results.append((output, *grads, norm.running_mean, norm.running_var))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want)
    assert int(scaled.num_batches_tracked) == int(plain.num_batches_tracked) == int(training)


def test_scaled_batch_norm_without_scale_is_batch_norm() -> None:
    scaled, plain = _norm_pair()
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(scaled(x), plain(x))


def test_scaled_norm_rejects_unsupported() -> None:
    norm = ScaledBatchNorm2d(3, momentum=None)
    with pytest.raises(ValueError, match="momentum=None"):
        norm(torch.randn(2, 3, 4, 4), torch.tensor(0.5))


@pytest.mark.parametrize("op", ["sep_conv_3x3", "dil_conv_5x5"])
def test_gated_norm_saves_one_activation(op: str) -> None:
    module = create_operation(op, 4)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    total = torch.randn(2, 4, 8, 8)
    gate = torch.tensor(1.0, requires_grad=True)
    exclude = [x, total, gate, *module.parameters()]
    inside, _ = saved_tensor_bytes(lambda: total + module(x, gate), exclude)
    after, _ = saved_tensor_bytes(lambda: torch.addcmul(total, module(x), gate), exclude)
    # The scaled norm also saves its weight scale * gamma (4 channels), a new tensor.
    activation = x.numel() * x.element_size()
    assert after - inside == activation - 4 * x.element_size()
