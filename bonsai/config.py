"""Search configuration: a frozen, validated dataclass, presets and size parsing.

Every field of `SearchConfig` is also a `bonsai search` option (``batch_size`` is
``--batch-size``) and a field of the service's request body, with the same default.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from bonsai.ops import OPERATION_NAMES

__all__ = [
    "ConfigError",
    "PRESETS",
    "SearchConfig",
    "config_fields",
    "format_size",
    "make_config",
    "parse_sections",
    "parse_size",
]

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "imagefolder")

# Upper bounds that keep a typo from asking for an absurd model; a real search
# stays far below them.
MAX_EPOCHS = 10_000
MAX_CHANNELS = 1024
MAX_NODES = 12
MAX_CELLS = 64
MAX_BATCH_SIZE = 65_536

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class ConfigError(ValueError):
    """An invalid configuration value; `field` names the field.

    `errors` lists (field, message) for every invalid field found, the first
    being `field` and `message`, so a form can mark them all at once.
    """

    def __init__(
        self, field: str, message: str, errors: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.errors = errors or [(field, message)]


def parse_size(value: str | int | float, field: str = "budget") -> int:
    """Parse a memory size such as ``512MiB``, ``8GiB``, ``2e9`` or ``1048576`` into bytes."""
    if isinstance(value, bool):
        raise ConfigError(field, f"expected a size such as 512MiB, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        match = _SIZE_PATTERN.match(str(value))
        if match is None:
            try:
                number, unit = float(value), ""
            except ValueError:
                raise ConfigError(
                    field, f"invalid size {value!r}; use bytes or a unit, e.g. 512MiB or 8GiB"
                ) from None
        else:
            number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _SIZE_UNITS:
        raise ConfigError(field, f"unknown unit {unit!r} in {value!r}; use KiB, MiB, GiB or TiB")
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(field, f"size must be a positive number of bytes, got {value!r}")
    size = int(number * _SIZE_UNITS[unit])
    if size < 1024:
        raise ConfigError(field, f"size {value!r} is below 1 KiB; did you forget the unit?")
    return size


def format_size(size: float) -> str:
    """Format bytes with a binary unit, e.g. ``1.50 MiB``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(size) >= factor:
            return f"{size / factor:.2f} {unit}"
    return f"{size:.0f} B"


