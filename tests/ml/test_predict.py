"""Prediction from a stored artifact: the network's own outputs, in original units, and clear
refusals of inputs that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.artifact import read_artifact
from ml.data import load_dataset, split_of
from ml.predict import InputError, load_predictor
from ml.spec import validate_spec
from ml.train import train


@pytest.fixture(scope="module")
def spirals_model() -> bytes:
    spec = {"dataset": {"name": "spirals", "params": {"n_samples": 300}}, "model": {"hidden_layers": 2, "neurons": 8},
            "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 5}  # fmt: skip
    return train(spec).artifact


def test_the_artifact_is_tensors_and_json_only(spirals_model: bytes) -> None:
    artifact = read_artifact(spirals_model)
    assert artifact.spec["loss"] == "bce"
    assert artifact.info.features == ("x1", "x2")
    assert set(artifact.norm) == {"norm.x_mean", "norm.x_std"}
    with pytest.raises(ValueError, match="not a labtrain artifact"):
        read_artifact(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")


def test_binary_predictions_are_the_networks_own_output(spirals_model: bytes) -> None:
    predictor = load_predictor(spirals_model)
    rows = [[0.5, -0.25], [-1.0, 2.0]]
    out = predictor.predict(rows + [{"x2": -0.25, "x1": 0.5}])
    x = (torch.tensor(rows) - torch.from_numpy(predictor.norm.x_mean)) / torch.from_numpy(predictor.norm.x_std)
    with torch.no_grad():
        p1 = torch.sigmoid(predictor.network(x)["label"]).reshape(-1)
    for i in range(2):
        assert out[i]["probabilities"] == pytest.approx([1 - float(p1[i]), float(p1[i])], rel=1e-6)
        assert out[i]["label"] == int(p1[i] > 0.5)
    assert out[2] == out[0]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "non-empty"),
        ([[1.0]], "row 0: expected 2 numbers, got 1"),
        ([[1.0, 2.0], [1.0, "a"]], "row 1: 'a' is not a number"),
        ([[1.0, True]], "True is not a number"),
        ([[1.0, float("nan")]], "row 0: contains a value that is not a finite number"),
        ([{"x1": 1.0}], "row 0: missing feature 'x2'"),
        ([{"x1": 1.0, "x2": 2.0, "x3": 0}], "unknown feature 'x3'; the features are x1, x2"),
        ([[[1.0, 2.0]]], "row 0: expected 2 numbers, got 1x2"),
        ([[1.0, 2.0]] * 11, "11 rows is more than the limit of 10"),
    ],
)
def test_inputs_that_do_not_fit_are_refused_with_the_row(spirals_model: bytes, inputs: list, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_predictor(spirals_model).predict(inputs, max_rows=10)


def test_regression_predictions_are_in_usd_and_match_the_reported_rmse() -> None:
    spec = {"dataset": {"name": "house_prices"}, "model": {"hidden_layers": 2, "neurons": 8},
            "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 64, "epochs": 30,
            "keep": "last"}  # fmt: skip
    result = train(spec)
    predictor = load_predictor(result.artifact)
    checked = validate_spec(spec)
    dataset = load_dataset(checked.spec)
    val = split_of(checked.spec, dataset)["val"]
    values = np.array([p["value"] for p in predictor.predict(dataset.x[val].tolist())])
    truth = dataset.y["Sale_Price"][val]
    assert 100_000 < np.median(values) < 300_000
    rmse = float(np.sqrt(np.mean((values - truth) ** 2)))
    assert rmse < 60_000
    assert result.served["val_rmse"] == pytest.approx(rmse, rel=1e-3)  # the kept weights' epoch


def test_images_accept_hw_or_chw_and_two_targets_answer_per_target() -> None:
    spec = {"dataset": {"name": "colored_digits", "params": {"n_samples": 200}},
            "model": {"type": "cnn", "conv_layers": 1, "filters": 2, "kernel_size": 5, "hidden_layers": 0},
            "epochs": 1}  # fmt: skip
    predictor = load_predictor(train(spec).artifact)
    image = np.random.default_rng(0).uniform(size=(3, 16, 16)).tolist()
    (out,) = predictor.predict([image])
    assert set(out) == {"digit", "color"}
    assert out["color"]["label"] in ("red", "green", "blue", "yellow", "magenta")
    assert len(out["digit"]["probabilities"]) == 10
    assert sum(out["digit"]["probabilities"]) == pytest.approx(1.0)
    with pytest.raises(InputError, match=r"expected 3x16x16, got 16x16"):
        predictor.predict([image[0]])
    gray = load_predictor(train({**spec, "dataset": {"name": "digits", "params": {"n_samples": 200}}}).artifact)
    assert gray.predict([image[0]]) == gray.predict([[image[0]]])


def test_evaluation_on_a_split_matches_the_validation_metrics_and_reports_coverage() -> None:
    from ml.evaluate import evaluate

    spec = {"dataset": {"name": "house_prices"}, "loss": "gaussian_nll", "model": {"hidden_layers": 2, "neurons": 8},
            "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 64, "epochs": 15,
            "keep": "last"}  # fmt: skip
    result = train(spec)
    predictor = load_predictor(result.artifact)
    dataset = load_dataset(validate_spec(spec).spec)
    val = evaluate(predictor, dataset, "val")
    last = result.history[-1].metrics
    assert val["rmse"] == pytest.approx(last["val_rmse"], rel=1e-4)
    assert val["nll"] == pytest.approx(last["val_nll"], rel=1e-4)
    test = evaluate(predictor, dataset, "test")
    assert test["rows"] == 586
    assert 0.5 < test["within_1_sigma"] < test["within_2_sigma"] <= 1.0
    assert 10_000 < test["mean_sigma"] < 80_000


def test_predictions_in_chunks_equal_one_pass_and_the_chunk_fits_the_memory_bound() -> None:
    spec = {"dataset": {"name": "house_prices"}, "loss": "gaussian_nll", "model": {"widths": [512, 256]},
            "batch_size": 256, "epochs": 1}  # fmt: skip
    predictor = load_predictor(train(spec).artifact)
    x = load_dataset(validate_spec(spec).spec).x[:1000]
    # Every layer's outputs a row, for the μ and the σ networks: (512 + 256 + 1) × 2, held twice.
    assert predictor.row_bytes == 2 * 2 * (512 + 256 + 1) * 4
    small = 100 * predictor.row_bytes
    assert predictor.chunk_rows(small) == 100
    assert predictor.chunk_rows(1) == 1  # never zero rows
    whole = predictor.raw(x, max_memory_bytes=10**12)
    chunked = predictor.raw(x, max_memory_bytes=small)
    for name in ("mu", "log_var"):
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-6, atol=1e-6)
    assert predictor.predict_array(x[:10], small) == predictor.predict_array(x[:10], 10**12)
