"""Training helpers shared by the search, the baselines and `train-genotype`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bonsai.config import ConfigError
from bonsai.data import DataSplits, iterate_batches

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_save",
    "classification_loss",
    "evaluate",
    "resolve_device",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "bonsai-checkpoint"


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device; ``cpu`` never queries CUDA."""
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        raise ConfigError(
            "device", f"{name} was requested but CUDA is not available; use cpu or auto"
        )
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            "device", f"{name} does not exist: this machine has {torch.cuda.device_count()} GPUs"
        )
    return device


def classification_loss(
    logits: list[torch.Tensor], labels: torch.Tensor, aux_weight: float
) -> torch.Tensor:
    """Cross-entropy of the classification tower plus `aux_weight` times each auxiliary tower's."""
    loss = nn.functional.cross_entropy(logits[-1], labels)
    for aux in logits[:-1]:
        loss = loss + aux_weight * nn.functional.cross_entropy(aux, labels)
    return loss


@torch.no_grad()
def evaluate(
    net: nn.Module, data: DataSplits, batch_size: int, device: torch.device, channels_last: bool
) -> dict[str, float]:
    """Test accuracy (percent) and loss of the classification tower, in eval mode."""
    was_training = net.training
    net.eval()
    correct = total = 0
    loss = 0.0
    for x, y in iterate_batches(
        data.test,
        max(batch_size, 256),
        mean=data.mean,
        std=data.std,
        shuffle=False,
        generator=None,
        augmentation=None,
        device=device,
        channels_last=channels_last,
    ):
        logits = net(x)[-1]
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    net.train(was_training)
    return {"test_accuracy": 100.0 * correct / max(total, 1), "test_loss": loss / max(total, 1)}


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_checkpoint(
    path: Path, model: nn.Module, genotype: Any, data: DataSplits, accuracy: float, config: Any
) -> None:
    """Write the trained discovered model with its genotype as JSON text.

    The file holds only tensors, strings and numbers, so it loads with
    ``torch.load(path, map_location="cpu", weights_only=True)``.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "genotype": genotype.to_json(),
            "state_dict": state,
            "test_accuracy": float(accuracy),
            "params": int(sum(p.numel() for p in model.parameters())),
            "dataset": data.name,
            "mean": list(data.mean),
            "std": list(data.std),
            "max_test_images": config.max_test_images,
            "image_size": data.image_size,
        },
        path,
    )
