"""Memory estimate of a configuration, without training."""

from __future__ import annotations

from typing import Any

import torch

from bonsai.config import SearchConfig, format_size
from bonsai.data import load_dataset
from bonsai.memory import MemoryModel, SectionFitError, plan_budget
from bonsai.network import SearchNetwork
from bonsai.training import resolve_device

__all__ = ["estimate_memory"]

# (channels, image size, classes) of the data sets whose shape is fixed, so an
# estimate needs no files; imagefolder is read for its shape.
_SHAPES = {
    "digits": (1, 8, 10),
    "fashion-mnist": (1, 28, 10),
    "mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "svhn": (3, 32, 10),
}


def estimate_memory(config: SearchConfig) -> dict[str, Any]:
    """Predict the training memory of every section against the budget.

    Returns ``{"budget", "hyper_connected_bytes", "fits", "error", "sections":
    [{"section", "cells", "types", "predicted_bytes", "hyper_connected_bytes",
    "target", "fits"}]}``; `predicted_bytes` is the memory right after the
    section is appended, with the earlier cells at their target.
    """
    if config.dataset in _SHAPES:
        channels, size, classes = _SHAPES[config.dataset]
    else:
        data = load_dataset(
            config.dataset, config.data_dir, image_size=config.image_size, max_train=2, max_test=1
        )
        channels, size, classes = data.channels, data.image_size, data.num_classes
    device = resolve_device(config.device)
    memory = MemoryModel(
        config.batch_size, device, torch.float32, channels_last=config.channels_last
    )
    net = SearchNetwork(
        channels,
        size,
        classes,
        config.channels,
        config.resolved_stem_channels,
        config.nodes,
        config.ops,
        config.resolved_gate_init,
        config.pruner_m,
    )
    for types in config.section_types:
        net.add_section(types)
    error = None
    try:
        plan = plan_budget(net, memory, config.budget, config.budget_fraction)
    except SectionFitError as failure:
        error = str(failure)
        plan = plan_budget(net, memory, None, 1.0)
        budget = config.budget or int(plan.hyper_connected * config.budget_fraction)
    else:
        budget = plan.budget
    sections = []
    for n, types in enumerate(config.section_types):
        predicted = plan.predicted[n]
        sections.append(
            {
                "section": n,
                "cells": len(types),
                "types": list(types),
                "predicted_bytes": predicted,
                "predicted": format_size(predicted),
                "hyper_connected_bytes": plan.section_bytes[n],
                "target": plan.targets[n],
                "fits": error is None and predicted <= budget * 1.0001,
            }
        )
    return {
        "budget": budget,
        "budget_text": format_size(budget),
        "hyper_connected_bytes": plan.hyper_connected,
        "fits": error is None,
        "error": error,
        "sections": sections,
    }
