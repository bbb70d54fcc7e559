"""Bonsai-Net: one-shot neural architecture search with differentiable pruners.

The public API of the search engine; see docs/engine-api.md.
"""

from bonsai.config import (
    PRESETS,
    ConfigError,
    SearchConfig,
    config_fields,
    format_size,
    make_config,
    parse_size,
)
from bonsai.data import DATASET_NAMES, DatasetNotFoundError, available_datasets, load_dataset
from bonsai.estimate import estimate_memory
from bonsai.events import EVENT_TYPES
from bonsai.genotype import Genotype, GenotypeError, load_genotype
from bonsai.memory import SectionFitError
from bonsai.model import DiscoveredNetwork, build_model
from bonsai.search import SearchResult, run_search

__all__ = [
    "DATASET_NAMES",
    "EVENT_TYPES",
    "PRESETS",
    "ConfigError",
    "DatasetNotFoundError",
    "DiscoveredNetwork",
    "Genotype",
    "GenotypeError",
    "SearchConfig",
    "SearchResult",
    "SectionFitError",
    "available_datasets",
    "build_model",
    "config_fields",
    "estimate_memory",
    "format_size",
    "load_dataset",
    "load_genotype",
    "make_config",
    "parse_size",
    "run_search",
]
