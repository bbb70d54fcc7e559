"""C kernels for the CPU, compiled on first use with the machine's C compiler.

Two kernels replace torch's where its CPU back end is slow on the small,
channels-last tensors of a search. One is the weight gradient of a depthwise
convolution (`kernels/depthwise.c`), which oneDNN computes slowly for 5 x 5
and dilated kernels. The other is batch norm in training mode
(`kernels/batch_norm.c`), whose fixed costs dominate at 8 channels. The library
is built once per source, compiler flags and CPU into `$BONSAI_KERNEL_CACHE`
(default `~/.cache/bonsai-net`) and loaded with ctypes. Without a compiler,
or with `BONSAI_NATIVE=0`, every caller falls back to torch's own kernels:
the kernels change speed, never results beyond float rounding.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "MAX_KERNEL",
    "active",
    "available",
    "batch_norm_backward",
    "batch_norm_forward",
    "depthwise_weight_grad",
    "library_path",
    "state",
]

logger = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
SOURCES = (KERNELS / "depthwise.c", KERNELS / "batch_norm.c")
MAX_KERNEL = 7  # MAX_KERNEL of depthwise.c
COMPILE_TIMEOUT_SECONDS = 120


_ON = frozenset({"", "1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})
_warned_values: set[str] = set()


def _enabled() -> bool:
    """Read `BONSAI_NATIVE`. An unknown value keeps the kernels on, with one warning per value."""
    value = os.environ.get("BONSAI_NATIVE", "1")
    normalized = value.strip().lower()
    if normalized in _OFF:
        return False
    if normalized not in _ON and value not in _warned_values:
        _warned_values.add(value)
        logger.warning(
            "invalid BONSAI_NATIVE=%r, so the C kernels stay on. Use 0, false, no or off "
            "to turn them off, or 1, true, yes or on.",
            value,
        )
    return True


def _compiler() -> list[str] | None:
    """Return the C compiler command, or None when none is found.

    `$CC`, with any flags it carries, is taken when set, and is not replaced by
    another compiler when missing. Otherwise the first of Python's own build
    compiler, cc, gcc and clang that is on PATH.
    """
    configured = os.environ.get("CC", "").strip()
    if configured:
        command = shlex.split(configured)
        path = shutil.which(command[0])
        return [path, *command[1:]] if path else None
    built_with = (sysconfig.get_config_var("CC") or "").split()[:1]
    for candidate in (*built_with, "cc", "gcc", "clang"):
        path = shutil.which(candidate)
        if path:
            return [path]
    return None


def _cpu_description() -> str:
    """Describe the CPU that the compiled code depends on: the architecture and the CPU's flags.

    The library is compiled with `-march=native`, so a cache shared by machines
    with different CPUs must keep one build per CPU.
    """
    description = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return f"{description} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"{description} {platform.processor()}"


def _cache_dir() -> Path:
    configured = os.environ.get("BONSAI_KERNEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bonsai-net"


def _flags() -> list[str]:
    flags = ["-O3", "-shared", "-fPIC", "-std=gnu11"]
    if platform.machine().lower() in {"x86_64", "amd64", "aarch64", "arm64"}:
        flags.append("-march=native")
    return flags


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_intact(target: Path) -> bool:
    """Return whether `target` is a cached library whose checksum file matches it.

    A library cut short (a full disk, a copy stopped half way) can crash the
    process with SIGBUS when it is loaded, so a cached file is loaded only when
    it matches the checksum written after it was built.
    """
    checksum = target.with_name(target.name + ".sha256")
    if not (target.is_file() and checksum.is_file()):
        return False
    if checksum.read_text().strip() == _checksum(target):
        return True
    logger.warning(
        "the cached C kernels %s do not match their checksum, so they are rebuilt", target
    )
    return False


def _build(compiler: list[str], flags: list[str], target: Path) -> None:
    """Compile the sources into `target`, then write its checksum file.

    Both files are written beside their final names and renamed, so that
    processes building at the same time never load a half-written file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [*compiler, *flags, "-o", str(built), *map(str, SOURCES), "-lm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
        )
        checksum = Path(scratch) / (target.name + ".sha256")
        checksum.write_text(_checksum(built) + "\n")
        os.replace(built, target)
        os.replace(checksum, target.with_name(checksum.name))


