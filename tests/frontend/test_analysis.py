"""Tests of backend.analysis on hand-made genotypes and event lists.

Every expected value below is worked out by hand from the cell drawn in the
comment above it, not computed by the code under test.
"""

from __future__ import annotations

from typing import Any

import pytest

from backend.analysis import analyze_cells, graph_from_events, remove_dead_nodes

ZERO = {
    "identity": 0,
    "avg_pool_3x3": 0,
    "max_pool_3x3": 0,
    "sep_conv_3x3": 0,
    "sep_conv_5x5": 0,
    "dil_conv_3x3": 0,
    "dil_conv_5x5": 0,
}


def counts(**nonzero: int) -> dict[str, int]:
    return {**ZERO, **nonzero}


def make_cell(
    index: int,
    nodes: int,
    edges: dict[tuple[int, int], list[str]],
    cell_type: str = "normal",
    input1: tuple[str, ...] = ("stem",),
) -> dict[str, Any]:
    """Build a genotype cell whose pruner ids follow the engine's naming."""
    return {
        "index": index,
        "type": cell_type,
        "section": 0,
        "channels": 8,
        "resolution": 8,
        "nodes": nodes,
        "input1": [
            {"source": source, "pruner": f"c{index}.in1.{source}", "weight": 0.1}
            for source in input1
        ],
        "edges": [
            {
                "source": source,
                "target": target,
                "ops": [
                    {"op": op, "pruner": f"c{index}.e{source}_{target}.{op}", "weight": 0.1}
                    for op in ops
                ],
            }
            for (source, target), ops in edges.items()
        ],
    }


# Cell A, normal, 3 intermediate nodes (2, 3, 4), output 4:
#   0->2 identity + sep_conv_3x3     a residual edge
#   1->2 max_pool_3x3
#   0->3 sep_conv_5x5
#   2->3 dil_conv_3x3
#   2->4 identity                    skip of the path 2->3->4 (conv, conv)
#   3->4 sep_conv_3x3
CELL_A_EDGES = {
    (0, 2): ["identity", "sep_conv_3x3"],
    (1, 2): ["max_pool_3x3"],
    (0, 3): ["sep_conv_5x5"],
    (2, 3): ["dil_conv_3x3"],
    (2, 4): ["identity"],
    (3, 4): ["sep_conv_3x3"],
}

# Cell B, reduction, 2 intermediate nodes (2, 3), output 3, pools and identity only.
CELL_B_EDGES = {
    (0, 2): ["max_pool_3x3"],
    (1, 2): ["avg_pool_3x3"],
    (2, 3): ["identity"],
    (0, 3): ["max_pool_3x3"],
}

# Cell C, normal, 2 intermediate nodes (2, 3), output 3, near misses only:
#   0->2 sep_conv_3x3, 2->3 avg_pool_3x3, 0->3 identity: the path has a pool, not a
#   second convolution, and no edge sums identity with a convolution.
CELL_C_EDGES = {
    (0, 2): ["sep_conv_3x3"],
    (2, 3): ["avg_pool_3x3"],
    (0, 3): ["identity", "max_pool_3x3"],
    (1, 3): ["dil_conv_5x5"],
}


def test_residual_edge_found() -> None:
    cell = analyze_cells([make_cell(0, 3, CELL_A_EDGES)])["cells"][0]
    edges = [m for m in cell["motifs"] if m["kind"] == "residual_edge"]
    assert len(edges) == 1
    assert edges[0]["nodes"] == [0, 2]
    assert edges[0]["pruners"] == ["c0.e0_2.identity", "c0.e0_2.sep_conv_3x3"]


def test_residual_path_found() -> None:
    cell = analyze_cells([make_cell(0, 3, CELL_A_EDGES)])["cells"][0]
    paths = [m for m in cell["motifs"] if m["kind"] == "residual_path"]
    assert len(paths) == 1
    assert paths[0]["nodes"] == [2, 3, 4]
    assert paths[0]["pruners"] == [
        "c0.e2_4.identity",
        "c0.e2_3.dil_conv_3x3",
        "c0.e3_4.sep_conv_3x3",
    ]
    assert cell["motif_counts"] == {"residual_edge": 1, "residual_path": 1}


