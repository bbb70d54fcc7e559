"""Genotype JSON: the surviving architecture of a search, versioned and validated.

Format ``bonsai-genotype`` version 1 (JSON Schema in
``bonsai/schemas/genotype.schema.json``, described in ``docs/genotype.md``).
Pruned edges and dead nodes are left out, and no "none" or "zero" operation is
ever written: an absent edge is a pruned edge.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bonsai.cell import reaches_output
from bonsai.ops import OPERATIONS
from bonsai.pruner import input1_pruner_id, op_pruner_id, parse_pruner_id

__all__ = [
    "FORMAT",
    "VERSION",
    "Genotype",
    "GenotypeError",
    "genotype_from_network",
    "load_genotype",
]

FORMAT = "bonsai-genotype"
VERSION = 1

# Bounds on what a genotype may describe; far above any real search, they stop a
# hostile or corrupt file from building an absurd model.
MAX_CELLS = 64
MAX_NODES = 12
MAX_CHANNELS = 4096
MAX_RESOLUTION = 4096
MAX_CLASSES = 100_000
MAX_DEPTH = 8
MAX_BYTES = 16 * 1024 * 1024

_SOURCE = re.compile(r"^(stem|c\d+)$")


class GenotypeError(ValueError):
    """An invalid genotype; `field` is the JSON path of the bad value, e.g. cells[2].edges[0]."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Genotype:
    """A validated genotype; `data` is the JSON object."""

    data: dict[str, Any]

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.data["cells"]

    @property
    def sections(self) -> list[list[int]]:
        """Cell indices per section."""
        sections: dict[int, list[int]] = {}
        for cell in self.cells:
            sections.setdefault(cell["section"], []).append(cell["index"])
        return [sections[s] for s in sorted(sections)]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, allow_nan=False)


def genotype_from_network(net: Any, extra: dict[str, Any] | None = None) -> Genotype:
    """Describe the live architecture of a `SearchNetwork` as a genotype."""
    cells = []
    weights_by_cell = {cell.index: cell.weights.detach().cpu().tolist() for cell in net.cells}
    for cell in net.cells:
        weights = dict(zip(cell.pruner_ids, weights_by_cell[cell.index], strict=True))
        input1 = [
            {
                "source": name,
                "pruner": input1_pruner_id(cell.index, name),
                "weight": weights[input1_pruner_id(cell.index, name)],
            }
            for name in cell.input1
        ]
        edges = []
        for (source, target), ops in sorted(cell.edges.items()):
            entries = []
            for op in ops:
                pruner = op_pruner_id(cell.index, source, target, op)
                entries.append({"op": op, "pruner": pruner, "weight": weights[pruner]})
            edges.append({"source": source, "target": target, "ops": entries})
        cells.append(
            {
                "index": cell.index,
                "type": cell.cell_type,
                "section": cell.section,
                "channels": cell.channels,
                "resolution": cell.resolution,
                "nodes": cell.nodes,
                "input0": cell.input0_source.name,
                "input1": input1,
                "edges": edges,
                "compression": float(cell.compression().detach()),
            }
        )
    data = {
        "format": FORMAT,
        "version": VERSION,
        "input": {
            "channels": net.in_channels,
            "image_size": net.image_size,
            "classes": net.num_classes,
        },
        "stem_channels": net.stem_channels,
        "pruner_m": net.pruner_m,
        "cells": cells,
        "compression": _overall_compression(net),
    }
    if extra:
        data.update(extra)
    return load_genotype(data)


def _overall_compression(net: Any) -> float:
    total = sum(cell.initial_size for cell in net.cells)
    if total <= 0:
        return 1.0
    return float(
        sum(float(cell.compression().detach()) * cell.initial_size for cell in net.cells) / total
    )


def load_genotype(source: str | Path | dict[str, Any]) -> Genotype:
    """Load and validate a genotype from a path, JSON text or a parsed object.

    Raises GenotypeError naming the field on anything invalid: an unknown
    format or version, an unknown operation, a backward or self edge, a negative
    or out-of-range index, absurd sizes, or nesting deeper than a genotype has.
    """
    if isinstance(source, dict):
        data = source
    else:
        text = _read_text(source)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise GenotypeError("$", f"invalid JSON: {error}") from None
    _check_depth(data, "$", 0)
    _validate(data)
    return Genotype(data)


def _read_text(source: str | Path) -> str:
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return source
    path = Path(source)
    if not path.is_file():
        raise GenotypeError("$", f"genotype file {str(path)!r} not found")
    if path.stat().st_size > MAX_BYTES:
        raise GenotypeError("$", f"genotype file is larger than {MAX_BYTES} bytes")
    return path.read_text()