def parse_sections(value: str | list[str] | tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Parse ``NN,R,NN`` into cell types per section: ((normal, normal), (reduction,), ...)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    if not parts:
        raise ConfigError("sections", "at least one section is needed, e.g. NN,R,NN")
    sections = []
    for index, part in enumerate(parts):
        part = part.strip().upper()
        if not part or set(part) - {"N", "R"}:
            raise ConfigError(
                "sections",
                f"section {index} is {part!r}; write each section as N (normal) and R "
                "(reduction) letters separated by commas, e.g. NN,R,NN",
            )
        sections.append(tuple("normal" if letter == "N" else "reduction" for letter in part))
    return tuple(sections)


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; `from_dict` is the validating constructor."""

    preset: str = "digits"
    name: str = ""
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    epochs: int = 8
    budget: int | None = None
    budget_fraction: float = 0.6
    channels: int = 8
    stem_channels: int | None = None
    nodes: int = 3
    sections: str = "NN,R,NN"
    batch_size: int = 32
    device: str = "auto"
    seed: int = 0
    baseline: int = 0
    reference: str | None = None
    lr: float = 0.05
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    drop_path: float = 0.0
    cutout: int | None = None
    aux_weight: float = 0.2
    gate_init: float | None = None
    gate_lr: float | None = None
    deadhead_window: float | None = None
    lambda_init: float = 0.01
    lambda_period: float | None = None
    growth_fraction: float = 0.5
    pruner_m: float = 1e5
    snapshot_every: int = 0
    batch_event_every: int = 10
    ops: tuple[str, ...] = OPERATION_NAMES
    max_train_images: int | None = None
    max_test_images: int | None = None
    image_size: int | None = None
    channels_last: bool = True
    num_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchConfig:
        """Build a validated config from a mapping; unset fields take the preset's defaults."""
        if not isinstance(values, dict):
            raise ConfigError("config", f"expected a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                unknown[0], f"unknown field; valid fields are {', '.join(sorted(known))}"
            )
        # Without a preset, a data set that has one uses it: it is sized for that data.
        dataset = values.get("dataset")
        default_preset = dataset if isinstance(dataset, str) and dataset in PRESETS else "digits"
        preset_name = values.get("preset") or default_preset
        if preset_name not in PRESETS:
            raise ConfigError(
                "preset", f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}"
            )
        merged: dict[str, Any] = dict(PRESETS[preset_name])
        merged["preset"] = preset_name
        merged.update({k: v for k, v in values.items() if v is not None or k in _NULLABLE})
        return cls._validated(merged)

    @classmethod
    def _validated(cls, merged: dict[str, Any]) -> SearchConfig:
        checked: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for spec in dataclasses.fields(cls):
            if spec.name == "extra" or spec.name not in merged:
                continue
            try:
                checked[spec.name] = _check_field(spec.name, merged[spec.name])
            except ConfigError as error:
                errors.append((error.field, error.message))
        if errors:
            raise ConfigError(*errors[0], errors=errors)
        config = cls(**checked)
        config._check_consistency()
        return config

    def replace(self, **changes: Any) -> SearchConfig:
        """Return a validated copy with `changes` applied."""
        values = self.to_dict()
        values.update(changes)
        return SearchConfig._validated(values)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values that `from_dict` accepts again."""
        values = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"
        }
        values["ops"] = list(self.ops)
        return values

    def _check_consistency(self) -> None:
        if self.baseline and not self.reference:
            raise ConfigError(
                "reference", "a baseline needs the work directory of a finished search to match"
            )
        if self.reference and not self.baseline:
            raise ConfigError("baseline", "reference is only used with baseline 1 or 2")
        cells = sum(len(section) for section in self.section_types)
        if cells > MAX_CELLS:
            raise ConfigError("sections", f"{cells} cells is above the maximum of {MAX_CELLS}")
        if self.epochs < len(self.section_types):
            raise ConfigError(
                "epochs",
                f"{self.epochs} epochs cannot grow {len(self.section_types)} sections; give at "
                f"least {len(self.section_types)}, one epoch per section",
            )
        if not self.ops:
            raise ConfigError("ops", "at least one operation is needed")
        if self.image_size is not None and self.dataset != "imagefolder":
            raise ConfigError("image_size", "only imagefolder images are resized; leave it empty")

    # -- derived values --------------------------------------------------------------

    @property
    def section_types(self) -> tuple[tuple[str, ...], ...]:
        return parse_sections(self.sections)

    @property
    def resolved_gate_init(self) -> float:
        return self.gate_init if self.gate_init is not None else 0.05

    @property
    def resolved_gate_lr(self) -> float:
        return self.gate_lr if self.gate_lr is not None else 0.1

    @property
    def resolved_deadhead_window(self) -> float:
        """Epochs a gate must stay off: 4 of 600 epochs, scaled to the search, at least 0.2."""
        if self.deadhead_window is not None:
            return self.deadhead_window
        return max(0.2, self.epochs * 4 / 600)

    @property
    def resolved_lambda_period(self) -> float:
        """Epochs between doublings of lambda: 16 of 600 epochs, scaled, at least 0.1."""
        if self.lambda_period is not None:
            return self.lambda_period
        return max(0.1, self.epochs * 16 / 600)

    @property
    def resolved_stem_channels(self) -> int:
        return self.stem_channels if self.stem_channels is not None else self.channels


_NULLABLE = {"budget", "data_dir", "reference", "cutout", "gate_init", "gate_lr"}


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is outside the valid range {low} to {high}")
    return value


def _check_float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(name, f"{value} is outside the valid range {low:g} to {high:g}")
    return value


def _check_optional_path(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a path, got {value!r}")
    if "\x00" in value or len(value) > 4096:
        raise ConfigError(name, "invalid path")
    return value


def _check_field(name: str, value: Any) -> Any:
    """Validate one field's value and return it in its canonical type."""
    if name in {"preset", "dataset", "device", "sections", "name"}:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected a string, got {value!r}")
    if name == "dataset":
        value = value.strip().lower()
        if value not in DATASETS:
            raise ConfigError(
                name, f"unknown data set {value!r}; choose one of {', '.join(DATASETS)}"
            )
        return value
    if name == "name":
        if len(value) > 200:
            raise ConfigError(name, "at most 200 characters")
        return value
    if name == "device":
        value = value.strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
            raise ConfigError(name, f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")
        return value
    if name == "sections":
        parse_sections(value)
        return ",".join(
            "".join("N" if t == "normal" else "R" for t in s) for s in parse_sections(value)
        )
    if name == "budget":
        return None if value is None or value == "" else parse_size(value, name)
    if name in {"data_dir", "reference"}:
        return _check_optional_path(name, value)
    if name == "ops":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(name, f"expected a list of operation names, got {value!r}")
        for op in value:
            if op not in OPERATION_NAMES:
                raise ConfigError(
                    name, f"unknown operation {op!r}; choose from {', '.join(OPERATION_NAMES)}"
                )
        if len(set(value)) != len(value):
            raise ConfigError(name, "each operation may appear once")
        return tuple(op for op in OPERATION_NAMES if op in value)
    if name in {"download", "channels_last"}:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value
    int_ranges = {
        "epochs": (1, MAX_EPOCHS),
        "channels": (1, MAX_CHANNELS),
        "stem_channels": (1, MAX_CHANNELS),
        "nodes": (1, MAX_NODES),
        "batch_size": (2, MAX_BATCH_SIZE),
        "seed": (0, 2**31 - 1),
        "baseline": (0, 2),
        "cutout": (0, 1024),
        "snapshot_every": (0, 1_000_000),
        "batch_event_every": (1, 1_000_000),
        "max_train_images": (2, 100_000_000),
        "max_test_images": (2, 100_000_000),
        "image_size": (4, 1024),
        "num_threads": (1, 1024),
    }
    if name in int_ranges:
        if value is None:
            return None
        return _check_int(name, value, *int_ranges[name])
    float_ranges = {
        "budget_fraction": (0.01, 1.0),
        "lr": (0.0, 10.0),
        "lr_min": (0.0, 10.0),
        "momentum": (0.0, 0.999),
        "weight_decay": (0.0, 1.0),
        "drop_path": (0.0, 0.9),
        "aux_weight": (0.0, 10.0),
        "gate_init": (1e-6, 10.0),
        "gate_lr": (0.0, 1e4),
        "deadhead_window": (0.01, 1000.0),
        "lambda_init": (0.0, 1e3),
        "lambda_period": (0.01, 1000.0),
        "growth_fraction": (0.05, 0.95),
        "pruner_m": (1.0, 1e9),
    }
    if name in float_ranges:
        if value is None:
            return None
        return _check_float(name, value, *float_ranges[name])
    if name == "preset":
        return value
    raise ConfigError(name, "unknown field")


# Presets, sized for their data set. `cifar10` is the Bonsai-Net paper's setup:
# 8 cells with reductions at 1/3 and 2/3 of the depth, 36 channels, batch 64,
# 600 epochs, learning rate 0.01 cosine-annealed, drop-path 0.3, cutout 16.
# The lambda period and deadhead window then resolve to 16 and 4 epochs.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "dataset": "digits",
        "epochs": 3,
        "channels": 4,
        "nodes": 2,
        "sections": "N,R,N",
        "batch_size": 32,
        "max_train_images": 256,
        "max_test_images": 128,
        "lr": 0.05,
        "drop_path": 0.0,
        "cutout": 0,
        "batch_event_every": 1,
    },
    "digits": {
        "dataset": "digits",
        "epochs": 8,
        "channels": 8,
        "nodes": 3,
        "sections": "NN,R,NN",
        "batch_size": 64,
        "lr": 0.05,
        "drop_path": 0.0,
    },
    "fashion-mnist": {
        "dataset": "fashion-mnist",
        "epochs": 10,
        "channels": 12,
        "nodes": 3,
        "sections": "N,R,N,R,N",
        "batch_size": 96,
        "lr": 0.05,
        "drop_path": 0.1,
    },
    "cifar10": {
        "dataset": "cifar10",
        "epochs": 600,
        "channels": 36,
        "nodes": 4,
        "sections": "NN,R,NN,R,NN",
        "batch_size": 64,
        "lr": 0.01,
        "drop_path": 0.3,
        "cutout": 16,
        "budget": 8 * 1024**3,
    },
}