def library_path() -> Path | None:
    """Compile the kernels unless an intact build for this source, compiler and CPU is cached.

    Returns the library's path, or None (with a warning naming the reason) when
    no compiler is found, compilation fails or the cache is not writable.
    """
    compiler = _compiler()
    if compiler is None:
        configured = os.environ.get("CC", "").strip()
        if configured:
            logger.warning(
                "the C compiler of CC=%r was not found, so torch's slower kernels are used. "
                "Set CC to an installed compiler or unset it, or set BONSAI_NATIVE=0.",
                configured,
            )
        else:
            logger.warning(
                "no C compiler found (tried Python's build compiler, cc, gcc and clang), "
                "so torch's slower kernels are used. Install gcc, or set BONSAI_NATIVE=0 "
                "to silence this."
            )
        return None
    flags = _flags()
    parts = [path.read_bytes() for path in SOURCES]
    parts += [" ".join([*compiler, *flags]).encode(), _cpu_description().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    cache_dir = _cache_dir()
    target = cache_dir / f"kernels-{key}.so"
    if cache_dir.exists() and not cache_dir.is_dir():
        logger.warning(
            "the kernel cache %s is not a directory, so torch's slower kernels are used. "
            "Set BONSAI_KERNEL_CACHE to a writable directory, or BONSAI_NATIVE=0.",
            cache_dir,
        )
        return None
    try:
        if _is_intact(target):
            return target
        _build(compiler, flags, target)
    except subprocess.CalledProcessError as error:
        logger.warning(
            "compiling the C kernels with %s failed with exit status %d, so torch's slower "
            "kernels are used (set BONSAI_NATIVE=0 to silence this). Compiler output:\n%s",
            shlex.join(error.cmd),
            error.returncode,
            (error.stderr or "").strip() or "(none)",
        )
        return None
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning(
            "could not build the C kernels in %s (%s), so torch's slower kernels are used. "
            "Set BONSAI_KERNEL_CACHE to a writable directory, or BONSAI_NATIVE=0.",
            cache_dir,
            error,
        )
        return None
    return target


@cache
def _library() -> ctypes.CDLL | None:
    path = library_path()
    if path is None:
        return None
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        logger.warning(
            "could not load %s (%s), so torch's slower kernels are used. Delete the file "
            "to rebuild it, or set BONSAI_NATIVE=0.",
            path,
            error,
        )
        return None
    pointer, size, real = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
    signatures = {
        "depthwise_weight_grad": [pointer] * 3 + [size] * 6,
        "batch_norm_forward": [pointer, pointer, size, size, pointer, pointer]
        + [real] * 3
        + [pointer] * 4,
        "batch_norm_backward": [pointer, pointer, pointer, size, size]
        + [pointer] * 4
        + [real]
        + [pointer] * 3,
    }
    for name, argtypes in signatures.items():
        function = getattr(library, name)
        function.restype = ctypes.c_int
        function.argtypes = argtypes
    return library


def available() -> bool:
    """Return whether the kernels are enabled and built. The first call may compile them."""
    return _enabled() and _library() is not None


def active() -> bool:
    """Return whether CPU training takes the kernels now: enabled, built, and torch on 1 thread.

    The kernels run on one thread, so with more torch threads oneDNN, which uses
    them all, runs instead.
    """
    return torch.get_num_threads() == 1 and available()


def state(device: torch.device | None = None) -> str:
    """Describe whether training on `device` (default the CPU) takes the kernels now.

    Returns "on", or "off (reason)".
    """
    if device is not None and device.type != "cpu":
        return f"off (training on {device.type})"
    if not _enabled():
        return "off (BONSAI_NATIVE)"
    threads = torch.get_num_threads()
    if threads != 1:
        return f"off (torch runs {threads} threads and the kernels run on 1)"
    if _library() is None:
        return "off (not built, see the warning above)"
    return "on"


def depthwise_weight_grad(
    grad: torch.Tensor, x: torch.Tensor, kernel: int, dilation: int
) -> torch.Tensor:
    """Weight gradient (C, 1, k, k) of a depthwise convolution at stride 1 with "same" padding.

    `grad` and `x` are float32 (N, C, H, W) tensors on the CPU, in any memory
    format; channels-last ones are read without a copy. The caller checks
    `available()` first and that `kernel` <= MAX_KERNEL.
    """
    library = _library()
    if library is None:
        raise RuntimeError("the C kernels are not available; check bonsai.native.available()")
    if not (grad.dtype == x.dtype == torch.float32 and grad.device.type == x.device.type == "cpu"):
        raise ValueError(
            f"the C kernel takes float32 CPU tensors, got {grad.dtype} on {grad.device} "
            f"and {x.dtype} on {x.device}"
        )
    if not 1 <= kernel <= MAX_KERNEL:
        raise ValueError(f"kernel size {kernel} is not in 1..{MAX_KERNEL}")
    padding = dilation * (kernel - 1) // 2
    images, channels, height, width = x.shape
    # (N, H, W, C) views; a channels-last tensor is already laid out so.
    padded = nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, padding, padding, padding, padding))
    padded = padded.contiguous()
    rows = grad.permute(0, 2, 3, 1).contiguous()
    out = torch.empty(kernel, kernel, channels)
    status = library.depthwise_weight_grad(
        padded.data_ptr(),
        rows.data_ptr(),
        out.data_ptr(),
        images,
        height,
        width,
        channels,
        kernel,
        dilation,
    )
    if status != 0:
        raise RuntimeError(f"depthwise_weight_grad returned {status} for kernel size {kernel}")
    return out.permute(2, 0, 1).unsqueeze(1).contiguous()


