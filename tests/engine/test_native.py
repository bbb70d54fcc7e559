"""The C kernels of `bonsai.native` against torch's own kernels, and the fallback without them."""

import logging
import os
import shutil

import pytest
import torch
from torch import nn

from bonsai import native, ops
from bonsai.memory import saved_tensor_bytes
from bonsai.ops import DepthwiseConv2d, ScaledBatchNorm2d

requires_kernels = pytest.mark.skipif(
    not native.available(), reason="no C compiler here: bonsai.native fell back to torch"
)


@pytest.fixture
def one_thread():
    """The kernels are taken only when torch runs on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_library(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """An empty kernel cache, and `bonsai.native` forgetting the library it loaded."""
    monkeypatch.setenv("BONSAI_KERNEL_CACHE", str(tmp_path / "kernels"))
    native._library.cache_clear()
    yield tmp_path / "kernels"
    native._library.cache_clear()


def _reference_weight_grad(grad, x, kernel: int, dilation: int) -> torch.Tensor:
    channels = x.shape[1]
    padding = dilation * (kernel - 1) // 2
    return torch.ops.aten.convolution_backward(
        grad.double(),
        x.double(),
        torch.empty(channels, 1, kernel, kernel, dtype=torch.float64),
        None,
        [1, 1],
        [padding, padding],
        [dilation, dilation],
        False,
        [0, 0],
        channels,
        [False, True, False],
    )[1]


@requires_kernels
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2, 3])
# 8 and 16 channels take the 8-wide vector loop, 12 also the 4-wide one, 5 and 19 the scalar one.
@pytest.mark.parametrize("channels", [5, 8, 12, 16, 19])
def test_depthwise_weight_grad_matches_torch(kernel: int, dilation: int, channels: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, channels, 7, 10)
    grad = torch.randn(3, channels, 7, 10)
    expected = _reference_weight_grad(grad, x, kernel, dilation)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = native.depthwise_weight_grad(
            grad.contiguous(memory_format=layout), x.contiguous(memory_format=layout),
            kernel, dilation,
        )  # fmt: skip
        assert got.shape == (channels, 1, kernel, kernel)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-4)


def test_kernels_build_where_a_compiler_is_found() -> None:
    """The other kernel tests skip without the library, so a broken build must fail here."""
    if native._compiler() is None:
        pytest.skip("no C compiler here")
    if os.environ.get("BONSAI_NATIVE") is not None and not native._enabled():
        pytest.skip("the kernels are disabled by BONSAI_NATIVE")
    assert native.available()


def test_depthwise_weight_grad_rejects_bad_input() -> None:
    if not native.available():
        pytest.skip("no C compiler here")
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32 CPU tensors, got torch.float64"):
        native.depthwise_weight_grad(x, x, 3, 1)
    with pytest.raises(ValueError, match="kernel size 9 is not in 1..7"):
        native.depthwise_weight_grad(x.float(), x.float(), 9, 1)


@requires_kernels
@pytest.mark.parametrize(("kernel", "dilation"), [(5, 1), (3, 2), (5, 2)])
def test_depthwise_module_takes_the_kernel(one_thread, kernel: int, dilation: int) -> None:
    torch.manual_seed(0)
    module = DepthwiseConv2d(8, kernel, dilation)
    x = torch.randn(4, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    assert ops._takes_native(kernel, x)
    x.requires_grad_()
    grad = torch.randn(4, 8, 9, 9)
    got = torch.autograd.grad(module(x), (x, module.weight), grad)
    xd, weight = x.detach().double().requires_grad_(), module.weight.detach().double()
    weight.requires_grad_()
    output = nn.functional.conv2d(xd, weight, None, 1, module.padding, module.dilation, 8)
    expected = torch.autograd.grad(output, (xd, weight), grad.double())
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)


def _norms(channels: int) -> tuple[ScaledBatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(1)
    ours = ScaledBatchNorm2d(channels)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
        ours.running_mean.uniform_(-1, 1)
    reference = nn.BatchNorm2d(channels).double()
    reference.load_state_dict(ours.state_dict())
    return ours, reference


@requires_kernels
@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("channels", [3, 8, 13])
@pytest.mark.parametrize("offset", [1.0, 1000.0])
def test_batch_norm_matches_torch(one_thread, scaled: bool, channels: int, offset: float) -> None:
    """Output, gradients and running statistics, in float32 against torch in float64.

    An offset of 500 standard deviations checks the variance far from zero
    mean, where float32 sums of squares would lose it to rounding. float32
    represents 1000 only to within 6e-5, so the input itself limits the agreement
    there to about 1e-4 of the output's scale.
    """
    ours, reference = _norms(channels)
    x = torch.randn(5, channels, 6, 7) * 2 + offset
    x = x.contiguous(memory_format=torch.channels_last)
    assert ours._takes_native(x)
    grad = torch.randn(5, channels, 6, 7)
    results = []
    for norm, inputs, dtype in ((ours, x, torch.float32), (reference, x.double(), torch.float64)):
        inputs = inputs.detach().requires_grad_()
        if scaled:
            scale = torch.tensor(0.7, dtype=dtype, requires_grad=True)
            output = norm(inputs, scale) if norm is ours else scale * norm(inputs)
            wrt = (inputs, norm.weight, norm.bias, scale)
        else:
            output = norm(inputs)
            wrt = (inputs, norm.weight, norm.bias)
        grads = torch.autograd.grad(output, wrt, grad.to(dtype))
        results.append([output, *grads, norm.running_mean, norm.running_var])
    for got, want in zip(*results, strict=True):
        scale = max(float(want.detach().abs().max()), 1.0)
        tolerance = 2e-5 if offset == 1.0 else 2e-4
        torch.testing.assert_close(
            got.double() / scale, want / scale, rtol=0, atol=tolerance
        )  # fmt: skip
    assert int(ours.num_batches_tracked) == 1
    assert results[0][0].is_contiguous(memory_format=torch.channels_last)


@requires_kernels
def test_batch_norm_kernel_saves_no_more_than_torch(one_thread) -> None:
    """Both keep x (excluded here) and per-channel vectors, never the output.

    torch's also keeps the running statistics, for a backward pass in eval mode.
    """
    ours, _ = _norms(4)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    exclude = [x, *ours.parameters()]
    native_bytes, _ = saved_tensor_bytes(lambda: ours(x), exclude)
    torch_bytes, _ = saved_tensor_bytes(lambda: nn.BatchNorm2d.forward(ours, x), exclude)
    assert 0 < native_bytes <= torch_bytes < x.numel() * x.element_size()


@requires_kernels
def test_batch_norm_falls_back_off_the_kernel_path(one_thread) -> None:
    """NCHW input, eval mode and several threads take torch's batch norm, with the same result."""
    ours, reference = _norms(4)
    x = torch.randn(3, 4, 5, 5)
    assert not ours._takes_native(x)
    torch.testing.assert_close(ours(x).double(), reference(x.double()), rtol=1e-5, atol=1e-5)
    torch.set_num_threads(2)
    assert not ours._takes_native(x.contiguous(memory_format=torch.channels_last))


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    monkeypatch.setenv("BONSAI_NATIVE", "0")
    assert not native.available()
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    assert not ops._takes_native(5, x)
    assert not ScaledBatchNorm2d(8)._takes_native(x)
    # The module still trains, on torch's kernels.
    module = DepthwiseConv2d(8, 5, 2)
    module(x.requires_grad_()).sum().backward()
    assert module.weight.grad is not None


