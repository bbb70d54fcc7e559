import copy
import json
import random
from pathlib import Path

import jsonschema
import pytest
import torch

import bonsai
from bonsai.genotype import GenotypeError, genotype_from_network, load_genotype
from bonsai.memory import MemoryModel
from bonsai.model import build_model, fold_search_network
from bonsai.network import SearchNetwork
from bonsai.ops import OPERATION_NAMES

SCHEMA = json.loads(
    (Path(bonsai.__file__).parent / "schemas" / "genotype.schema.json").read_text()
)


@pytest.fixture(scope="module")
def pruned_network() -> SearchNetwork:
    torch.manual_seed(0)
    net = SearchNetwork(1, 8, 10, 4, 4, 2, OPERATION_NAMES, 0.05, 1e5)
    for types in [("normal", "normal"), ("reduction",), ("normal",)]:
        net.add_section(types)
    memory = MemoryModel(8)
    rng = random.Random(0)
    for cell in net.cells:
        memory.assign_sizes(cell)
        cell.remove_pruners(rng.sample(cell.pruner_ids, len(cell.pruner_ids) // 2))
    return net


@pytest.fixture()
def genotype(pruned_network) -> dict:
    return copy.deepcopy(genotype_from_network(pruned_network).data)


def test_export_matches_schema(genotype) -> None:
    jsonschema.validate(genotype, SCHEMA)


def test_export_has_only_surviving_operations(genotype, pruned_network) -> None:
    for cell, module in zip(genotype["cells"], pruned_network.cells, strict=True):
        exported = {op["pruner"] for edge in cell["edges"] for op in edge["ops"]}
        exported |= {term["pruner"] for term in cell["input1"]}
        assert exported == set(module.pruner_ids)
        for edge in cell["edges"]:
            assert edge["ops"]
            assert all(op["op"] not in ("none", "zero") for op in edge["ops"])


def test_export_round_trips_through_json(genotype) -> None:
    assert load_genotype(json.dumps(genotype)).data == genotype


def test_discovered_parameters_equal_pruned_search(pruned_network) -> None:
    model = build_model(genotype_from_network(pruned_network))
    assert model.count_parameters() == pruned_network.count_parameters()
    for search_cell, cell in zip(pruned_network.cells, model.cells, strict=True):
        search_params = sum(p.numel() for p in search_cell.parameters())
        assert (
            sum(p.numel() for p in cell.parameters())
            == search_params - search_cell.weights.numel()
        )


def test_folded_model_computes_search_output(pruned_network) -> None:
    genotype = genotype_from_network(pruned_network)
    model = fold_search_network(pruned_network, genotype)
    pruned_network.eval()
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = pruned_network(x)
        actual = model(x)
    for a, b in zip(actual, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def break_first_edge(genotype: dict, **changes) -> dict:
    edge = next(e for c in genotype["cells"] for e in c["edges"])
    edge.update(changes)
    return genotype


@pytest.mark.parametrize(
    "mutate,field,message",
    [
        (
            lambda g: g["cells"][0]["edges"][0]["ops"][0].update(op="zero"),
            "$.cells[0].edges[0].ops[0].op",
            "unknown operation",
        ),
        (
            lambda g: break_first_edge(g, source=3, target=3),
            "$.cells[0].edges[0].source",
            "backward or self edge",
        ),
        (
            lambda g: break_first_edge(g, source=3, target=2),
            "$.cells[0].edges[0].source",
            "backward or self edge",
        ),
        (lambda g: break_first_edge(g, source=-1), "$.cells[0].edges[0].source", "outside"),
        (lambda g: break_first_edge(g, target=99), "$.cells[0].edges[0].target", "outside"),
        (lambda g: g["cells"][0].update(channels=10**9), "$.cells[0].channels", "outside"),
        (lambda g: g["input"].update(image_size=-8), "$.input.image_size", "outside"),
        (lambda g: g["cells"][1].update(index=5), "$.cells[1].index", "in order"),
        (
            lambda g: g["cells"][0]["input1"].append({"source": "c4", "pruner": "c0.in1.c4"}),
            "$.cells[0].input1",
            "earlier cell",
        ),
        (lambda g: g.update(version=2), "$.version", "unsupported version"),
        (lambda g: g.update(format="darts"), "$.format", "expected"),
        (lambda g: g["cells"][0].pop("edges"), "$.cells[0].edges", "missing"),
        (lambda g: g["cells"][0].update(nodes="4"), "$.cells[0].nodes", "expected int"),
    ],
)
def test_invalid_genotype_names_field(genotype, mutate, field, message) -> None:
    mutate(genotype)
    with pytest.raises(GenotypeError, match=message) as raised:
        load_genotype(genotype)
    assert raised.value.field.startswith(field)


def test_deep_nesting_rejected(genotype) -> None:
    nested: dict = {}
    cursor = nested
    for _ in range(20):
        cursor["x"] = {}
        cursor = cursor["x"]
    genotype["search"] = nested
    with pytest.raises(GenotypeError, match="nested deeper"):
        load_genotype(genotype)


def test_invalid_json_rejected(tmp_path: Path) -> None:
    path = tmp_path / "genotype.json"
    path.write_text("{not json")
    with pytest.raises(GenotypeError, match="invalid JSON"):
        load_genotype(path)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(GenotypeError, match="not found"):
        load_genotype(tmp_path / "absent.json")