def _rows(t: torch.Tensor) -> torch.Tensor:
    """Return `t` as a channels-last (N, C, H, W) tensor, copied only when it is not one."""
    return t.contiguous(memory_format=torch.channels_last)


def batch_norm_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale: float,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode `scale * batch_norm(x)` of a float32 CPU tensor; updates the running stats.

    Returns the output (channels-last), and the batch mean and invstd that
    `batch_norm_backward` takes.
    """
    library = _library()
    if library is None:
        raise RuntimeError("the C kernels are not available; check bonsai.native.available()")
    x = _rows(x)
    images, channels, height, width = x.shape
    y = torch.empty_like(x, memory_format=torch.channels_last)
    mean, invstd = x.new_empty(channels), x.new_empty(channels)
    status = library.batch_norm_forward(
        x.data_ptr(),
        y.data_ptr(),
        images * height * width,
        channels,
        weight.data_ptr(),
        bias.data_ptr(),
        scale,
        eps,
        momentum,
        running_mean.data_ptr(),
        running_var.data_ptr(),
        mean.data_ptr(),
        invstd.data_ptr(),
    )
    if status != 0:
        raise MemoryError("batch_norm_forward could not allocate its per-channel buffers")
    return y, mean, invstd


def batch_norm_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of x, weight, bias and scale (0-dim) for `batch_norm_forward`'s output."""
    library = _library()
    if library is None:
        raise RuntimeError("the C kernels are not available; check bonsai.native.available()")
    grad, x = _rows(grad), _rows(x)
    images, channels, height, width = x.shape
    grad_x = torch.empty_like(x, memory_format=torch.channels_last)
    grad_weight, grad_bias = x.new_empty(channels), x.new_empty(channels)
    grad_scale = x.new_empty(())
    status = library.batch_norm_backward(
        grad.data_ptr(),
        x.data_ptr(),
        grad_x.data_ptr(),
        images * height * width,
        channels,
        mean.data_ptr(),
        invstd.data_ptr(),
        weight.data_ptr(),
        bias.data_ptr(),
        scale,
        grad_weight.data_ptr(),
        grad_bias.data_ptr(),
        grad_scale.data_ptr(),
    )
    if status != 0:
        raise MemoryError("batch_norm_backward could not allocate its per-channel buffers")
    return grad_x, grad_weight, grad_bias, grad_scale
