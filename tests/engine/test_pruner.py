import pytest
import torch

from bonsai.pruner import gate_values, input1_pruner_id, op_pruner_id, parse_pruner_id, step_gate

M = 1e5


@pytest.mark.parametrize("w", [1e-3, 0.05, 0.7, 3.0])
def test_gate_positive_weight_is_one(w: float) -> None:
    value = float(gate_values(torch.tensor(w, dtype=torch.float64), M))
    assert 1.0 <= value < 1.0 + 1.0 / M


@pytest.mark.parametrize("w", [-3.0, -0.7, -0.05, -1e-3, 0.0])
def test_gate_nonpositive_weight_is_zero(w: float) -> None:
    value = float(gate_values(torch.tensor(w, dtype=torch.float64), M))
    assert 0.0 <= value < 1.0 / M


def test_gate_saw_matches_formula() -> None:
    w = torch.tensor([0.123456789, -0.987654321], dtype=torch.float64)
    expected_saw = (M * w - torch.floor(M * w)) / M
    assert torch.allclose(gate_values(w, M) - step_gate(w), expected_saw)


@pytest.mark.parametrize("w", [0.3, -0.3])
def test_pruned_output_gradient_is_input(w: float) -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    weight = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    (gate_values(weight, M) * x).sum().backward()
    # d(sum((G + S) x)) / dw = sum(x), because dG/dw = 0 and dS/dw = 1.
    assert weight.grad is not None
    assert torch.allclose(weight.grad, x.sum())


def test_output_gradient_elementwise_is_input() -> None:
    x = torch.randn(5, dtype=torch.float64)
    weight = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(lambda w: gate_values(w, M) * x, weight)
    assert torch.allclose(jacobian, x)


def test_pruner_ids_round_trip() -> None:
    parsed = parse_pruner_id(op_pruner_id(3, 0, 4, "sep_conv_3x3"))
    assert (parsed.cell, parsed.kind, parsed.source, parsed.target, parsed.op) == (
        3,
        "op",
        0,
        4,
        "sep_conv_3x3",
    )
    parsed = parse_pruner_id(input1_pruner_id(5, "c2"))
    assert (parsed.cell, parsed.kind, parsed.source) == (5, "input1", "c2")


@pytest.mark.parametrize(
    "bad", ["", "c1", "c1.e0_2", "c1.in1.c", "x1.e0_2.identity", "c1.e-1_2.identity"]
)
def test_invalid_pruner_id_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid pruner id"):
        parse_pruner_id(bad)