def test_residual_path_through_input() -> None:
    # Input 1 -> 2 -> Out with convolutions, identity on Input 1 -> Out (output 3).
    edges = {(1, 2): ["sep_conv_5x5"], (2, 3): ["dil_conv_3x3"], (1, 3): ["identity"]}
    cell = analyze_cells([make_cell(0, 2, edges)])["cells"][0]
    assert [m["nodes"] for m in cell["motifs"]] == [[1, 2, 3]]


def test_residual_path_counts_every_middle_node() -> None:
    # 0->Out identity, and two convolution paths 0->2->4 and 0->3->4 (output 4).
    edges = {
        (0, 2): ["sep_conv_3x3"],
        (0, 3): ["sep_conv_3x3"],
        (2, 4): ["sep_conv_3x3"],
        (3, 4): ["dil_conv_5x5"],
        (0, 4): ["identity"],
    }
    cell = analyze_cells([make_cell(0, 3, edges)])["cells"][0]
    assert [m["nodes"] for m in cell["motifs"]] == [[0, 2, 4], [0, 3, 4]]


def test_motifs_absent_in_near_misses() -> None:
    cell = analyze_cells([make_cell(0, 2, CELL_C_EDGES)])["cells"][0]
    assert cell["motifs"] == []
    assert cell["motif_counts"] == {"residual_edge": 0, "residual_path": 0}
    assert cell["parameter_free"] is False


def test_motifs_absent_in_pool_cell() -> None:
    cell = analyze_cells([make_cell(0, 2, CELL_B_EDGES, "reduction")])["cells"][0]
    assert cell["motifs"] == []


def test_parameter_free_cell_flagged() -> None:
    result = analyze_cells([make_cell(0, 2, CELL_B_EDGES, "reduction")])
    assert result["cells"][0]["parameter_free"] is True
    assert result["motif_counts"]["parameter_free_cells"] == 1


def test_parameter_free_ignores_dead_end() -> None:
    # 0->2 identity, 2->Out max_pool (output 4); the convolution 0->3 ends at node 3,
    # which has no path to Out, so no input-to-output path has parameters.
    edges = {(0, 2): ["identity"], (2, 4): ["max_pool_3x3"], (0, 3): ["sep_conv_3x3"]}
    cell = analyze_cells([make_cell(0, 3, edges)])["cells"][0]
    assert cell["parameter_free"] is True


def test_parameter_free_not_flagged_on_empty_cell() -> None:
    cell = analyze_cells([make_cell(0, 2, {})])["cells"][0]
    assert cell["parameter_free"] is False


def test_op_counts_per_cell() -> None:
    cell = analyze_cells([make_cell(0, 3, CELL_A_EDGES)])["cells"][0]
    assert cell["op_counts"] == counts(
        identity=2, max_pool_3x3=1, sep_conv_3x3=2, sep_conv_5x5=1, dil_conv_3x3=1
    )


def test_op_counts_by_type_and_depth() -> None:
    result = analyze_cells(
        [
            make_cell(2, 2, CELL_C_EDGES),
            make_cell(0, 3, CELL_A_EDGES),
            make_cell(1, 2, CELL_B_EDGES, "reduction"),
        ]
    )
    by_type = result["op_counts"]["by_type"]
    # Normal is A (id 2, max 1, sep3 2, sep5 1, dil3 1) plus C (sep3 1, avg 1, id 1,
    # max 1, dil5 1).
    assert by_type["normal"] == counts(
        identity=3,
        avg_pool_3x3=1,
        max_pool_3x3=2,
        sep_conv_3x3=3,
        sep_conv_5x5=1,
        dil_conv_3x3=1,
        dil_conv_5x5=1,
    )
    assert by_type["reduction"] == counts(max_pool_3x3=2, avg_pool_3x3=1, identity=1)
    depth = result["op_counts"]["by_depth"]
    assert [entry["cell"] for entry in depth] == [0, 1, 2]
    assert [entry["type"] for entry in depth] == ["normal", "reduction", "normal"]
    assert depth[1]["counts"] == counts(max_pool_3x3=2, avg_pool_3x3=1, identity=1)
    assert depth[2]["counts"] == counts(
        sep_conv_3x3=1, avg_pool_3x3=1, identity=1, max_pool_3x3=1, dil_conv_5x5=1
    )


