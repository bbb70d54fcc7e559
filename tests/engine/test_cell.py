import pytest
import torch

from bonsai.cell import CellInput, SearchCell
from bonsai.network import SearchNetwork
from bonsai.ops import OPERATION_NAMES, OPERATIONS, create_operation
from bonsai.pruner import input1_pruner_id, op_pruner_id

M = 1e5


def make_cell(ops=OPERATION_NAMES, nodes=3, sources=("stem", "c0"), channels=4) -> SearchCell:
    inputs = [CellInput(name, channels, 8) for name in sources]
    return SearchCell(
        index=len(sources) - 1,
        cell_type="normal",
        section=0,
        nodes=nodes,
        channels=channels,
        resolution=8,
        input0=inputs[-1],
        input1_sources=inputs,
        ops=ops,
        gate_init=0.05,
        pruner_m=M,
    )


@pytest.mark.parametrize("op", OPERATION_NAMES)
def test_operation_keeps_shape(op: str) -> None:
    x = torch.randn(2, 6, 8, 8)
    spec = OPERATIONS[op]
    y = create_operation(op, 6)(torch.relu(x)) if spec.parametric else spec.apply(x)
    assert y.shape == x.shape


def test_every_node_fed_by_every_earlier_node() -> None:
    cell = make_cell(nodes=4)
    for target in range(2, 6):
        for source in range(target):
            assert cell.edges[(source, target)] == list(OPERATION_NAMES)


def test_every_operation_has_own_pruner() -> None:
    cell = make_cell(nodes=2)
    op_ids = [p for p in cell.pruner_ids if ".e" in p]
    # Edges 0->2, 1->2, 0->3, 1->3, 2->3, each with all seven operations.
    assert len(op_ids) == 5 * len(OPERATION_NAMES)
    assert len(set(cell.pruner_ids)) == len(cell.pruner_ids)
    assert cell.weights.shape == (len(cell.pruner_ids),)


def test_input1_sums_stem_and_earlier_cells() -> None:
    cell = make_cell(sources=("stem", "c0", "c1", "c2"))
    assert cell.input1 == ["stem", "c0", "c1", "c2"]
    assert input1_pruner_id(3, "c1") in cell.pruner_ids


def test_ops_config_narrows_edges() -> None:
    cell = make_cell(ops=("identity", "sep_conv_3x3"))
    assert all(ops == ["identity", "sep_conv_3x3"] for ops in cell.edges.values())
    assert all("sep_conv_3x3" in key for key in cell.convs)


def test_network_cells_are_distinct() -> None:
    net = SearchNetwork(1, 8, 10, 4, 4, 2, OPERATION_NAMES, 0.05, M)
    net.add_section(("normal", "normal"))
    first, second = net.cells
    assert first.convs is not second.convs
    assert first.weights is not second.weights
    key = "e0_2_sep_conv_3x3"
    assert (
        first.convs[key].state_dict()["0.weight"].data_ptr()
        != second.convs[key].state_dict()["0.weight"].data_ptr()
    )


def test_reduction_cell_halves_and_doubles() -> None:
    net = SearchNetwork(1, 8, 10, 4, 4, 2, OPERATION_NAMES, 0.05, M)
    net.add_section(("normal",))
    (reduction,) = net.add_section(("reduction",))
    assert (reduction.channels, reduction.resolution) == (8, 4)
    outputs = net(torch.randn(3, 1, 8, 8))
    assert [o.shape for o in outputs] == [(3, 10), (3, 10)]


def keep_identity_paths(cell: SearchCell, paths: list[tuple[int, int]]) -> None:
    keep = [op_pruner_id(cell.index, s, t, "identity") for s, t in paths]
    keep += [input1_pruner_id(cell.index, name) for name in cell.input1]
    cell.keep_only(keep)


def test_hyper_connected_identity_cell_sums() -> None:
    # Pruning off: every identity edge is open. With 2 nodes, node 2 = x0 + x1 and
    # the output node 3 = x0 + x1 + node 2 = 2 (x0 + x1).
    cell = make_cell(ops=("identity",), nodes=2)
    x0 = torch.full((1, 4, 8, 8), 2.0, dtype=torch.float64)
    x1 = torch.full((1, 4, 8, 8), 3.0, dtype=torch.float64)
    cell.double()
    out = cell.forward_nodes(x0, x1)
    assert torch.allclose(out, torch.full_like(out, 10.0), rtol=1.0 / M, atol=0)