def _check_depth(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise GenotypeError(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_depth(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_depth(item, f"{path}[{i}]", depth + 1)


def _require(data: dict, key: str, kind: type | tuple[type, ...], path: str) -> Any:
    if not isinstance(data, dict):
        raise GenotypeError(path, "expected an object")
    if key not in data:
        raise GenotypeError(f"{path}.{key}", "missing")
    value = data[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise GenotypeError(f"{path}.{key}", f"expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _int_in(data: dict, key: str, low: int, high: int, path: str) -> int:
    value = _require(data, key, int, path)
    if not low <= value <= high:
        raise GenotypeError(f"{path}.{key}", f"{value} is outside {low} to {high}")
    return value


def _number(data: dict, key: str, path: str) -> float:
    value = _require(data, key, (int, float), path)
    if value != value or value in (float("inf"), float("-inf")):
        raise GenotypeError(f"{path}.{key}", "must be a finite number")
    return float(value)


def _validate(data: Any) -> None:
    if not isinstance(data, dict):
        raise GenotypeError("$", "expected a JSON object")
    if data.get("format") != FORMAT:
        raise GenotypeError("$.format", f"expected {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        raise GenotypeError(
            "$.version", f"unsupported version {data.get('version')!r}; this is {VERSION}"
        )
    source = _require(data, "input", dict, "$")
    _int_in(source, "channels", 1, 64, "$.input")
    _int_in(source, "image_size", 1, MAX_RESOLUTION, "$.input")
    _int_in(source, "classes", 2, MAX_CLASSES, "$.input")
    _int_in(data, "stem_channels", 1, MAX_CHANNELS, "$")
    _number(data, "pruner_m", "$")
    cells = _require(data, "cells", list, "$")
    if not 1 <= len(cells) <= MAX_CELLS:
        raise GenotypeError("$.cells", f"expected 1 to {MAX_CELLS} cells, got {len(cells)}")
    previous_section = 0
    for i, cell in enumerate(cells):
        path = f"$.cells[{i}]"
        if _int_in(cell, "index", 0, MAX_CELLS - 1, path) != i:
            raise GenotypeError(f"{path}.index", f"expected {i}: cells are listed in order")
        cell_type = _require(cell, "type", str, path)
        if cell_type not in ("normal", "reduction"):
            raise GenotypeError(f"{path}.type", f"expected normal or reduction, got {cell_type!r}")
        section = _int_in(cell, "section", 0, MAX_CELLS - 1, path)
        if section not in (previous_section, previous_section + 1) or (i == 0 and section != 0):
            raise GenotypeError(f"{path}.section", f"section {section} out of order")
        previous_section = section
        _int_in(cell, "channels", 1, MAX_CHANNELS, path)
        _int_in(cell, "resolution", 1, MAX_RESOLUTION, path)
        nodes = _int_in(cell, "nodes", 1, MAX_NODES, path)
        input0 = _require(cell, "input0", str, path)
        expected0 = "stem" if i == 0 else f"c{i - 1}"
        if input0 != expected0:
            raise GenotypeError(f"{path}.input0", f"expected {expected0!r}, got {input0!r}")
        if "compression" in cell:
            _number(cell, "compression", path)
        seen_sources = set()
        for k, term in enumerate(_require(cell, "input1", list, path)):
            term_path = f"{path}.input1[{k}]"
            name = _require(term, "source", str, term_path)
            if not _SOURCE.match(name) or (name != "stem" and int(name[1:]) >= i):
                raise GenotypeError(
                    f"{term_path}.source", f"{name!r} is not the stem or an earlier cell"
                )
            if name in seen_sources:
                raise GenotypeError(f"{term_path}.source", f"{name!r} appears twice")
            seen_sources.add(name)
            _check_pruner(term, input1_pruner_id(i, name), term_path)
        seen_edges = set()
        for e, edge in enumerate(_require(cell, "edges", list, path)):
            edge_path = f"{path}.edges[{e}]"
            source = _int_in(edge, "source", 0, nodes + 1, edge_path)
            target = _int_in(edge, "target", 0, nodes + 1, edge_path)
            if target < 2:
                raise GenotypeError(f"{edge_path}.target", "the input nodes 0 and 1 take no edges")
            if source >= target:
                raise GenotypeError(
                    f"{edge_path}.source", f"edge {source} -> {target} is a backward or self edge"
                )
            if (source, target) in seen_edges:
                raise GenotypeError(edge_path, f"edge {source} -> {target} appears twice")
            seen_edges.add((source, target))
            ops = _require(edge, "ops", list, edge_path)
            if not ops:
                raise GenotypeError(f"{edge_path}.ops", "an edge needs at least one operation")
            names = set()
            for o, entry in enumerate(ops):
                op_path = f"{edge_path}.ops[{o}]"
                op = _require(entry, "op", str, op_path)
                if op not in OPERATIONS:
                    raise GenotypeError(
                        f"{op_path}.op",
                        f"unknown operation {op!r}; valid: {', '.join(OPERATIONS)}",
                    )
                if op in names:
                    raise GenotypeError(f"{op_path}.op", f"{op!r} appears twice on the edge")
                names.add(op)
                _check_pruner(entry, op_pruner_id(i, source, target, op), op_path)
        if not reaches_output(seen_edges, bool(seen_sources), nodes):
            raise GenotypeError(f"{path}.edges", "no path from an input to the output node")


def _check_pruner(entry: dict, expected: str, path: str) -> None:
    pruner = _require(entry, "pruner", str, path)
    if pruner != expected:
        raise GenotypeError(f"{path}.pruner", f"expected {expected!r}, got {pruner!r}")
    parse_pruner_id(pruner)
    if "weight" in entry:
        _number(entry, "weight", path)
