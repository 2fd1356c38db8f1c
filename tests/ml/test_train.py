"""Training: it learns, it stops cleanly, it resumes exactly, and the fast paths compute the
same numbers as autograd and torch.optim."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from ml import fastmlp
from ml.data import load_dataset
from ml.datasets import from_csv
from ml.networks import build_network
from ml.objective import Objective
from ml.optim import StackedOptimizer, flatten_parameters
from ml.predict import load_predictor
from ml.spec import OptimizerSpec, validate_spec
from ml.stacked import Layout
from ml.train import train

SPIRALS = {"dataset": {"name": "spirals", "params": {"n_samples": 600}}, "loss": "bce",
           "model": {"hidden_layers": 3, "neurons": 16}, "optimizer": {"name": "adam", "lr": 0.01},
           "batch_size": 32, "epochs": 60, "seed": 1}  # fmt: skip


def with_(spec: dict, **changes: object) -> dict:
    out = copy.deepcopy(spec)
    out.update(changes)
    return out


def test_three_hidden_layers_learn_the_spirals() -> None:
    epochs = []
    result = train(SPIRALS, on_epoch=epochs.append)
    assert result.status == "succeeded"
    assert [e.epoch for e in epochs] == list(range(1, 61))
    assert result.history[-1].metrics["val_accuracy"] >= 0.95
    assert result.best["val_accuracy"] >= result.history[-1].metrics["val_accuracy"]
    assert epochs[-1].train_loss < epochs[0].train_loss


def test_one_small_hidden_layer_does_not_learn_the_spirals_as_well() -> None:
    small = train(with_(SPIRALS, model={"hidden_layers": 1, "neurons": 4}))
    assert small.history[-1].metrics["val_accuracy"] < 0.85


@pytest.mark.parametrize("loss", ["bce", "mse", "ce"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu"])
def test_hand_written_backward_equals_autograd(loss: str, activation: str) -> None:
    checked = validate_spec({"dataset": {"name": "xor"}, "loss": loss,
                             "model": {"hidden_layers": 2, "neurons": 7, "activation": activation}})  # fmt: skip
    _compare_gradients(checked, torch.randn(13, 2), torch.randint(0, 2, (13,)))


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_hand_written_backward_equals_autograd_multiclass_on_images(loss: str) -> None:
    checked = validate_spec({"dataset": {"name": "digits"}, "loss": loss, "model": {"hidden_layers": 1, "neurons": 5}})
    _compare_gradients(checked, torch.rand(9, 1, 16, 16), torch.randint(0, 10, (9,)))


def test_hand_written_backward_equals_autograd_regression() -> None:
    checked = validate_spec({"dataset": {"name": "house_prices"}, "model": {"hidden_layers": 3, "neurons": 8}})
    _compare_gradients(checked, torch.randn(11, 10), torch.randn(11))


def _compare_gradients(checked, x: torch.Tensor, y: torch.Tensor) -> None:
    network = build_network(checked.plan, seed=0)
    assert fastmlp.supports(network, checked.info, checked.spec.loss)
    flat, grad = flatten_parameters(network)
    target = checked.info.targets[0].name
    objective = Objective(checked.info, checked.spec.loss, {target: 1.0})
    loss = objective.loss(network(x), {target: y})
    grad.zero_()
    loss.backward()
    expected = grad.clone()
    with torch.no_grad():
        fast_loss = fastmlp.FastMLP.for_network(network, checked.info, checked.spec.loss).step(x, y)
    torch.testing.assert_close(fast_loss, loss.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "reference"),
    [
        ({"name": "sgd", "lr": 0.1}, lambda p: torch.optim.SGD(p, lr=0.1)),
        ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
        ({"name": "adam", "lr": 0.01, "weight_decay": 0.001},
         lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.001)),
        ({"name": "adamw", "lr": 0.01, "weight_decay": 0.1}, lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
        ({"name": "rmsprop", "lr": 0.01}, lambda p: torch.optim.RMSprop(p, lr=0.01)),
        ({"name": "rmsprop", "lr": 0.01, "momentum": 0.5}, lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5)),
    ],
)  # fmt: skip
def test_the_optimizer_matches_torch_optim_alone_and_stacked(spec: dict, reference) -> None:
    """A stack of one (a lone run: plain-number settings) and a stack of three whose members
    differ in learning rate each step as torch.optim does on its own parameters."""
    torch.manual_seed(0)
    shapes = [torch.Size([5, 6]), torch.Size([20])]  # two parameters, 50 numbers a member
    for k in (1, 3):
        specs = [OptimizerSpec(**(spec | {"lr": spec["lr"] * (i + 1)})) for i in range(k)]
        layout = Layout(shapes, k)
        rows = torch.randn(k, layout.width)
        ours = layout.from_rows(rows)
        theirs = [torch.nn.Parameter(rows[i].clone()) for i in range(k)]
        opt = StackedOptimizer(specs, ours, layout)
        refs = [reference([theirs[i]]) for i in range(k)]
        for i, ref in enumerate(refs):
            for group in ref.param_groups:
                group["lr"] = specs[i].lr
        for _ in range(25):
            g = torch.randn(k, layout.width)
            opt.step(ours, layout.from_rows(g))
            for i, ref in enumerate(refs):
                theirs[i].grad = g[i].clone()
                ref.step()
        torch.testing.assert_close(
            layout.to_rows(ours), torch.stack([t.detach() for t in theirs]), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    "spec",
    [
        SPIRALS,
        {"dataset": {"name": "digits", "params": {"n_samples": 300}},
         "model": {"type": "cnn", "conv_layers": 2, "filters": 4, "kernel_size": 5, "hidden_layers": 0},
         "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "batch_size": 16, "epochs": 6},
        {"dataset": {"name": "house_prices"}, "loss": "gaussian_nll", "model": {"hidden_layers": 2, "neurons": 8},
         "optimizer": {"name": "rmsprop", "lr": 0.003}, "batch_size": 64, "epochs": 8,
         "early_stopping": {"patience": 50}},
    ],
    ids=["mlp-adam", "cnn-sgd-momentum", "gaussian-rmsprop-early-stopping"],
)  # fmt: skip
def test_a_run_resumed_from_a_checkpoint_ends_exactly_as_an_uninterrupted_one(spec: dict) -> None:
    spec = with_(spec, epochs=min(spec["epochs"], 8))
    whole = train(spec)
    blobs: dict[int, bytes] = {}
    stop_at = 3
    first = train(spec, on_checkpoint=lambda b, e: blobs.__setitem__(e, b), checkpoint_seconds=0,
                  should_stop=lambda: len(blobs) >= stop_at)  # fmt: skip
    assert first.status == "cancelled"
    assert first.epochs_done == stop_at
    resumed = train(spec, resume_from=blobs[stop_at])
    assert resumed.status == "succeeded"
    assert [h.as_row() | {"seconds": 0} for h in resumed.history] == [
        h.as_row() | {"seconds": 0} for h in whole.history
    ]
    a, b = load_predictor(whole.artifact), load_predictor(resumed.artifact)
    for key, value in a.network.state_dict().items():
        assert torch.equal(value, b.network.state_dict()[key]), key


def test_the_test_split_is_never_used() -> None:
    # Poison every test row: if any were used for training, normalization or selection,
    # the run would turn NaN or change.
    spec = with_(SPIRALS, epochs=5)
    checked = validate_spec(spec)
    clean = load_dataset(checked.spec)
    poisoned = copy.deepcopy(clean)
    from ml.data import split_of

    test_rows = split_of(checked.spec, clean)["test"]
    assert len(test_rows) == 120
    poisoned.x[test_rows] = np.nan
    a, b = train(spec), train(spec, dataset=poisoned)
    assert [h.val_loss for h in a.history] == [h.val_loss for h in b.history]
    assert b.status == "succeeded"


def test_a_huge_learning_rate_ends_diverged_or_finite_never_an_exception() -> None:
    spec = with_(SPIRALS, loss="mse", model={"hidden_layers": 2, "neurons": 16, "activation": "sigmoid"},
                 optimizer={"name": "sgd", "lr": 10.0}, epochs=15)  # fmt: skip
    result = train(spec)
    assert result.status in ("diverged", "succeeded")
    assert all(math.isfinite(h.train_loss) and math.isfinite(h.val_loss) for h in result.history)


def test_divergence_keeps_the_last_finite_epoch() -> None:
    spec = {"dataset": {"name": "house_prices", "normalize": {"inputs": False, "target": False}},
            "model": {"hidden_layers": 2, "neurons": 8}, "optimizer": {"name": "sgd", "lr": 1.0},
            "batch_size": "full", "epochs": 50}  # fmt: skip
    result = train(spec)
    assert result.status == "diverged"
    assert "epoch" in (result.error or "")
    assert result.epochs_done == len(result.history) < 50
    assert all(math.isfinite(h.train_loss) for h in result.history)


def test_early_stopping_stops_on_validation_and_keeps_the_best_weights() -> None:
    spec = with_(SPIRALS, epochs=400, early_stopping={"patience": 5},
                 optimizer={"name": "adam", "lr": 0.05})  # fmt: skip
    result = train(spec)
    assert result.status == "succeeded"
    assert result.epochs_done < 400
    best = min(result.history, key=lambda h: h.val_loss)
    assert result.epochs_done == best.epoch + 5


def test_two_targets_report_accuracy_per_target() -> None:
    spec = {"dataset": {"name": "colored_digits", "params": {"n_samples": 400}},
            "model": {"type": "cnn", "conv_layers": 1, "filters": 4, "kernel_size": 5, "hidden_layers": 0,
                      "heads": {"color": {"conv_layers": 1, "filters": 5, "kernel_size": 16, "hidden_layers": 0}}},
            "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 5}  # fmt: skip
    result = train(spec)
    metrics = result.history[-1].metrics
    assert set(metrics) == {"val_accuracy", "val_accuracy_digit", "val_accuracy_color"}
    assert metrics["val_accuracy_color"] >= 0.95
    assert metrics["val_accuracy"] == pytest.approx((metrics["val_accuracy_digit"] + metrics["val_accuracy_color"]) / 2)


def _heteroscedastic_csv(n: int = 1500, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n)
    other = rng.normal(size=n)
    y = 1000 + 200 * x + rng.normal(size=n) * (5 + 100 * x)  # the noise grows with x
    rows = "\n".join(f"{a:.6f},{b:.6f},{c:.4f}" for a, b, c in zip(x, other, y, strict=True))
    return ("x,other,y\n" + rows).encode()


def test_gaussian_sigma_grows_with_the_noise() -> None:
    dataset = from_csv(_heteroscedastic_csv(), "y")
    spec = {"dataset": {"id": "hetero"}, "loss": "gaussian_nll", "model": {"hidden_layers": 2, "neurons": 16},
            "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 64, "epochs": 60}  # fmt: skip
    result = train(spec, dataset=dataset)
    assert result.status == "succeeded"
    predictor = load_predictor(result.artifact)
    out = predictor.predict([{"x": v, "other": 0.0} for v in (0.05, 0.5, 0.95)])
    sigmas = [o["sigma"] for o in out]
    assert sigmas[0] < sigmas[1] < sigmas[2]
    # The true σ: 10, 55 and 100, in the target's units.
    assert 5 < sigmas[0] < 45
    assert 60 < sigmas[2] < 140
    assert out[1]["mu"] == pytest.approx(1100, abs=30)
    assert result.history[-1].metrics["val_rmse"] < 100