def test_pruned_identity_cell_sums_inputs() -> None:
    # Pruning on: only Input 0 -> out and Input 1 -> out remain open.
    cell = make_cell(nodes=3)
    keep_identity_paths(cell, [(0, 4), (1, 4)])
    cell.double()
    x0 = torch.full((2, 4, 8, 8), 2.0, dtype=torch.float64)
    x1 = torch.full((2, 4, 8, 8), -7.5, dtype=torch.float64)
    out = cell.forward_nodes(x0, x1)
    assert sorted(cell.edges) == [(0, 4), (1, 4)]
    assert torch.allclose(out, x0 + x1, rtol=1.0 / M, atol=0)


def test_pruned_identity_path_through_node() -> None:
    cell = make_cell(nodes=2)
    keep_identity_paths(cell, [(0, 2), (1, 2), (2, 3)])
    cell.double()
    x0 = torch.full((1, 4, 8, 8), 1.5, dtype=torch.float64)
    x1 = torch.full((1, 4, 8, 8), 4.0, dtype=torch.float64)
    out = cell.forward_nodes(x0, x1)
    assert torch.allclose(out, x0 + x1, rtol=2.0 / M, atol=0)


def test_last_path_never_removed() -> None:
    cell = make_cell(nodes=2)
    everything = list(cell.pruner_ids)
    removed, _, _ = cell.remove_pruners(everything)
    assert len(removed) < len(everything)
    assert cell._reaches_output(cell.edges, cell.input1)
    out = cell(
        torch.randn(2, 4, 8, 8), {"stem": torch.randn(2, 4, 8, 8), "c0": torch.randn(2, 4, 8, 8)}
    )
    assert out.shape == (2, 4, 8, 8)


def test_removal_deletes_module_and_pruner() -> None:
    cell = make_cell(nodes=2)
    target = op_pruner_id(cell.index, 0, 2, "sep_conv_5x5")
    params_before = sum(p.numel() for p in cell.parameters())
    removed, _, keep = cell.remove_pruners([target])
    assert removed == [target]
    assert "e0_2_sep_conv_5x5" not in cell.convs
    assert target not in cell.pruner_ids
    assert "sep_conv_5x5" not in cell.edges[(0, 2)]
    assert len(keep) == len(cell.pruner_ids)
    assert sum(p.numel() for p in cell.parameters()) < params_before


def test_node_without_inputs_removed_with_uses() -> None:
    cell = make_cell(nodes=2)
    into_node2 = [p for p in cell.pruner_ids if p.split(".")[1] in ("e0_2", "e1_2")]
    removed, nodes, _ = cell.remove_pruners(into_node2)
    assert nodes == [f"c{cell.index}.n2"]
    assert (2, 3) not in cell.edges
    assert op_pruner_id(cell.index, 2, 3, "identity") in removed
    assert not any(p.split(".")[1] == "e2_3" for p in cell.pruner_ids)


def test_input1_without_sources_removed_with_uses() -> None:
    cell = make_cell(nodes=2)
    removed, nodes, _ = cell.remove_pruners([input1_pruner_id(cell.index, n) for n in cell.input1])
    assert cell.input1 == []
    assert f"c{cell.index}.n1" in nodes
    assert not any(source == 1 for source, _ in cell.edges)
    assert len(cell.adapters1) == 0
    assert len(removed) == 2 + 2 * len(OPERATION_NAMES)


def test_drop_path_noop_in_eval() -> None:
    torch.manual_seed(0)
    cell = make_cell(nodes=2)
    cell.drop_path_probability = 0.5
    cell.eval()
    x = torch.randn(4, 4, 8, 8)
    sources = {"stem": torch.randn(4, 4, 8, 8), "c0": x}
    first = cell(x, sources)
    second = cell(x, sources)
    assert torch.equal(first, second)


def test_drop_path_active_in_training() -> None:
    torch.manual_seed(0)
    cell = make_cell(nodes=2)
    cell.drop_path_probability = 0.5
    cell.train()
    x = torch.randn(4, 4, 8, 8)
    sources = {"stem": torch.randn(4, 4, 8, 8), "c0": x}
    assert not torch.equal(cell(x, sources), cell(x, sources))


def test_compression_formula() -> None:
    cell = make_cell(nodes=2)
    sizes = torch.arange(1, len(cell.pruner_ids) + 1, dtype=torch.float64)
    cell.sizes = sizes.clone()
    cell.initial_size = float(sizes.sum())
    with torch.no_grad():
        cell.weights[::2] = -0.5
    gates = cell.gates().detach().double()
    expected = float((sizes * gates).sum() / sizes.sum())
    # The cell computes in float32, like its weights.
    assert float(cell.compression().detach()) == pytest.approx(expected, rel=1e-6)
    assert float(cell.compression().detach()) == pytest.approx(
        float(sizes[1::2].sum() / sizes.sum()), abs=1e-4
    )
