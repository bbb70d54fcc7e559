"""Graph analysis of Bonsai-Net cells, shared by the API, the pages and the tests.

`graph_from_events` rebuilds the architecture as it stood at the end of an epoch
from the engine's events. `analyze_cells` lays out and analyses cells in the
genotype shape (see docs/engine-api.md), so a genotype file and a replayed epoch
go through the same code.

Node numbering inside a cell: 0 is Input 0, 1 is Input 1, 2 to ``nodes + 1`` are
the intermediate nodes, and the last of them, ``nodes + 1``, is the output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import networkx as nx

__all__ = [
    "CONVOLUTIONS",
    "OPERATIONS",
    "PARAMETER_FREE_OPERATIONS",
    "analyze_cells",
    "graph_from_events",
    "remove_dead_nodes",
]

OPERATIONS = (
    "identity",
    "avg_pool_3x3",
    "max_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
CONVOLUTIONS = frozenset(op for op in OPERATIONS if "_conv_" in op)
PARAMETER_FREE_OPERATIONS = frozenset(OPERATIONS) - CONVOLUTIONS
CELL_TYPES = ("normal", "reduction")

Cell = dict[str, Any]
Event = dict[str, Any]

# Events before the first epoch carry `epoch: null`, so they sort before epoch 0.
_BEFORE_TRAINING = -1


def graph_from_events(events: list[Event], epoch: int | None) -> dict[str, Any]:
    """Rebuild and analyse the architecture as it stood at the end of ``epoch``.

    ``epoch`` None takes every event, which is the live state of a running search.
    A section counts from its ``start_epoch`` on, a pruner is shown unless a
    ``deadheaded`` event at or before the epoch removed it, and its weight and gate
    come from the last ``pruner_snapshot`` at or before the epoch. Before the first
    snapshot a pruner has the configured ``gate_init`` weight (null when the
    configuration does not give one). Edges without live operations and nodes
    without inputs or without a path to the output are removed.

    Raises:
        ValueError: ``epoch`` is negative, or a cell structure is malformed.
    """
    if epoch is not None and epoch < 0:
        raise ValueError(f"invalid epoch {epoch}: epochs start at 0")

    ordered = sorted(events, key=lambda event: event.get("seq", 0))
    epochs = sorted({e["epoch"] for e in ordered if e["type"] == "epoch_end"})
    if epoch is not None:
        ordered = [e for e in ordered if _event_epoch(e) <= epoch]

    structures: dict[int, Cell] = {}
    last_snapshot: list[list[Any]] = []
    dead_pruners: set[str] = set()
    dead_nodes: set[str] = set()
    deadheads: list[tuple[int | None, list[str]]] = []
    initial_weight: float | None = None
    for event in ordered:
        data = event.get("data") or {}
        kind = event["type"]
        if kind == "search_started":
            resolved = data.get("gate_init", (data.get("config") or {}).get("gate_init"))
            initial_weight = _number_or_none(resolved)
        elif kind == "section_added":
            for structure in data.get("cells", []):
                structures[structure["index"]] = structure
        elif kind == "pruner_snapshot":
            last_snapshot = data.get("pruners", [])
        elif kind == "deadheaded":
            dead_pruners.update(data.get("pruner_ids", []))
            dead_nodes.update(data.get("removed_nodes", []))
            deadheads.append((event.get("epoch"), list(data.get("pruner_ids", []))))

    weights = {
        pruner_id: (_number_or_none(weight), gate) for pruner_id, weight, gate in last_snapshot
    }
    initial = (initial_weight, None if initial_weight is None else int(initial_weight > 0))
    cells = [
        remove_dead_nodes(
            _cell_from_structure(structures[index], dead_pruners, dead_nodes, weights, initial)
        )
        for index in sorted(structures)
    ]
    analysis = analyze_cells(cells)

    shown_epoch = epoch
    if shown_epoch is None and epochs:
        shown_epoch = epochs[-1]
    return {
        "epoch": shown_epoch,
        "epochs": epochs,
        "seq": ordered[-1].get("seq") if ordered else None,
        "deadheaded_at_epoch": [
            pruner_id
            for deadhead_epoch, pruner_ids in deadheads
            if deadhead_epoch == shown_epoch
            for pruner_id in pruner_ids
        ],
        **analysis,
    }


def _event_epoch(event: Event) -> int:
    """Return the epoch an event belongs to, for cutting the history at an epoch."""
    if event["type"] == "section_added":
        start = (event.get("data") or {}).get("start_epoch")
        if start is not None:
            return int(start)
    epoch = event.get("epoch")
    return _BEFORE_TRAINING if epoch is None else int(epoch)


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _cell_from_structure(
    structure: Cell,
    dead_pruners: set[str],
    dead_nodes: set[str],
    weights: dict[str, tuple[float | None, int | None]],
    initial: tuple[float | None, int | None],
) -> Cell:
    """Convert a ``section_added`` cell structure into a genotype cell of live pruners."""
    index = structure["index"]
    removed = {
        int(name.rsplit(".n", 1)[1])
        for name in dead_nodes
        if name.startswith(f"c{index}.n") and name.rsplit(".n", 1)[1].isdigit()
    }
    input1: list[dict[str, Any]] = []
    edges: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for pruner in structure.get("pruners", []):
        pruner_id = pruner["id"]
        if pruner_id in dead_pruners:
            continue
        weight, gate = weights.get(pruner_id, initial)
        if pruner["kind"] == "input1":
            input1.append(
                {"source": pruner["source"], "pruner": pruner_id, "weight": weight, "gate": gate}
            )
            continue
        source, target = int(pruner["source"]), int(pruner["target"])
        if source in removed or target in removed:
            continue
        edges.setdefault((source, target), []).append(
            {"op": pruner["op"], "pruner": pruner_id, "weight": weight, "gate": gate}
        )

    cell: Cell = {
        key: structure[key]
        for key in ("index", "type", "section", "channels", "resolution", "nodes", "input0")
        if key in structure
    }
    cell["input1"] = input1
    cell["edges"] = [
        {"source": source, "target": target, "ops": ops}
        for (source, target), ops in sorted(edges.items())
    ]
    return cell


def remove_dead_nodes(cell: Cell) -> Cell:
    """Return a copy of ``cell`` without edges that can no longer carry a signal.

    An edge goes when it has no operations, when its source has no inputs (Input 1
    without sources, an intermediate node without incoming edges), or when its
    target has no path to the output. Removals repeat until nothing changes.
    """
    output = int(cell["nodes"]) + 1
    edges = [edge for edge in cell.get("edges", []) if edge.get("ops")]
    while True:
        graph = nx.DiGraph()
        graph.add_nodes_from(range(output + 1))
        graph.add_edges_from((edge["source"], edge["target"]) for edge in edges)
        fed = {0} | ({1} if cell.get("input1") else set())
        for node in range(2, output + 1):
            if graph.in_degree(node) > 0:
                fed.add(node)
        reaches_output = nx.ancestors(graph, output) | {output}
        kept = [
            edge for edge in edges if edge["source"] in fed and edge["target"] in reaches_output
        ]
        if len(kept) == len(edges):
            break
        edges = kept
    return {**cell, "edges": edges}


def analyze_cells(cells: list[Cell]) -> dict[str, Any]:
    """Lay out, count and find motifs in cells of the genotype shape.

    Each returned cell is the input cell plus ``layout``, ``op_counts``,
    ``motifs``, ``motif_counts`` and ``parameter_free``. The result also contains the
    inter-cell view and the operation and motif counts over all cells.

    Raises:
        ValueError: a cell is malformed; the message names the cell and the field.
    """
    analysed = []
    for cell in sorted(cells, key=lambda c: c.get("index", 0)):
        _validate_cell(cell)
        motifs = _find_motifs(cell)
        analysed.append(
            {
                **cell,
                "layout": _layout(cell),
                "op_counts": _count_ops(cell["edges"]),
                "motifs": motifs,
                "motif_counts": {
                    kind: sum(motif["kind"] == kind for motif in motifs)
                    for kind in ("residual_edge", "residual_path")
                },
                "parameter_free": _is_parameter_free(cell),
            }
        )

    by_type = {cell_type: _zero_counts() for cell_type in CELL_TYPES}
    for cell in analysed:
        totals = by_type.setdefault(cell["type"], _zero_counts())
        for op, count in cell["op_counts"].items():
            totals[op] += count

    return {
        "cells": analysed,
        "inter_cell": [_inter_cell_entry(cell) for cell in analysed],
        "op_counts": {
            "by_type": by_type,
            "by_depth": [
                {"cell": c["index"], "type": c["type"], "counts": c["op_counts"]} for c in analysed
            ],
        },
        "motif_counts": {
            "residual_edge": sum(c["motif_counts"]["residual_edge"] for c in analysed),
            "residual_path": sum(c["motif_counts"]["residual_path"] for c in analysed),
            "parameter_free_cells": sum(c["parameter_free"] for c in analysed),
        },
    }


def _validate_cell(cell: Cell) -> None:
    index = cell.get("index", "?")
    for key in ("index", "type", "nodes", "edges"):
        if key not in cell:
            raise ValueError(f"cell {index}: missing field {key!r}")
    nodes = cell["nodes"]
    if not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"cell {index}: invalid nodes {nodes!r}, expected an integer >= 1")
    for edge in cell["edges"]:
        source, target = edge.get("source"), edge.get("target")
        if not (isinstance(source, int) and isinstance(target, int)):
            raise ValueError(f"cell {index}: edge {source!r}->{target!r} needs integer nodes")
        if not 0 <= source < target <= nodes + 1 or target < 2:
            raise ValueError(
                f"cell {index}: invalid edge {source}->{target}, expected "
                f"0 <= source < target and 2 <= target <= {nodes + 1}"
            )
        for op in edge.get("ops", []):
            if op.get("op") not in OPERATIONS:
                raise ValueError(f"cell {index}: unknown operation {op.get('op')!r}")


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(OPERATIONS, 0)


def _count_ops(edges: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = _zero_counts()
    for edge in edges:
        for op in edge["ops"]:
            counts[op["op"]] += 1
    return counts


def _node_label(node: int, output: int) -> str:
    if node in (0, 1):
        return f"Input {node}"
    return "Out" if node == output else str(node)


def _layout(cell: Cell) -> dict[str, Any]:
    """Place the nodes in layers: both inputs at 0, each node one past its deepest input.

    Shown are both inputs, the output and every intermediate node with an edge.
    ``x`` and ``y`` lie in [0, 1]: ``x`` is the layer over the last layer, and the
    nodes of a layer are spread evenly over ``y`` in the order of their ids.
    """
    output = cell["nodes"] + 1
    graph = nx.DiGraph()
    graph.add_nodes_from([0, 1, output])
    graph.add_edges_from((edge["source"], edge["target"]) for edge in cell["edges"])

    layers: dict[int, int] = {}
    for node in nx.topological_sort(graph):
        predecessors = list(graph.predecessors(node))
        if node in (0, 1):
            layers[node] = 0
        elif predecessors:
            layers[node] = 1 + max(layers[p] for p in predecessors)
        else:
            layers[node] = 1
    others = [layer for node, layer in layers.items() if node != output]
    layers[output] = max(layers[output], max(others) + 1)
    last_layer = layers[output]

    placed = []
    for layer in range(last_layer + 1):
        members = sorted(node for node, node_layer in layers.items() if node_layer == layer)
        for rank, node in enumerate(members):
            placed.append(
                {
                    "id": node,
                    "label": _node_label(node, output),
                    "layer": layer,
                    "x": layer / last_layer,
                    "y": (rank + 1) / (len(members) + 1),
                }
            )
    return {"nodes": placed, "layers": last_layer + 1}


def _ops_of(edge: dict[str, Any], names: Iterable[str]) -> list[dict[str, Any]]:
    wanted = set(names)
    return [op for op in edge["ops"] if op["op"] in wanted]


def _find_motifs(cell: Cell) -> list[dict[str, Any]]:
    """Find the residual patterns of a cell.

    ``residual_edge``: one edge that sums identity and a convolution.
    ``residual_path``: identity on u->w beside convolutions on u->v and v->w.
    Each motif lists its nodes and the pruners of the operations that form it.
    """
    edges = {(edge["source"], edge["target"]): edge for edge in cell["edges"]}
    motifs: list[dict[str, Any]] = []

    for (source, target), edge in sorted(edges.items()):
        identity = _ops_of(edge, ["identity"])
        convolutions = _ops_of(edge, CONVOLUTIONS)
        if identity and convolutions:
            motifs.append(
                {
                    "kind": "residual_edge",
                    "nodes": [source, target],
                    "pruners": [op["pruner"] for op in identity + convolutions],
                }
            )

    for (u, w), skip in sorted(edges.items()):
        identity = _ops_of(skip, ["identity"])
        if not identity:
            continue
        for v in range(u + 1, w):
            first, second = edges.get((u, v)), edges.get((v, w))
            if first is None or second is None:
                continue
            first_convolutions = _ops_of(first, CONVOLUTIONS)
            second_convolutions = _ops_of(second, CONVOLUTIONS)
            if first_convolutions and second_convolutions:
                motifs.append(
                    {
                        "kind": "residual_path",
                        "nodes": [u, v, w],
                        "pruners": [
                            op["pruner"]
                            for op in identity + first_convolutions + second_convolutions
                        ],
                    }
                )
    return motifs


def _is_parameter_free(cell: Cell) -> bool:
    """Return whether the cell connects an input to its output through pools and identity only.

    Only edges on some input-to-output path count. A cell with no such path at all
    is not flagged, because it has no path to judge.
    """
    output = cell["nodes"] + 1
    graph = nx.DiGraph()
    graph.add_nodes_from([0, 1, output])
    for edge in cell["edges"]:
        if edge["ops"]:
            graph.add_edge(edge["source"], edge["target"], ops=edge["ops"])
    reachable = nx.descendants(graph, 0) | nx.descendants(graph, 1) | {0, 1}
    useful = nx.ancestors(graph, output) | {output}
    on_path = [
        data["ops"]
        for source, target, data in graph.edges(data=True)
        if source in reachable and target in useful
    ]
    if not on_path:
        return False
    return all(op["op"] in PARAMETER_FREE_OPERATIONS for ops in on_path for op in ops)


def _source_order(source: str) -> tuple[int, int]:
    if source == "stem":
        return (0, 0)
    digits = source.lstrip("c")
    return (1, int(digits)) if digits.isdigit() else (2, 0)


def _inter_cell_entry(cell: Cell) -> dict[str, Any]:
    terms = sorted(cell.get("input1", []), key=lambda term: _source_order(term["source"]))
    index = cell["index"]
    return {
        "cell": index,
        "input0": cell.get("input0") or ("stem" if index == 0 else f"c{index - 1}"),
        "sources": [term["source"] for term in terms],
        "terms": terms,
    }
