"""The spec contract: exact parameter counts (the report's tables) and refusals by field path."""

from __future__ import annotations

import pytest
import torch

from ml.networks import build_network
from ml.spec import EXAMPLE_SPEC, SpecInvalid, param_count, validate_spec

# Table 1 of the report: (hidden layers, neurons) -> parameters; 129 where it misprints 128.
TABLE1 = [(1, 10, 41), (1, 32, 129), (1, 512, 2049), (1, 2048, 8193), (2, 16, 337), (2, 32, 1185),
          (2, 64, 4417), (3, 4, 57), (3, 8, 177), (3, 16, 609)]  # fmt: skip
# Table 2: (conv layers, kernel size, loss) -> parameters, on 16x16 digits, 8 filters, no dense hidden layer.
TABLE2 = [(0, 0, "mse", 2570), (0, 0, "ce", 2570), (1, 5, "ce", 11738), (2, 5, "ce", 6946), (5, 3, "ce", 5306)]


@pytest.mark.parametrize(("hidden", "neurons", "expected"), TABLE1)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_table1_parameter_counts(hidden: int, neurons: int, expected: int, loss: str) -> None:
    spec = {"dataset": {"name": "spirals"}, "loss": loss, "model": {"hidden_layers": hidden, "neurons": neurons}}
    checked = validate_spec(spec)
    assert checked.param_count == expected
    assert sum(p.numel() for p in build_network(checked.plan).parameters()) == expected


@pytest.mark.parametrize(("convs", "kernel", "loss", "expected"), TABLE2)
def test_table2_parameter_counts(convs: int, kernel: int, loss: str, expected: int) -> None:
    model = {"type": "cnn", "conv_layers": convs, "filters": 8, "kernel_size": kernel, "hidden_layers": 0}
    if convs == 0:
        model = {"type": "mlp", "hidden_layers": 0}
    checked = validate_spec({"dataset": {"name": "digits"}, "loss": loss, "model": model})
    assert checked.param_count == expected
    network = build_network(checked.plan)
    assert sum(p.numel() for p in network.parameters()) == expected
    assert network(torch.zeros(2, 1, 16, 16))["digit"].shape == (2, 10)


def test_two_target_and_gaussian_counts_match_the_built_network() -> None:
    two = validate_spec({
        "dataset": {"name": "colored_digits"},
        "model": {"type": "cnn", "conv_layers": 5, "hidden_layers": 0,
                  "heads": {"color": {"conv_layers": 1, "filters": 5, "kernel_size": 16, "hidden_layers": 0}}},
    })  # fmt: skip
    # color head: 5 filters of 3x16x16 + 5 biases, then 5 -> 5 colors; digit head: model4 on 3 channels.
    assert two.plan.heads["color"].params == 5 * 3 * 256 + 5 + 5 * 5 + 5
    assert two.plan.heads["digit"].params == 5306 + 2 * 8 * 9  # the first kernels have depth 3
    gauss = validate_spec({"dataset": {"name": "house_prices"}, "loss": "gaussian_nll",
                           "model": {"hidden_layers": 3, "neurons": 8, "sigma": {"neurons": 20}}})  # fmt: skip
    f = 10
    mu = 8 * f + 8 + 2 * (8 * 8 + 8) + 9
    sigma = 20 * f + 20 + 2 * (20 * 20 + 20) + 21
    assert gauss.param_count == mu + sigma
    for checked in (two, gauss):
        assert sum(p.numel() for p in build_network(checked.plan).parameters()) == checked.param_count


def test_normalized_spec_fills_defaults_and_validates_again() -> None:
    checked = validate_spec({"dataset": {"name": "digits"}})
    dumped = checked.spec.model_dump(mode="json")
    assert dumped["loss"] == "ce"
    assert dumped["dataset"]["params"] == {"n_samples": 5000}
    assert validate_spec(dumped).spec == checked.spec
    assert param_count(EXAMPLE_SPEC) == 177


