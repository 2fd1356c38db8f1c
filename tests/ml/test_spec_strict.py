"""Strict types and the rules a lax spec used to slip past: no bool or string taken for a number,
widths xor hidden_layers × neurons, a batch no larger than the training split, names without
control characters; and a normalized spec always validates again."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ml.spec import EXAMPLE_SPEC, SpecInvalid, validate_spec


def spec_with(**changes: Any) -> dict[str, Any]:
    """EXAMPLE_SPEC with dotted-path changes (`model.neurons=8`)."""
    spec = copy.deepcopy(EXAMPLE_SPEC)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return spec


def refused(spec: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(SpecInvalid) as info:
        validate_spec(spec)
    return info.value.errors[0]


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"epochs": True}, ["epochs"]),
        ({"epochs": "10"}, ["epochs"]),
        ({"epochs": 10.0}, ["epochs"]),
        ({"seed": False}, ["seed"]),
        ({"optimizer__lr": "0.1"}, ["optimizer", "lr"]),
        ({"optimizer__lr": True}, ["optimizer", "lr"]),
        ({"optimizer__lr": float("nan")}, ["optimizer", "lr"]),
        ({"optimizer__lr": float("inf")}, ["optimizer", "lr"]),
        ({"model__neurons": "8"}, ["model", "neurons"]),
        ({"model": {"widths": [8, True]}}, ["model", "widths", 1]),
        ({"dataset__split__val": "0.2"}, ["dataset", "split", "val"]),
        ({"dataset__params__n_samples": "2000"}, ["dataset", "params", "n_samples"]),
        ({"dataset__params__noise": True}, ["dataset", "params", "noise"]),
        ({"batch_size": True}, ["batch_size"]),
        ({"batch_size": "128"}, ["batch_size"]),
    ],
)
def test_no_bool_or_string_becomes_a_number(changes: dict[str, Any], loc: list[Any]) -> None:
    assert refused(spec_with(**changes))["loc"] == loc


def test_an_integer_is_still_a_float() -> None:
    checked = validate_spec(spec_with(optimizer__lr=1, dataset__params__noise=0, dataset__split__test=0))
    assert checked.spec.optimizer.lr == 1.0
    assert isinstance(checked.spec.optimizer.lr, float)


@pytest.mark.parametrize(
    "model",
    [
        {"widths": [8, 4], "neurons": 8},
        {"widths": [8, 4], "hidden_layers": 2},
        {"widths": [8], "hidden_layers": 3, "neurons": 32},
    ],
)
def test_widths_with_neurons_or_hidden_layers_is_refused(model: dict[str, Any]) -> None:
    error = refused(spec_with(model=model))
    assert error["loc"] == ["model"]
    assert "widths" in error["msg"]
    assert "not both" in error["msg"]


def test_widths_with_an_override_neurons_is_refused() -> None:
    spec = spec_with(loss="gaussian_nll", dataset={"name": "house_prices"}, batch_size=64)
    spec["model"] = {"hidden_layers": 1, "neurons": 8, "sigma": {"widths": [4], "neurons": 8}}
    error = refused(spec)
    assert error["loc"] == ["model", "sigma"]
    assert "not both" in error["msg"]


def test_widths_alone_and_its_normalized_spec_validate() -> None:
    checked = validate_spec(spec_with(model={"type": "mlp", "widths": [8, 4], "activation": "tanh"}))
    again = validate_spec(checked.spec.model_dump(mode="json"))
    assert again.param_count == checked.param_count
    assert again.spec.model.dense_widths == [8, 4]
    # the defaults written out beside widths (what a normalized spec lists) are accepted
    assert validate_spec(spec_with(model={"widths": [8, 4], "hidden_layers": 1, "neurons": 16})).param_count


def test_every_normalized_spec_validates_again() -> None:
    for spec in [
        EXAMPLE_SPEC,
        spec_with(
            model={"type": "cnn", "conv_layers": 2, "filters": 4, "widths": [16]}, dataset={"name": "digits"}, loss="ce"
        ),
        spec_with(loss="gaussian_nll", dataset={"name": "house_prices"}, model={"sigma": {"widths": [4]}}),
    ]:
        normalized = validate_spec(spec).spec.model_dump(mode="json")
        assert validate_spec(normalized).spec.model_dump(mode="json") == normalized


def test_batch_size_above_the_training_split_names_it_with_the_split_size() -> None:
    # spirals, 2000 points, val 0.2 and test 0.2: 1,200 train
    error = refused(spec_with(batch_size=1201))
    assert error["loc"] == ["batch_size"]
    assert "1,200" in error["msg"]
    assert error["type"] == "batch_size_too_large"
    assert validate_spec(spec_with(batch_size=1200)).spec.batch_size == 1200
    assert validate_spec(spec_with(batch_size="full")).spec.batch_size == "full"


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "line\nbreak", "bell\x07", "del\x7f", "c1\x85"])
def test_control_characters_in_names_are_refused(name: str) -> None:
    error = refused(spec_with(name=name))
    assert error["loc"] == ["name"]
    assert "control characters" in error["msg"]


def test_printable_unicode_names_are_accepted() -> None:
    assert validate_spec(spec_with(name="modèle 22 — σ/μ | ✓")).spec.name == "modèle 22 — σ/μ | ✓"


def test_a_long_value_is_quoted_as_an_excerpt() -> None:
    error = refused(spec_with(batch_size="x" * 100_000))
    assert len(error["msg"]) < 400