def test_motif_totals_over_cells() -> None:
    result = analyze_cells(
        [
            make_cell(0, 3, CELL_A_EDGES),
            make_cell(1, 2, CELL_B_EDGES, "reduction"),
            make_cell(2, 2, CELL_C_EDGES),
        ]
    )
    assert result["motif_counts"] == {
        "residual_edge": 1,
        "residual_path": 1,
        "parameter_free_cells": 1,
    }


def test_layout_layers_by_longest_path() -> None:
    layout = analyze_cells([make_cell(0, 3, CELL_A_EDGES)])["cells"][0]["layout"]
    layers = {node["id"]: node["layer"] for node in layout["nodes"]}
    # Node 2 follows the inputs, node 3 follows 2, Out (4) follows 3.
    assert layers == {0: 0, 1: 0, 2: 1, 3: 2, 4: 3}
    assert layout["layers"] == 4
    labels = {node["id"]: node["label"] for node in layout["nodes"]}
    assert labels == {0: "Input 0", 1: "Input 1", 2: "2", 3: "3", 4: "Out"}


def test_layout_positions_within_unit_square() -> None:
    layout = analyze_cells([make_cell(0, 3, CELL_A_EDGES)])["cells"][0]["layout"]
    positions = {node["id"]: (node["x"], node["y"]) for node in layout["nodes"]}
    assert positions[0] == (0.0, pytest.approx(1 / 3))
    assert positions[1] == (0.0, pytest.approx(2 / 3))
    assert positions[2] == (pytest.approx(1 / 3), 0.5)
    assert positions[4] == (1.0, 0.5)


def test_layout_out_last_when_skipped() -> None:
    # Out (3) has only an edge from Input 0 while node 2 hangs off Input 1; Out must
    # still come after node 2.
    edges = {(0, 3): ["identity"], (1, 2): ["max_pool_3x3"]}
    layout = analyze_cells([make_cell(0, 2, edges)])["cells"][0]["layout"]
    layers = {node["id"]: node["layer"] for node in layout["nodes"]}
    assert layers == {0: 0, 1: 0, 2: 1, 3: 2}


def test_layout_omits_unused_nodes() -> None:
    edges = {(0, 4): ["identity"]}
    layout = analyze_cells([make_cell(0, 3, edges)])["cells"][0]["layout"]
    assert sorted(node["id"] for node in layout["nodes"]) == [0, 1, 4]
    assert {node["id"]: node["layer"] for node in layout["nodes"]}[4] == 1


def test_inter_cell_sources_sorted() -> None:
    cell = make_cell(3, 2, CELL_B_EDGES, input1=("c2", "stem", "c10", "c0"))
    entry = analyze_cells([cell])["inter_cell"][0]
    assert entry["cell"] == 3
    assert entry["input0"] == "c2"
    assert entry["sources"] == ["stem", "c0", "c2", "c10"]
    assert entry["terms"][0]["pruner"] == "c3.in1.stem"


def test_analyze_rejects_unknown_operation() -> None:
    with pytest.raises(ValueError, match="unknown operation 'conv_7x7'"):
        analyze_cells([make_cell(0, 2, {(0, 2): ["conv_7x7"]})])


def test_analyze_rejects_edge_out_of_range() -> None:
    with pytest.raises(ValueError, match="invalid edge 0->5"):
        analyze_cells([make_cell(0, 2, {(0, 5): ["identity"]})])


def test_remove_dead_nodes_cascades() -> None:
    # Output 4. Node 2 has no input, so 2->3 goes, then 3 has no input and 3->4 goes.
    # Node 3 would also feed nothing else. 0->4 stays.
    cell = make_cell(0, 3, {(2, 3): ["identity"], (3, 4): ["sep_conv_3x3"], (0, 4): ["identity"]})
    kept = remove_dead_nodes(cell)
    assert [(e["source"], e["target"]) for e in kept["edges"]] == [(0, 4)]


def test_remove_dead_nodes_drops_empty_input1() -> None:
    cell = make_cell(0, 2, {(1, 3): ["identity"], (0, 3): ["identity"]}, input1=())
    kept = remove_dead_nodes(cell)
    assert [(e["source"], e["target"]) for e in kept["edges"]] == [(0, 3)]