def test_invalid_native_setting_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BONSAI_NATIVE", "of")
    monkeypatch.setattr(native, "_warned_values", set())
    with caplog.at_level(logging.WARNING, logger="bonsai.native"):
        assert native._enabled()
        assert native._enabled()
    warnings = [r.getMessage() for r in caplog.records if "BONSAI_NATIVE" in r.getMessage()]
    assert warnings == [
        "invalid BONSAI_NATIVE='of', so the C kernels stay on. Use 0, false, no or off "
        "to turn them off, or 1, true, yes or on."
    ]


@pytest.mark.parametrize("value", ["0", "false", "No", " OFF "])
def test_native_setting_turns_kernels_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BONSAI_NATIVE", value)
    assert not native._enabled()


def test_compiler_failure_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, fresh_library, caplog: pytest.LogCaptureFixture
) -> None:
    """`false` as the compiler exits with status 1, as a broken compiler would."""
    monkeypatch.setenv("CC", "false")
    with caplog.at_level(logging.WARNING, logger="bonsai.native"):
        assert not native.available()
    assert f"compiling the C kernels with {shutil.which('false')} -O3" in caplog.text
    assert "failed with exit status 1" in caplog.text
    assert "BONSAI_NATIVE=0" in caplog.text
    assert not any(fresh_library.glob("*.so"))


