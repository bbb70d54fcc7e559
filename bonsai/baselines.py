"""Random-search baselines, matched to a finished Bonsai search (the reference).

Both train for the reference's epochs with its hyper-parameters:

- Level 1: the cells of every section but the last are connected at random, at
  the compression that section reached in the reference; the last section is
  hyper-connected. Pruners stay trainable and deadheading stays on, but there is
  no compression loss. This tests growing against random search.
- Level 2: every cell is connected at random at the reference's final
  compression, and nothing is pruned: the gates stay open. This is the random
  search of Yu et al. (2019) and Li and Talwalkar (2019).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from bonsai.config import ConfigError, SearchConfig

__all__ = ["BaselinePlan", "prepare_baseline", "random_prune"]


@dataclass
class BaselinePlan:
    """A baseline's random cell shapes and the config it trains with."""

    level: int
    config: SearchConfig
    section_targets: list[float | None]  # compression of each section's random cells
    budget: int | None

    @property
    def prune(self) -> bool:
        return self.level == 1

    def shape_section(self, net, cells, section: int) -> None:
        target = self.section_targets[section]
        if target is None:
            return
        for cell in cells:
            random_prune(cell, target, random.Random(self.config.seed * 7919 + cell.index))


def random_prune(cell, target: float, rng: random.Random) -> list[str]:
    """Remove random connections of `cell` until its compression is at most `target`.

    The last path from the inputs to the output is always kept. Returns the
    removed pruner ids.
    """
    removed: list[str] = []
    order = list(cell.pruner_ids)
    rng.shuffle(order)
    for pruner_id in order:
        if cell.open_compression() <= target:
            break
        if pruner_id not in cell.pruner_ids:
            continue  # already removed with a dead node
        index = cell.pruner_ids.index(pruner_id)
        if float(cell.sizes[index]) <= 0:
            continue
        ids, _, _ = cell.remove_pruners([pruner_id])
        removed += ids
    return removed


def prepare_baseline(config: SearchConfig) -> BaselinePlan:
    """Read the reference search and build the baseline's plan and config."""
    assert config.reference is not None
    path = Path(config.reference) / "genotype.json"
    if not path.is_file():
        raise ConfigError(
            "reference",
            f"{config.reference} holds no finished search ({path} not found); give the work "
            "directory of a search that succeeded",
        )
    try:
        genotype = json.loads(path.read_text())
        search = genotype["search"]
        reference = SearchConfig.from_dict(search["config"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            "reference", f"cannot read the reference genotype {path}: {error}"
        ) from None
    if reference.baseline:
        raise ConfigError(
            "reference", f"{config.reference} is itself a baseline; give a Bonsai search"
        )
    matched = reference.replace(
        name=config.name,
        seed=config.seed,
        device=config.device,
        baseline=config.baseline,
        reference=config.reference,
        data_dir=config.data_dir or reference.data_dir,
        num_threads=config.num_threads,
    )
    sections = matched.section_types
    per_section: dict[int, list[float]] = {}
    for cell in genotype["cells"]:
        per_section.setdefault(cell["section"], []).append(float(cell.get("compression", 1.0)))
    if config.baseline == 1:
        targets: list[float | None] = [
            sum(per_section.get(s, [1.0])) / len(per_section.get(s, [1.0]))
            for s in range(len(sections) - 1)
        ]
        targets.append(None)
    else:
        targets = [float(genotype["compression"])] * len(sections)
    return BaselinePlan(config.baseline, matched, targets, reference.budget)