def make_config(preset: str = "digits", **fields: Any) -> SearchConfig:
    """Build a validated config from a preset and field overrides."""
    return SearchConfig.from_dict({"preset": preset, **fields})


_FIELD_DOCS: dict[str, tuple[str, str]] = {
    # name: (unit, help)
    "preset": ("", "defaults sized for a data set: tiny, digits, fashion-mnist, cifar10"),
    "name": ("", "a label for the search, shown in listings"),
    "dataset": ("", "data set to search on"),
    "data_dir": ("path", "directory holding the data set's files"),
    "download": ("", "download the data set into data_dir if it is missing"),
    "epochs": ("epochs", "total epochs of the search, section growth included"),
    "budget": (
        "bytes",
        "training-memory budget, e.g. 512MiB or 8GiB; empty picks budget_fraction",
    ),
    "budget_fraction": ("fraction", "budget as a fraction of the hyper-connected model's memory"),
    "channels": ("channels", "channels of the first cells; each reduction cell doubles them"),
    "stem_channels": ("channels", "output channels of the stem; empty uses channels"),
    "nodes": ("nodes", "intermediate nodes per cell"),
    "sections": ("", "cell types per section: N normal, R reduction, e.g. NN,R,NN"),
    "batch_size": ("images", "images per training batch"),
    "device": ("", "auto, cpu, cuda or cuda:N"),
    "seed": ("integer", "seed of every random number generator"),
    "baseline": ("level", "0 for a Bonsai search, 1 or 2 for a random-search baseline"),
    "reference": ("path", "work directory of the finished search a baseline matches"),
    "lr": ("per step", "initial SGD learning rate of the model weights (cosine-annealed)"),
    "lr_min": ("per step", "learning rate at the end of the cosine schedule"),
    "momentum": ("factor", "SGD momentum"),
    "weight_decay": ("factor", "L2 weight decay of the model weights (none on pruner weights)"),
    "drop_path": ("probability", "drop-path probability of non-identity operations"),
    "cutout": ("pixels", "side of the cutout square; 0 disables, empty uses the data set's"),
    "aux_weight": ("factor", "loss weight of each auxiliary tower"),
    "gate_init": ("weight", "initial pruner weight w; the gate is on while w > 0; empty is 0.05"),
    "gate_lr": ("per step", "SGD learning rate of the pruner weights; empty is 0.1"),
    "deadhead_window": (
        "epochs",
        "how long a gate must stay off before its pruner is removed; "
        "empty is 4/600 of the epochs, at least 0.2",
    ),
    "lambda_init": ("factor", "compression-loss weight at the start of each prune cycle"),
    "lambda_period": (
        "epochs",
        "epochs between doublings of lambda while the target is unmet; "
        "empty is 16/600 of the epochs, at least 0.1",
    ),
    "growth_fraction": ("fraction", "share of the epochs that growth phases may use in all"),
    "pruner_m": ("factor", "M of the saw wave S(w) = (Mw - floor(Mw)) / M"),
    "snapshot_every": ("batches", "batches between pruner snapshots; 0 is once per epoch"),
    "batch_event_every": ("batches", "batches between batch-loss events"),
    "ops": ("", "operations on every edge, comma-separated"),
    "max_train_images": ("images", "use at most this many training images"),
    "max_test_images": ("images", "use at most this many test images"),
    "image_size": ("pixels", "resize imagefolder images to this side"),
    "channels_last": ("", "train in channels-last memory format (faster on CPUs and GPUs)"),
    "num_threads": (
        "threads",
        "torch threads; empty uses 1 on the CPU, which is fastest for small cells",
    ),
}


def config_fields(preset: str = "digits") -> list[dict[str, Any]]:
    """Describe every config field (name, type, default, unit, help, choices) for forms."""
    defaults = SearchConfig.from_dict({"preset": preset})
    rows = []
    for spec in dataclasses.fields(SearchConfig):
        if spec.name == "extra":
            continue
        unit, help_text = _FIELD_DOCS[spec.name]
        default = getattr(defaults, spec.name)
        choices: list[Any] | None = None
        if spec.name == "preset":
            choices = list(PRESETS)
        elif spec.name == "dataset":
            choices = list(DATASETS)
        elif spec.name == "baseline":
            choices = [0, 1, 2]
        elif spec.name == "ops":
            choices = list(OPERATION_NAMES)
            default = list(default)
        rows.append(
            {
                "name": spec.name,
                "type": "size" if spec.name == "budget" else _type_name(spec.type),
                "default": default,
                "unit": unit,
                "help": help_text,
                "choices": choices,
            }
        )
    return rows


def _type_name(annotation: Any) -> str:
    text = str(annotation)
    for name in ("bool", "int", "float", "tuple", "str"):
        if text.startswith(name):
            return "list" if name == "tuple" else name
    return text