# A hand-made event history. Cell 0 (section 0, 2 intermediate nodes 2 and 3, output 3)
# starts with identity and sep_conv_3x3 on each of its five edges. Cell 1 (section 1,
# 1 intermediate node, output 2) joins at epoch 2.
#   epoch 0: snapshot, e0_2.identity gate off
#   epoch 1: e0_2.identity deadheaded, snapshot
#   epoch 2: section 1 added; e1_2 of cell 0 and both Input-1 terms of cell 1 deadheaded
#   epoch 3 (running, no epoch_end yet): node 2 of cell 0 removed with e0_2.sep_conv_3x3
CELL0_EDGES = [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
CELL0_PRUNERS = [
    f"c0.e{s}_{t}.{op}" for s, t in CELL0_EDGES for op in ("identity", "sep_conv_3x3")
]


def structure(index: int, section: int, nodes: int, ops: list[tuple[int, int, str]], inputs):
    pruners = [
        {
            "id": f"c{index}.e{s}_{t}.{op}",
            "kind": "op",
            "source": s,
            "target": t,
            "op": op,
            "size": 100,
        }
        for s, t, op in ops
    ]
    pruners += [
        {"id": f"c{index}.in1.{src}", "kind": "input1", "source": src, "size": 10}
        for src in inputs
    ]
    return {
        "index": index,
        "type": "normal",
        "section": section,
        "channels": 8,
        "resolution": 8,
        "nodes": nodes,
        "pruners": pruners,
    }


def snapshot(seq: int, epoch: int, weights: dict[str, float]) -> dict[str, Any]:
    pruners = [[pruner, weight, int(weight > 0)] for pruner, weight in weights.items()]
    return {
        "seq": seq,
        "type": "pruner_snapshot",
        "time": 0,
        "epoch": epoch,
        "data": {"pruners": pruners},
    }


def history() -> list[dict[str, Any]]:
    cell0 = structure(
        0,
        0,
        2,
        [(s, t, op) for s, t in CELL0_EDGES for op in ("identity", "sep_conv_3x3")],
        ["stem"],
    )
    cell1 = structure(
        1,
        1,
        1,
        [(0, 2, "identity"), (0, 2, "max_pool_3x3"), (1, 2, "sep_conv_3x3")],
        ["stem", "c0"],
    )
    epoch0 = {pruner: 0.4 for pruner in CELL0_PRUNERS + ["c0.in1.stem"]}
    epoch0["c0.e0_2.identity"] = -0.1
    epoch1 = {p: w for p, w in epoch0.items() if p != "c0.e0_2.identity"}
    epoch1["c0.e0_3.identity"] = 0.3
    epoch1["c0.e1_2.sep_conv_3x3"] = 0.2
    epoch2 = {p: w for p, w in epoch1.items() if not p.startswith("c0.e1_2")}
    epoch2["c0.e0_3.identity"] = 0.25
    epoch2.update({"c1.e0_2.identity": 0.7, "c1.e0_2.max_pool_3x3": 0.6})
    epoch2["c1.e1_2.sep_conv_3x3"] = 0.5

    def event(seq: int, kind: str, epoch: int | None, **data: Any) -> dict[str, Any]:
        return {"seq": seq, "type": kind, "time": 0, "epoch": epoch, "data": data}

    events = [
        event(0, "search_started", None, config={"gate_init": 0.5}),
        event(1, "section_added", None, section=0, cells=[cell0], start_epoch=0),
        snapshot(2, 0, epoch0),
        event(3, "epoch_end", 0, section=0),
        event(
            4,
            "deadheaded",
            1,
            pruner_ids=["c0.e0_2.identity"],
            removed_nodes=[],
            reason="gate_off",
        ),
        snapshot(5, 1, epoch1),
        event(6, "epoch_end", 1, section=0),
        event(7, "section_added", 2, section=1, cells=[cell1], start_epoch=2),
        event(
            8,
            "deadheaded",
            2,
            pruner_ids=["c0.e1_2.identity", "c0.e1_2.sep_conv_3x3", "c1.in1.stem", "c1.in1.c0"],
            removed_nodes=[],
            reason="gate_off",
        ),
        snapshot(9, 2, epoch2),
        event(10, "epoch_end", 2, section=1),
        event(
            11,
            "deadheaded",
            3,
            pruner_ids=["c0.e0_2.sep_conv_3x3"],
            removed_nodes=["c0.n2"],
            reason="forced",
        ),
        event(12, "batch", 3, index=0, batches=4, loss=1.0),
    ]
    # Events may arrive out of order; the replay sorts them by seq.
    return list(reversed(events))


def op_ids(cell: dict[str, Any]) -> set[str]:
    return {op["pruner"] for edge in cell["edges"] for op in edge["ops"]}


def op_weights(cell: dict[str, Any]) -> dict[str, tuple[float, int]]:
    return {op["pruner"]: (op["weight"], op["gate"]) for e in cell["edges"] for op in e["ops"]}


def test_replay_epoch0_hyper_connected() -> None:
    graph = graph_from_events(history(), 0)
    assert graph["epoch"] == 0
    assert graph["epochs"] == [0, 1, 2]
    assert [cell["index"] for cell in graph["cells"]] == [0]
    cell = graph["cells"][0]
    assert op_ids(cell) == set(CELL0_PRUNERS)
    assert op_weights(cell)["c0.e0_2.identity"] == (-0.1, 0)
    assert op_weights(cell)["c0.e0_3.identity"] == (0.4, 1)
    assert cell["motif_counts"]["residual_edge"] == 5


def test_replay_epoch1_deadhead_gone() -> None:
    graph = graph_from_events(history(), 1)
    cell = graph["cells"][0]
    assert "c0.e0_2.identity" not in op_ids(cell)
    assert "c0.e0_2.sep_conv_3x3" in op_ids(cell)
    assert op_weights(cell)["c0.e0_3.identity"] == (0.3, 1)
    assert op_weights(cell)["c0.e1_2.sep_conv_3x3"] == (0.2, 1)
    assert graph["deadheaded_at_epoch"] == ["c0.e0_2.identity"]
    assert len(graph["cells"]) == 1


def test_replay_epoch2_new_section() -> None:
    graph = graph_from_events(history(), 2)
    cell0, cell1 = graph["cells"]
    assert {(e["source"], e["target"]) for e in cell0["edges"]} == {(0, 2), (0, 3), (1, 3), (2, 3)}
    assert op_weights(cell0)["c0.e0_3.identity"] == (0.25, 1)
    # Cell 1 lost both Input-1 terms, so Input 1 feeds nothing and 1->2 goes.
    assert cell1["input1"] == []
    assert [(e["source"], e["target"]) for e in cell1["edges"]] == [(0, 2)]
    assert op_weights(cell1)["c1.e0_2.identity"] == (0.7, 1)
    assert cell1["parameter_free"] is True
    assert graph["inter_cell"][1]["sources"] == []
    assert graph["motif_counts"]["parameter_free_cells"] == 1


def test_replay_latest_removes_node() -> None:
    graph = graph_from_events(history(), None)
    cell0 = graph["cells"][0]
    assert graph["epoch"] == 2
    assert graph["seq"] == 12
    assert {(e["source"], e["target"]) for e in cell0["edges"]} == {(0, 3), (1, 3)}
    assert sorted(node["id"] for node in cell0["layout"]["nodes"]) == [0, 1, 3]


def test_replay_past_last_epoch_is_latest() -> None:
    assert graph_from_events(history(), 9)["cells"] == graph_from_events(history(), None)["cells"]


def test_replay_weights_before_snapshot() -> None:
    events = [e for e in reversed(history()) if e["seq"] <= 1]
    cell = graph_from_events(events, None)["cells"][0]
    assert set(op_weights(cell).values()) == {(0.5, 1)}
    assert graph_from_events(events, None)["epoch"] is None


def test_replay_uses_last_snapshot_of_epoch() -> None:
    # With snapshot_every > 0 an epoch has several snapshots, and the last one counts.
    events = [e for e in reversed(history()) if e["seq"] <= 2]
    events.append(snapshot(3, 0, {"c0.e0_3.identity": -0.2}))
    events.append({"seq": 4, "type": "epoch_end", "time": 0, "epoch": 0, "data": {}})
    cell = graph_from_events(events, 0)["cells"][0]
    assert op_weights(cell)["c0.e0_3.identity"] == (-0.2, 0)
    # A pruner missing from the last snapshot falls back to gate_init.
    assert op_weights(cell)["c0.e0_2.identity"] == (0.5, 1)


def test_replay_rejects_negative_epoch() -> None:
    with pytest.raises(ValueError, match="invalid epoch -1"):
        graph_from_events(history(), -1)
