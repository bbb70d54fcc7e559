"""Training a discovered architecture from scratch, and evaluating checkpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bonsai.data import batch_count, iterate_batches, load_dataset
from bonsai.genotype import load_genotype
from bonsai.model import build_model
from bonsai.training import (
    CHECKPOINT_FORMAT,
    classification_loss,
    evaluate,
    resolve_device,
    write_checkpoint,
)

__all__ = ["evaluate_checkpoint", "load_checkpoint", "train_genotype"]

logger = logging.getLogger(__name__)


def train_genotype(
    genotype_path: str | os.PathLike[str],
    dataset: str,
    epochs: int,
    out: Path,
    data_dir: str | None = None,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 3e-4,
    aux_weight: float = 0.2,
    drop_path: float = 0.0,
    device: str = "auto",
    seed: int = 0,
    show_progress: bool = True,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Train the genotype's discovered model from a fresh initialisation; write checkpoint.pt.

    SGD with momentum and a cosine learning-rate schedule over `epochs`; the
    auxiliary towers are weighted `aux_weight` in the loss. On the CPU, torch uses
    `num_threads` threads, one by default, as a search does.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    genotype = load_genotype(genotype_path)
    torch.manual_seed(seed)
    target = resolve_device(device)
    if target.type == "cpu":
        torch.set_num_threads(num_threads)
    data = load_dataset(dataset, data_dir)
    _check_shape(genotype.data["input"], data)
    model = build_model(genotype).to(target).to(memory_format=torch.channels_last)
    model.set_drop_path(drop_path)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    batches = batch_count(len(data.train), batch_size)
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=epochs * batches, unit="batch", desc="training")
    for epoch in range(epochs):
        model.train()
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        for x, y in iterate_batches(
            data.train,
            batch_size,
            mean=data.mean,
            std=data.std,
            shuffle=True,
            generator=generator,
            augmentation=data.augmentation,
            device=target,
            channels_last=True,
        ):
            loss = classification_loss(model(x), y, aux_weight)
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"training diverged at epoch {epoch}: loss {float(loss)}; lower --lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            if progress is not None:
                progress.update(1)
                progress.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}")
        scheduler.step()
        logger.info("epoch %d of %d done", epoch + 1, epochs)
    if progress is not None:
        progress.close()
    metrics = evaluate(model, data, batch_size, target, True)
    out.mkdir(parents=True, exist_ok=True)
    config = _RetrainConfig(max_test_images=None)
    write_checkpoint(
        out / "checkpoint.pt", model, genotype, data, metrics["test_accuracy"], config
    )
    return {"test_accuracy": metrics["test_accuracy"], "params": model.count_parameters()}


class _RetrainConfig:
    def __init__(self, max_test_images: int | None) -> None:
        self.max_test_images = max_test_images


def _check_shape(expected: dict[str, Any], data: Any) -> None:
    actual = {
        "channels": data.channels,
        "image_size": data.image_size,
        "classes": data.num_classes,
    }
    for key, value in actual.items():
        if expected[key] != value:
            raise ValueError(
                f"the genotype was searched on {expected[key]} {key.replace('_', ' ')} but "
                f"{data.name} has {value}; train it on a data set of the same shape"
            )


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint with ``weights_only=True`` into its discovered model (strict keys)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a Bonsai checkpoint")
    model = build_model(load_genotype(payload["genotype"]))
    model.load_state_dict(payload["state_dict"], strict=True)
    return model, payload


def evaluate_checkpoint(
    path: str | os.PathLike[str], dataset: str, data_dir: str | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Evaluate a checkpoint with the normalisation and test subset it was trained with."""
    model, payload = load_checkpoint(path)
    data = load_dataset(dataset, data_dir, max_test=payload.get("max_test_images"))
    _check_shape(model.genotype.data["input"], data)
    # The training statistics are those the checkpoint was trained with, not
    # those of a differently capped training split.
    data = type(data)(
        **{**data.__dict__, "mean": tuple(payload["mean"]), "std": tuple(payload["std"])}
    )
    target = resolve_device(device)
    model.to(target).to(memory_format=torch.channels_last)
    metrics = evaluate(model, data, 256, target, True)
    return {"test_accuracy": metrics["test_accuracy"], "params": model.count_parameters()}