COLOR_HEAD = {"conv_layers": 1, "filters": 5, "kernel_size": 16, "hidden_layers": 0}
SHARED_TOO_FAR = {
    "type": "cnn",
    "conv_layers": 5,
    "hidden_layers": 0,
    "shared_layers": 1,
    "heads": {"color": COLOR_HEAD},
}
REFUSALS = [
    ({"dataset": {"name": "spirals"}, "loss": "gaussian_nll"}, ["loss"], "regression"),
    ({"dataset": {"name": "house_prices"}, "loss": "ce"}, ["loss"], "mse or gaussian_nll"),
    ({"dataset": {"name": "digits"}, "loss": "bce"}, ["loss"], "10 classes"),
    (
        {"dataset": {"name": "digits"}, "model": {"type": "cnn", "kernel_size": 17}},
        ["model", "kernel_size"],
        "at most 16",
    ),
    (
        {"dataset": {"name": "colored_digits"}, "model": SHARED_TOO_FAR},
        ["model", "heads", "color", "kernel_size"],
        "14x14",
    ),
    (
        {"dataset": {"name": "colored_digits"}, "model": {"heads": {"shape": {}}}},
        ["model", "heads", "shape"],
        "targets: digit, color",
    ),
    ({"dataset": {"name": "spirals"}, "model": {"heads": {"label": {}}}}, ["model", "heads"], "several targets"),
    ({"dataset": {"name": "spirals"}, "model": {"type": "cnn"}}, ["model", "type"], "image input"),
    ({"dataset": {"name": "spirals"}, "model": {"sigma": {"neurons": 3}}}, ["model", "sigma"], "gaussian_nll"),
    ({"dataset": {"name": "spirals"}, "model": {"kernel_size": 5}}, ["model"], "cnn"),
    ({"dataset": {"name": "spirals", "params": {"n_samples": 5}}}, ["dataset", "params", "n_samples"], "20"),
    ({"dataset": {"name": "spirals", "params": {"colour": 1}}}, ["dataset", "params", "colour"], "Extra"),
    ({"dataset": {"name": "nope"}}, ["dataset", "name"], "built-ins are"),
    ({"dataset": {"id": "abc"}}, ["dataset", "id"], "no uploaded dataset"),
    ({"dataset": {"name": "spirals", "split": {"val": 0.5, "test": 0.45}}}, ["dataset", "split"], "0.9"),
    ({"dataset": {"name": "spirals"}, "optimizer": {"name": "adam", "momentum": 0.9}}, ["optimizer"], "betas"),
    ({"dataset": {"name": "spirals"}, "batch_size": 0}, ["batch_size"], "integer from 1"),
    ({"dataset": {"name": "spirals"}, "batch_size": "half"}, ["batch_size"], "or 'full'"),
    ({"dataset": {"name": "spirals"}, "epochs": 0}, ["epochs"], "greater than"),
    ({"dataset": {"name": "spirals"}, "learning_rate": 0.1}, ["learning_rate"], "Extra inputs"),
    ({"dataset": {"name": "spirals"}, "model": {"activation": "swish"}}, ["model", "activation"], "relu"),
    ({"dataset": {"name": "spirals"}, "model": {"hidden_layers": 3, "neurons": 4000}}, ["model"], "limit of 1,000,000"),
]


@pytest.mark.parametrize(("spec", "loc", "text"), REFUSALS)
def test_invalid_specs_are_refused_at_their_field(spec: dict, loc: list, text: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        validate_spec(spec, max_params=1_000_000)
    assert any(e["loc"] == loc and text in e["msg"] for e in caught.value.errors), caught.value.errors


def test_a_kernel_that_fits_after_the_shared_layer_is_accepted() -> None:
    model = {**SHARED_TOO_FAR, "heads": {"color": {"conv_layers": 1, "filters": 5, "kernel_size": 14}}}
    checked = validate_spec({"dataset": {"name": "colored_digits"}, "model": model})
    assert checked.plan.trunk.output_shape == (8, 14, 14)
