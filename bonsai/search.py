"""The Bonsai process: grow the network section by section, pruning to fit a memory budget.

1. Measure the memory model and turn the budget into compression targets c_n
   (`bonsai.memory.plan_budget`).
2. Start with hyper-connected section 0 and a classification tower.
3. For every further section n: train with the compression loss
   L_comp = lambda * ||c_target - c_actual||_2 until every cell so far has
   c_actual <= c_n, then append section n hyper-connected with a new tower (the
   old one stays as an auxiliary tower). lambda starts at `lambda_init` each prune
   cycle and doubles every `lambda_period` epochs while the target is unmet.
   A growth phase that uses up its share of epochs cuts the smallest gates.
4. Train the remaining epochs without the compression term. The epoch total is
   fixed however long growing took.

A pruner whose gate stays off for the tracking window is deadheaded: its
operation leaves the model for good.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bonsai import native
from bonsai.baselines import prepare_baseline
from bonsai.config import ConfigError, SearchConfig
from bonsai.data import DataSplits, batch_count, iterate_batches, load_dataset
from bonsai.events import EventEmitter
from bonsai.genotype import genotype_from_network
from bonsai.memory import BudgetPlan, MemoryModel, measure_training_step, plan_budget
from bonsai.model import fold_search_network
from bonsai.network import SearchNetwork
from bonsai.training import (
    atomic_save,
    classification_loss,
    evaluate,
    resolve_device,
    write_checkpoint,
)

__all__ = ["SearchResult", "run_search"]

logger = logging.getLogger(__name__)

# Gradient-norm clip of the model weights (not the pruners), as in DARTS.
WEIGHT_GRAD_CLIP = 5.0
# A cell meets its target when c_actual <= c_target + this tolerance.
TARGET_TOLERANCE = 1e-3
STATE_FORMAT = "bonsai-search-state"
# A gate must be off for at least this many batches in a row to be deadheaded, so
# one noisy step never removes a connection.
MIN_WINDOW_BATCHES = 3
# Torch threads of a CPU search unless `num_threads` sets another number. A search runs
# thousands of small operations, and on a machine shared with other processes
# the threads of one operation spin waiting for each other: a digits step took
# 0.4 s with one thread and 20 s with two on a loaded 2-core machine here.
DEFAULT_CPU_THREADS = 1


@dataclass
class SearchResult:
    """The outcome of `run_search`."""

    state: str  # "succeeded", "cancelled" or "failed"
    workdir: Path
    error: str | None = None
    test_accuracy: float | None = None
    params: int | None = None
    compression: float | None = None
    genotype: dict[str, Any] | None = None

    @property
    def genotype_path(self) -> Path:
        return self.workdir / "genotype.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / "checkpoint.pt"

    @property
    def state_path(self) -> Path:
        return self.workdir / "state.pt"

    @property
    def events_path(self) -> Path:
        return self.workdir / "events.jsonl"


class SearchFailed(RuntimeError):
    """Training cannot go on, e.g. a diverged loss; the message is the reason."""


class _Stopped(Exception):
    pass


def run_search(
    config: SearchConfig,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    workdir: str | os.PathLike[str] = "runs/search",
    resume: bool = False,
    progress: Callable[[int, int, int, float], None] | None = None,
) -> SearchResult:
    """Run a Bonsai search (or a random baseline) and write its files to `workdir`.

    `on_event(event)` receives every event; `should_stop()` is checked between
    batches and True ends the search as cancelled. With `resume`, training goes
    on from ``workdir/state.pt``. Configuration, data and budget errors raise
    before training starts (ConfigError, DatasetNotFoundError,
    SectionFitError); any error during training ends the search as failed with
    a `failed` event. `progress(epoch, batch, batches, loss)` is called after
    every batch, for progress bars.
    """
    search = _Search(config, Path(workdir), on_event, should_stop)
    return search.run(resume, progress)


class _Search:
    def __init__(
        self,
        config: SearchConfig,
        workdir: Path,
        on_event: Callable[[dict[str, Any]], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.requested = config
        self.config = config
        self.workdir = workdir
        self.on_event = on_event
        self.should_stop = should_stop or (lambda: False)
        self.events: EventEmitter | None = None

    # -- set-up ----------------------------------------------------------------------

    def _setup(self, resume: bool) -> None:
        config = self.config
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] | None = None
        if resume:
            path = self.workdir / "state.pt"
            if not path.is_file():
                raise ConfigError("resume", f"no search state at {path}; start without --resume")
            self.state = torch.load(path, map_location="cpu", weights_only=True)
            if self.state.get("format") != STATE_FORMAT:
                raise ConfigError("resume", f"{path} is not a search state file")
            saved = SearchConfig.from_dict(self.state["config"])
            if _comparable(saved) != _comparable(config):
                raise ConfigError(
                    "resume", "the configuration differs from the one the search started with"
                )
            config = self.config = saved.replace(
                device=config.device,
                name=config.name,
                num_threads=config.num_threads,
                data_dir=config.data_dir,
                reference=config.reference,
            )

        self.baseline = None
        if config.baseline:
            self.baseline = prepare_baseline(config)
            config = self.config = self.baseline.config

        self.device = resolve_device(config.device)
        if self.device.type == "cpu" or config.num_threads:
            torch.set_num_threads(config.num_threads or DEFAULT_CPU_THREADS)
        _seed_everything(config.seed)
        self.data: DataSplits = load_dataset(
            config.dataset,
            config.data_dir,
            download=config.download,
            max_train=config.max_train_images,
            max_test=config.max_test_images,
            image_size=config.image_size if config.dataset == "imagefolder" else None,
        )
        augmentation = self.data.augmentation
        if config.cutout is not None:
            augmentation = _with_cutout(augmentation, config.cutout)
        self.augmentation = augmentation
        self.batches_per_epoch = batch_count(len(self.data.train.labels), config.batch_size)

        self.memory = MemoryModel(
            config.batch_size, self.device, torch.float32, channels_last=config.channels_last
        )
        planner = self._new_network()
        for types in config.section_types:
            planner.add_section(types)
        budget = config.budget
        if self.baseline is not None and budget is None:
            budget = self.baseline.budget
        self.plan: BudgetPlan = plan_budget(planner, self.memory, budget, config.budget_fraction)
        del planner

        self.net = self._new_network()
        self.epoch_batches = self.batches_per_epoch
        self.window_batches = max(
            MIN_WINDOW_BATCHES, round(config.resolved_deadhead_window * self.batches_per_epoch)
        )
        self.period_batches = max(1, round(config.resolved_lambda_period * self.batches_per_epoch))
        sections = len(config.section_types)
        self.phase_epochs = (
            max(1, math.floor(config.epochs * config.growth_fraction / (sections - 1)))
            if sections > 1
            else 0
        )

    def _new_network(self) -> SearchNetwork:
        config = self.config
        return SearchNetwork(
            in_channels=self.data.channels,
            image_size=self.data.image_size,
            num_classes=self.data.num_classes,
            channels=config.channels,
            stem_channels=config.resolved_stem_channels,
            nodes=config.nodes,
            ops=config.ops,
            gate_init=config.resolved_gate_init,
            pruner_m=config.pruner_m,
        )

    def _make_optimizer(self) -> None:
        config = self.config
        gate_lr = (
            0.0
            if self.baseline is not None and not self.baseline.prune
            else config.resolved_gate_lr
        )
        self.optimizer = torch.optim.SGD(
            [
                {"params": self.net.weight_parameters(), "weight_decay": config.weight_decay},
                {"params": self.net.gate_parameters(), "lr": gate_lr, "weight_decay": 0.0},
            ],
            lr=config.lr,
            momentum=config.momentum,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs, eta_min=config.lr_min
        )

    def _sync_optimizer(
        self, moved: list[tuple[nn.Parameter, nn.Parameter, torch.Tensor]]
    ) -> None:
        """Point the optimizer at the live parameters after cells changed.

        Replaced pruner vectors keep the surviving rows of their momentum. The
        state of removed parameters is dropped. New parameters join their group
        and train from the next step on. The order of every group is the
        network's parameter order, so a state saved and loaded matches.
        """
        for old, new, keep in moved:
            state = self.optimizer.state.pop(old, None)
            buffer = state.get("momentum_buffer") if state else None
            if buffer is not None:
                self.optimizer.state[new] = {
                    "momentum_buffer": buffer[keep.to(buffer.device)].clone()
                }
        self.optimizer.param_groups[0]["params"] = self.net.weight_parameters()
        self.optimizer.param_groups[1]["params"] = self.net.gate_parameters()
        live = {id(p) for p in self.net.parameters()}
        for param in list(self.optimizer.state):
            if id(param) not in live:
                del self.optimizer.state[param]

    # -- events ----------------------------------------------------------------------

    def emit(self, event_type: str, data: dict[str, Any], epoch: int | None = None) -> None:
        assert self.events is not None
        self.events.emit(event_type, data, epoch)

    def _snapshot(self, epoch: int) -> None:
        pruners = []
        for cell in self.net.cells:
            weights = cell.weights.detach().cpu().tolist()
            for pruner_id, weight in zip(cell.pruner_ids, weights, strict=True):
                pruners.append([pruner_id, weight, 1 if weight > 0 else 0])
        self.emit("pruner_snapshot", {"pruners": pruners}, epoch)

    # -- growth ----------------------------------------------------------------------

    def _add_section(self, epoch: int) -> None:
        section = len(self.net.section_types)
        cells = self.net.add_section(self.config.section_types[section])
        for cell in cells:
            self.memory.assign_sizes(cell)
        self.net.to(self.device)
        if self.config.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.net.set_drop_path(self.config.drop_path)
        if self.baseline is not None:
            self.baseline.shape_section(self.net, cells, section)
        self.off_streak.extend(torch.zeros(len(c.pruner_ids), dtype=torch.long) for c in cells)
        if hasattr(self, "optimizer"):
            self._sync_optimizer([])
        self.phase = section
        self.phase_start = epoch
        self.lambda_value = self.config.lambda_init
        self.batches_unmet = 0
        structures = [cell.structure() for cell in cells]
        self.emit(
            "section_added",
            {"section": section, "cells": structures, "start_epoch": epoch},
            None if epoch == 0 else epoch,
        )

    def _target(self) -> float | None:
        if self.baseline is not None:
            return None
        return self.plan.targets[self.phase]

    def _deadhead(self, requests: dict[int, list[str]], reason: str, epoch: int) -> list[str]:
        removed_ids: list[str] = []
        removed_nodes: list[str] = []
        moved = []
        for cell in self.net.cells:
            ids = requests.get(cell.index)
            if not ids:
                continue
            old = cell.weights
            removed, nodes, keep = cell.remove_pruners(ids)
            if not removed:
                continue
            moved.append((old, cell.weights, keep))
            self.off_streak[cell.index] = self.off_streak[cell.index][keep]
            removed_ids += removed
            removed_nodes += nodes
        if removed_ids:
            self._sync_optimizer(moved)
            self.deadheaded_total += len(removed_ids)
            if reason == "forced":
                logger.info(
                    "cut %d connections to meet the target at epoch %d", len(removed_ids), epoch
                )
            self.emit(
                "deadheaded",
                {"pruner_ids": removed_ids, "removed_nodes": removed_nodes, "reason": reason},
                epoch,
            )
        return removed_ids

    def _track_gates(self, epoch: int) -> None:
        """Count how long each gate has been off and deadhead those off for the window."""
        if self.baseline is not None and not self.baseline.prune:
            return
        requests: dict[int, list[str]] = {}
        for cell in self.net.cells:
            off = cell.weights.detach().cpu() <= 0
            streak = torch.where(off, self.off_streak[cell.index] + 1, 0)
            self.off_streak[cell.index] = streak
            due = (streak >= self.window_batches).nonzero().flatten().tolist()
            if due:
                weights = cell.weights.detach().cpu()
                due.sort(key=lambda i: float(weights[i]))
                requests[cell.index] = [cell.pruner_ids[i] for i in due]
        if requests:
            self._deadhead(requests, "gate_off", epoch)

    def _force_target(self, target: float, epoch: int) -> None:
        """Cut the smallest gates of each cell until its compression meets the target.

        Gates already off are cut too: left in place, they could open again in a
        later phase and take the cell back above its target.
        """
        requests: dict[int, list[str]] = {}
        for cell in self.net.cells:
            weights = cell.weights.detach().cpu()
            kept = cell.open_sizes()
            excess = float(kept.sum()) - (target + TARGET_TOLERANCE / 2) * cell.initial_size
            order = sorted(range(len(cell.pruner_ids)), key=lambda i: float(weights[i]))
            chosen = []
            for i in order:
                if float(weights[i]) <= 0:
                    chosen.append(cell.pruner_ids[i])
                elif excess > 0 and float(kept[i]) > 0:
                    chosen.append(cell.pruner_ids[i])
                    excess -= float(kept[i])
                elif excess <= 0:
                    break
            if chosen:
                requests[cell.index] = chosen
        self._deadhead(requests, "forced", epoch)
        # Only a cell's last path, which is never cut, can keep it above the target.
        for cell in self.net.cells:
            compression = cell.open_compression()
            if compression > target + TARGET_TOLERANCE:
                logger.warning(
                    "cell %d stays at compression %.3f above target %.3f: its last path is kept",
                    cell.index,
                    compression,
                    target,
                )

    def _compressions(self) -> list[float]:
        with torch.no_grad():
            return [float(c.compression()) for c in self.net.cells]

    def _target_met(self, target: float) -> bool:
        return all(c <= target + TARGET_TOLERANCE for c in self._compressions())

    # -- training --------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config = self.config
        self.net.train()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        batches = iterate_batches(
            self.data.train,
            config.batch_size,
            mean=self.data.mean,
            std=self.data.std,
            shuffle=True,
            generator=generator,
            augmentation=self.augmentation,
            device=self.device,
            channels_last=config.channels_last,
        )
        total_loss = correct = seen = 0.0
        for index, (x, y) in enumerate(batches):
            if self.should_stop():
                raise _Stopped
            target = self._target()
            logits = self.net(x)
            loss = classification_loss(logits, y, config.aux_weight)
            comp_loss = None
            if target is not None:
                compression = self.net.compression()
                goal = torch.full_like(compression, target)
                comp_loss = self.lambda_value * torch.linalg.vector_norm(goal - compression)
                loss = loss + comp_loss
            if not torch.isfinite(loss):
                raise SearchFailed(
                    f"training diverged: the loss is {float(loss.detach())} at epoch {epoch}, "
                    f"batch {index}; "
                    "lower lr or gate_lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], WEIGHT_GRAD_CLIP)
            self.optimizer.step()

            loss_value = float(loss.detach())
            total_loss += loss_value * len(y)
            correct += float((logits[-1].argmax(1) == y).sum())
            seen += len(y)
            self._track_gates(epoch)
            if target is not None and not self._target_met(target):
                self.batches_unmet += 1
                if self.batches_unmet % self.period_batches == 0:
                    self.lambda_value *= 2
            if (index + 1) % config.batch_event_every == 0 or index + 1 == self.epoch_batches:
                self.emit(
                    "batch",
                    {"index": index, "batches": self.epoch_batches, "loss": loss_value},
                    epoch,
                )
            if config.snapshot_every and (index + 1) % config.snapshot_every == 0:
                self._snapshot(epoch)
            if self.progress is not None:
                self.progress(epoch, index + 1, self.epoch_batches, loss_value)
        return {
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": 100.0 * correct / max(seen, 1),
        }

    def _measure_memory(self) -> int:
        """Measure one training step on a fixed batch without changing the model's state."""
        x, y = next(
            iterate_batches(
                self.data.train,
                self.config.batch_size,
                mean=self.data.mean,
                std=self.data.std,
                shuffle=False,
                generator=None,
                augmentation=None,
                device=self.device,
                channels_last=self.config.channels_last,
            )
        )
        norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0  # running statistics stay as they are
        rng = torch.get_rng_state()
        self.net.train()
        try:
            measured = measure_training_step(
                self.net, x, lambda logits: classification_loss(logits, y, self.config.aux_weight)
            )
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            torch.set_rng_state(rng)
            self.optimizer.zero_grad(set_to_none=True)
        return measured

    def _evaluate(self) -> dict[str, float]:
        return evaluate(
            self.net, self.data, self.config.batch_size, self.device, self.config.channels_last
        )

    # -- state -----------------------------------------------------------------------

    def _save_state(self, next_epoch: int) -> None:
        assert self.events is not None
        state = {
            "format": STATE_FORMAT,
            "version": 1,
            "config": self.config.to_dict() if self.baseline is None else self.requested.to_dict(),
            "epoch": next_epoch,
            "sections": len(self.net.section_types),
            "alive": [list(cell.pruner_ids) for cell in self.net.cells],
            "initial_sizes": [cell.initial_size for cell in self.net.cells],
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "off_streak": list(self.off_streak),
            "phase": self.phase,
            "phase_start": self.phase_start,
            "lambda": self.lambda_value,
            "batches_unmet": self.batches_unmet,
            "deadheaded_total": self.deadheaded_total,
            "history": self.history,
            "elapsed": self.elapsed(),
            # A resumed run numbers its events from the checkpoint_written event
            # below, which replaces it: a run killed before that event reached its
            # reader then leaves no gap in the sequence.
            "next_seq": self.events.next_seq,
            "rng": _rng_state(),
        }
        # Every event before the checkpoint reaches events.jsonl before state.pt does, so
        # a worker that died before storing them can still store them from the log.
        self.events.flush()
        atomic_save(state, self.workdir / "state.pt")
        self.emit("checkpoint_written", {"kind": "state", "file": "state.pt"}, next_epoch - 1)

    def _restore(self) -> int:
        state = self.state
        assert state is not None
        for section in range(state["sections"]):
            self.net.add_section(self.config.section_types[section])
        for cell, alive, initial in zip(
            self.net.cells, state["alive"], state["initial_sizes"], strict=True
        ):
            cell.keep_only(alive)
            cell.initial_size = initial
        self.net.load_state_dict(state["model"], strict=True)
        self.net.to(self.device)
        if self.config.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.net.set_drop_path(self.config.drop_path)
        self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.off_streak = list(state["off_streak"])
        self.phase = state["phase"]
        self.phase_start = state["phase_start"]
        self.lambda_value = state["lambda"]
        self.batches_unmet = state["batches_unmet"]
        self.deadheaded_total = state["deadheaded_total"]
        self.history = list(state["history"])
        self.elapsed_before = state["elapsed"]
        _set_rng_state(state["rng"])
        return int(state["epoch"])

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    # -- the process -----------------------------------------------------------------

    def run(
        self, resume: bool, progress: Callable[[int, int, int, float], None] | None = None
    ) -> SearchResult:
        self.progress = progress
        self._setup(resume)  # errors here are raised: nothing has started
        self.started = time.monotonic()
        self.elapsed_before = 0.0
        next_seq = int(self.state["next_seq"]) if self.state else 0
        self.events = EventEmitter(self.workdir / "events.jsonl", self.on_event, next_seq)
        try:
            return self._run()
        except _Stopped:
            logger.info("search in %s cancelled", self.workdir)
            self.emit("finished", {"state": "cancelled"}, None)
            return SearchResult("cancelled", self.workdir)
        except Exception as error:  # noqa: BLE001 - every failure is reported as an event
            reason = (
                str(error)
                if isinstance(error, SearchFailed)
                else f"{type(error).__name__}: {error}"
            )
            logger.exception("search in %s failed", self.workdir)
            self.emit("failed", {"reason": reason}, None)
            return SearchResult("failed", self.workdir, error=reason)
        finally:
            self.events.close()

    def _run(self) -> SearchResult:
        config = self.config
        self.off_streak: list[torch.Tensor] = []
        self.deadheaded_total = 0
        self.history: list[dict[str, Any]] = []
        if self.state is not None:
            start_epoch = self._restore()
            logger.info("resuming the search in %s at epoch %d", self.workdir, start_epoch)
        else:
            start_epoch = 0
            self.emit(
                "search_started",
                {
                    "config": self.requested.to_dict(),
                    "budget": self.plan.budget,
                    "targets": self.plan.targets,
                    "sections": [list(s) for s in config.section_types],
                    "predicted_memory": self.plan.predicted,
                    "hyper_connected_memory": self.plan.hyper_connected,
                    "device": str(self.device),
                    "c_kernels": native.state(self.device),
                    "dataset": {
                        "name": self.data.name,
                        "train_images": len(self.data.train.labels),
                        "test_images": len(self.data.test.labels),
                        "classes": self.data.num_classes,
                        "image_size": self.data.image_size,
                        "channels": self.data.channels,
                    },
                    "baseline": config.baseline,
                    "gate_init": config.resolved_gate_init,
                },
            )
            self.phase = 0
            sections_at_start = len(config.section_types) if self.baseline is not None else 1
            for _ in range(sections_at_start):
                self._add_section(0)
            self._make_optimizer()

        for epoch in range(start_epoch, config.epochs):
            metrics = self._train_epoch(epoch)
            metrics.update(self._evaluate())
            target = self._target()
            section = self.phase
            compression = self._compressions()
            metrics.update(
                section=section,
                compression=compression,
                targets=[target] * len(compression),
                memory_measured=self._measure_memory(),
                memory_predicted=self.memory.network_bytes(self.net),
                budget=self.plan.budget,
                params=self.net.count_parameters(),
                deadheaded_total=self.deadheaded_total,
                elapsed=self.elapsed(),
                **{"lambda": self.lambda_value if target is not None else 0.0},
                lr=self.optimizer.param_groups[0]["lr"],
            )
            self.history.append({"epoch": epoch, **metrics})
            self.emit("epoch_end", metrics, epoch)
            self.scheduler.step()

            if target is not None:
                met = self._target_met(target)
                if not met and epoch + 1 - self.phase_start >= self.phase_epochs:
                    logger.info(
                        "growth phase %d ran out of epochs; cutting to target %.3f",
                        self.phase,
                        target,
                    )
                    self._force_target(target, epoch)
                    met = True
                if met and epoch + 1 < config.epochs:
                    self._add_section(epoch + 1)
            if config.snapshot_every == 0:
                self._snapshot(epoch)
            self._save_state(epoch + 1)

        return self._finish()

    def _finish(self) -> SearchResult:
        config = self.config
        epoch = config.epochs - 1
        # Connections whose gate ended off contribute almost nothing (S(w) < 1/M);
        # they are removed so the genotype lists only what the model uses.
        if self.baseline is None or self.baseline.prune:
            requests = {
                cell.index: [
                    p
                    for p, w in zip(
                        cell.pruner_ids, cell.weights.detach().cpu().tolist(), strict=True
                    )
                    if w <= 0
                ]
                for cell in self.net.cells
            }
            if self._deadhead(requests, "gate_off", epoch):
                self._save_state(config.epochs)
        extra = {
            "search": {
                "dataset": self.data.name,
                "config": self.requested.to_dict(),
                "baseline": config.baseline,
                "epochs": config.epochs,
                "normalization": {"mean": list(self.data.mean), "std": list(self.data.std)},
            }
        }
        genotype = genotype_from_network(self.net, extra)
        model = fold_search_network(self.net, genotype).to(self.device)
        accuracy = evaluate(
            model, self.data, config.batch_size, self.device, config.channels_last
        )["test_accuracy"]
        params = model.count_parameters()
        genotype.data["search"].update(
            test_accuracy=accuracy, params=params, elapsed=self.elapsed()
        )
        (self.workdir / "genotype.json").write_text(genotype.to_json())
        write_checkpoint(
            self.workdir / "checkpoint.pt", model, genotype, self.data, accuracy, config
        )
        self.emit("checkpoint_written", {"kind": "checkpoint", "file": "checkpoint.pt"}, epoch)
        compression = genotype.data["compression"]
        self.emit(
            "finished",
            {
                "state": "succeeded",
                "test_accuracy": accuracy,
                "params": params,
                "compression": compression,
            },
            epoch,
        )
        return SearchResult(
            "succeeded", self.workdir, None, accuracy, params, compression, genotype.data
        )


def _comparable(config: SearchConfig) -> dict[str, Any]:
    """The fields a resumed search must share with the saved one.

    Paths may differ when a search resumes on another machine, and the name,
    device and thread count do not change what is learned.
    """
    values = config.to_dict()
    for key in ("name", "device", "num_threads", "data_dir", "reference"):
        values.pop(key, None)
    return values


def _with_cutout(augmentation: Any, cutout: int) -> Any:
    import dataclasses

    return dataclasses.replace(augmentation, cutout=cutout)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
