import pytest

import bonsai
from bonsai.config import ConfigError, SearchConfig, config_fields, parse_sections, parse_size


@pytest.mark.parametrize(
    "text,size",
    [
        ("512MiB", 512 * 1024**2),
        ("8GiB", 8 * 1024**3),
        ("1.5 GiB", int(1.5 * 1024**3)),
        ("2048", 2048),
        (4096, 4096),
        ("3gb", 3 * 10**9),
    ],
)
def test_parse_size(text, size) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5MiB", "12 parsecs", "0", "100"])
def test_parse_size_rejects(text) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_size(text)
    assert raised.value.field == "budget"


def test_sections_parse() -> None:
    assert parse_sections("NN,R,N") == (("normal", "normal"), ("reduction",), ("normal",))


@pytest.mark.parametrize(
    "values,field",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": "many"}, "epochs"),
        ({"channels": 1.5}, "channels"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"sections": "NX,R"}, "sections"),
        ({"budget": "huge"}, "budget"),
        ({"device": "tpu"}, "device"),
        ({"ops": ["identity", "conv_7x7"]}, "ops"),
        ({"baseline": 2}, "reference"),
        ({"reference": "/tmp/x"}, "baseline"),
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"preset": "imagenet"}, "preset"),
        ({"lr": float("nan")}, "lr"),
        ({"epochs": 2, "sections": "N,R,N"}, "epochs"),
        ({"batch_size": True}, "batch_size"),
    ],
)
def test_invalid_config_names_field(values, field) -> None:
    with pytest.raises(ConfigError) as raised:
        SearchConfig.from_dict(values)
    assert raised.value.field == field


def test_config_round_trips() -> None:
    config = bonsai.make_config("digits", budget="64MiB", ops="identity,sep_conv_3x3")
    again = SearchConfig.from_dict(config.to_dict())
    assert again == config
    assert config.budget == 64 * 1024**2
    assert config.ops == ("identity", "sep_conv_3x3")


def test_cifar10_preset_is_paper_setup() -> None:
    config = bonsai.make_config("cifar10")
    assert (config.channels, config.nodes, config.batch_size, config.epochs) == (36, 4, 64, 600)
    cells = [t for section in config.section_types for t in section]
    assert len(cells) == 8
    assert [i for i, t in enumerate(cells) if t == "reduction"] == [2, 5]
    assert config.lr == 0.01
    assert config.drop_path == 0.3
    assert config.cutout == 16
    assert config.resolved_lambda_period == pytest.approx(16)
    assert config.resolved_deadhead_window == pytest.approx(4)


def test_schedule_defaults_scale_with_epochs() -> None:
    short = bonsai.make_config("digits", epochs=8)
    long = bonsai.make_config("digits", epochs=300)
    assert short.resolved_lambda_period < long.resolved_lambda_period
    assert long.resolved_lambda_period == pytest.approx(8)
    assert short.resolved_deadhead_window < long.resolved_deadhead_window


def test_config_fields_cover_every_field() -> None:
    names = {row["name"] for row in config_fields()}
    assert {
        "name",
        "dataset",
        "epochs",
        "budget",
        "channels",
        "nodes",
        "sections",
        "batch_size",
        "seed",
        "baseline",
        "reference",
        "device",
    } <= names
    assert all(row["help"] for row in config_fields())


def test_dataset_selects_its_preset() -> None:
    config = SearchConfig.from_dict({"dataset": "fashion-mnist"})
    assert config.preset == "fashion-mnist"
    assert config.channels == bonsai.PRESETS["fashion-mnist"]["channels"]
    assert SearchConfig.from_dict({"dataset": "svhn"}).preset == "digits"


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e400, 2.5])
def test_non_integer_number_rejected(value) -> None:
    with pytest.raises(ConfigError) as raised:
        SearchConfig.from_dict({"epochs": value})
    assert raised.value.field == "epochs"


def test_every_invalid_field_listed() -> None:
    with pytest.raises(ConfigError) as raised:
        SearchConfig.from_dict({"epochs": -3, "budget": "lots", "nodes": 0})
    assert [field for field, _ in raised.value.errors] == ["epochs", "budget", "nodes"]
    assert raised.value.field == "epochs"
