"""Timing helpers of `bonsai bench`: training and inference steps, timed in turn."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "Step",
    "inference_step",
    "median",
    "paired_ratio",
    "time_in_turn",
    "training_step",
]

Step = Callable[[], None]

# SGD as in the naive reference: learning rate 0.01, momentum 0.9.
LEARNING_RATE = 0.01
MOMENTUM = 0.9


def training_step(
    net: nn.Module,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor | list[torch.Tensor]], torch.Tensor],
) -> Step:
    """Return one SGD training step of `net` on the fixed batch `x`."""
    optimizer = torch.optim.SGD(net.parameters(), LEARNING_RATE, momentum=MOMENTUM)
    net.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x)).backward()
        optimizer.step()

    return step


def inference_step(net: nn.Module, x: torch.Tensor) -> Step:
    """Return one forward pass of `net` in eval mode without autograd."""

    def step() -> None:
        net.eval()
        with torch.no_grad():
            net(x)

    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_in_turn(
    steps: dict[str, Step], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Time each step `repeats` times, taking the steps in turn (A B C A B C ...).

    Taking turns spreads the drift of a shared machine's speed over every step
    alike, so ratios of medians from one call compare like with like. The
    first `warmup` rounds are not recorded. Returns seconds per run.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            _synchronize(device)
            start = time.perf_counter()
            step()
            _synchronize(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator, from the same `time_in_turn` call.

    Each round's two times were taken back to back, so their ratio is less
    affected by the machine's drift than a ratio of two medians.
    """
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])
