"""Timing helpers of `bonsai bench`: training and inference steps, timed in turn."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from time import perf_counter

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
    """Return one forward pass of `net` in eval mode without autograd.

    `net` is put in eval mode here, once, as `training_step` puts it in training
    mode. `eval()` walks every module, which took about 0.27 ms for target 4's
    networks, 4% of their forward pass at the quick size.
    """
    net.eval()

    def step() -> None:
        with torch.no_grad():
            net(x)

    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Shortest time of one timed run of a step. A step that takes less is run several times in a
# row and timed as a whole, so that timer and scheduler noise stay small against it. On one
# machine, target 4's inference ratio (single passes of about 7 ms) ranged from 1.02 to
# 1.07 over 11 runs of the bench, and from 1.02 to 1.05 over 6 runs with 8 passes a run.
MIN_TIMED_SECONDS = 0.05


def time_in_turn(
    steps: dict[str, Step],
    repeats: int,
    warmup: int,
    device: torch.device,
    min_seconds: float = MIN_TIMED_SECONDS,
) -> dict[str, list[float]]:
    """Time each step `repeats` times, taking the steps in turn (A B C A B C ...).

    Taking turns spreads the drift of a shared machine's speed over every step
    alike, so ratios of medians from one call compare like with like. The
    first `warmup` rounds are not recorded. When the fastest step took less
    than `min_seconds` in the last warmup round, each timed run repeats every
    step the same number of times, enough for the fastest to reach
    `min_seconds`. Returns seconds per step.
    """
    passes = 1
    for _ in range(warmup):
        warmup_times = {name: _time_runs(step, passes, device) for name, step in steps.items()}
        passes = max(1, math.ceil(min_seconds / min(warmup_times.values())))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_time_runs(step, passes, device))
    return times


def _time_runs(step: Step, passes: int, device: torch.device) -> float:
    """Run `step` `passes` times in a row; return the seconds per run."""
    _synchronize(device)
    start = perf_counter()
    for _ in range(passes):
        step()
    _synchronize(device)
    return (perf_counter() - start) / passes


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator, from the same `time_in_turn` call.

    Each round's two times were taken back to back, so their ratio is less
    affected by the machine's drift than a ratio of two medians.
    """
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])