def test_missing_cc_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, fresh_library, caplog: pytest.LogCaptureFixture
) -> None:
    """A `$CC` that names no program is reported, not replaced by another compiler."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with caplog.at_level(logging.WARNING, logger="bonsai.native"):
        assert not native.available()
    assert "the C compiler of CC='/nonexistent/cc' was not found" in caplog.text
    assert not fresh_library.exists()


def test_cc_keeps_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "sh -c 'exit 3'")
    assert native._compiler() == [shutil.which("sh"), "-c", "exit 3"]


def test_no_compiler_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, fresh_library, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger="bonsai.native"):
        assert not native.available()
    assert "no C compiler found" in caplog.text
    assert "Install gcc" in caplog.text


def test_cache_file_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, fresh_library, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_library.parent.mkdir(parents=True, exist_ok=True)
    fresh_library.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="bonsai.native"):
        assert native.library_path() is None
    assert f"the kernel cache {fresh_library} is not a directory" in caplog.text
    assert "Set BONSAI_KERNEL_CACHE to a writable directory" in caplog.text


@requires_kernels
def test_library_is_built_once_per_source(fresh_library) -> None:
    first = native.library_path()
    assert first is not None and first.parent == fresh_library
    built = first.stat().st_mtime_ns
    assert native.library_path() == first
    assert first.stat().st_mtime_ns == built
    names = sorted(path.name for path in fresh_library.iterdir())
    assert names == [first.name, first.name + ".sha256"]


@requires_kernels
def test_damaged_library_is_rebuilt(fresh_library, caplog: pytest.LogCaptureFixture) -> None:
    """A library cut short would crash the process with SIGBUS when loaded."""
    path = native.library_path()
    assert path is not None
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 3])
    with caplog.at_level(logging.WARNING, logger="bonsai.native"):
        assert native.library_path() == path
    assert "do not match their checksum, so they are rebuilt" in caplog.text
    assert path.stat().st_size == len(whole)
    assert native.available()


@requires_kernels
def test_library_without_checksum_is_rebuilt(fresh_library) -> None:
    path = native.library_path()
    assert path is not None
    checksum = path.with_name(path.name + ".sha256")
    checksum.unlink()
    assert native.library_path() == path
    assert checksum.is_file()


@pytest.mark.parametrize(
    ("device", "threads", "expected"),
    [
        ("cuda", 1, "off (training on cuda)"),
        ("cpu", 2, "off (torch runs 2 threads and the kernels run on 1)"),
    ],
)
def test_state_names_why_kernels_are_off(
    device: str, threads: int, expected: str, one_thread
) -> None:
    torch.set_num_threads(threads)
    assert native.state(torch.device(device)) == expected


def test_state_off_by_environment(monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    monkeypatch.setenv("BONSAI_NATIVE", "0")
    assert native.state() == "off (BONSAI_NATIVE)"
