"""Group training: K experiments as one stacked network end as each would alone.

Tolerance: a member's numbers are those of its single run up to floating-point rounding, since
batched products (bmm, grouped convolutions) add the same terms in another order. Over the
short runs here that stays below 1e-4 relative on losses; accuracy, a count over the
validation rows, may move by a row or two at most where a prediction sits on the boundary (so
may a Gaussian model's share of targets within μ ± σ)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from ml.group import train_group
from ml.grouping import group_key, plan_groups
from ml.predict import load_predictor
from ml.results import TrainResult
from ml.spec import validate_spec
from ml.train import train

MLP = {"dataset": {"name": "spirals", "params": {"n_samples": 400}}, "loss": "bce",
       "model": {"hidden_layers": 2, "neurons": 8}, "batch_size": 16, "epochs": 8}  # fmt: skip
CNN = {"dataset": {"name": "digits", "params": {"n_samples": 300}},
       "model": {"type": "cnn", "conv_layers": 2, "filters": 3, "kernel_size": 5, "hidden_layers": 1, "neurons": 8},
       "batch_size": 32, "epochs": 3}  # fmt: skip
TWO = {"dataset": {"name": "colored_digits", "params": {"n_samples": 300}},
       "model": {"type": "cnn", "conv_layers": 1, "filters": 3, "kernel_size": 5, "hidden_layers": 0,
                 "shared_layers": 1,
                 "heads": {"color": {"conv_layers": 1, "filters": 2, "kernel_size": 12, "hidden_layers": 0}}},
       "batch_size": 32, "epochs": 3}  # fmt: skip
GAUSS = {"dataset": {"name": "house_prices"}, "loss": "gaussian_nll",
         "model": {"hidden_layers": 2, "neurons": 8, "sigma": {"neurons": 12}},
         "batch_size": 128, "epochs": 6}  # fmt: skip


def variant(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out.update(changes)
    return out


def assert_same_run(group: TrainResult, alone: TrainResult, val_rows: int) -> None:
    assert group.status == alone.status
    assert group.epochs_done == alone.epochs_done
    assert len(group.history) == len(alone.history)
    for g, a in zip(group.history, alone.history, strict=True):
        assert g.epoch == a.epoch
        assert g.train_loss == pytest.approx(a.train_loss, rel=1e-4, abs=1e-6)
        assert g.val_loss == pytest.approx(a.val_loss, rel=1e-4, abs=1e-6)
        for key, value in a.metrics.items():
            counted = "accuracy" in key or "within" in key  # shares of rows: a row may cross a boundary
            tolerance = 2.0 / val_rows if counted else abs(value) * 1e-4
            assert g.metrics[key] == pytest.approx(value, abs=tolerance), key
    if alone.artifact is not None:
        a_net, g_net = load_predictor(alone.artifact).network, load_predictor(group.artifact).network
        for key, value in a_net.state_dict().items():
            torch.testing.assert_close(g_net.state_dict()[key], value, rtol=1e-3, atol=1e-5)


def check_group(specs: list[dict[str, Any]], val_rows: int, **kwargs: Any) -> list[TrainResult]:
    grouped = train_group(specs, **kwargs)
    for spec, result in zip(specs, grouped, strict=True):
        assert_same_run(result, train(spec), val_rows)
    return grouped


@pytest.mark.parametrize(
    "optimizers",
    [
        [{"name": "sgd", "lr": 0.05}, {"name": "sgd", "lr": 0.2, "momentum": 0.9},
         {"name": "sgd", "lr": 0.1, "weight_decay": 0.01}],
        [{"name": "adam", "lr": 0.01}, {"name": "adam", "lr": 0.003, "weight_decay": 0.001}],
        [{"name": "adamw", "lr": 0.01, "weight_decay": 0.1}, {"name": "adamw", "lr": 0.02}],
        [{"name": "rmsprop", "lr": 0.01}, {"name": "rmsprop", "lr": 0.003, "momentum": 0.5}],
    ],
    ids=["sgd", "adam", "adamw", "rmsprop"],
)  # fmt: skip
def test_mlp_members_end_as_they_would_alone(optimizers: list[dict[str, Any]]) -> None:
    specs = [variant(MLP, optimizer=o, seed=i) for i, o in enumerate(optimizers)]
    check_group(specs, val_rows=80)


def test_cnn_members_end_as_they_would_alone() -> None:
    specs = [
        variant(CNN, optimizer={"name": "sgd", "lr": lr, "momentum": 0.9}, seed=s) for s, lr in [(0, 0.05), (1, 0.02)]
    ]
    check_group(specs, val_rows=60)


@pytest.mark.parametrize("hidden", [0, 1], ids=["linear", "one-hidden"])
def test_mlp_members_on_images_end_as_they_would_alone(hidden: int) -> None:
    # Exercise 2's model0 and model1 (an MLP on 16×16 digits, mse) with repeats: the images reach
    # the hand-written MLP step as (K, batch, C*H*W), not in the grouped-convolution layout.
    mlp = {"dataset": {"name": "digits", "params": {"n_samples": 300}}, "loss": "mse",
           "model": {"hidden_layers": hidden, "neurons": 8}, "optimizer": {"name": "sgd", "lr": 0.01},
           "batch_size": 10, "epochs": 2}  # fmt: skip
    check_group([variant(mlp, seed=s) for s in range(3)], val_rows=60)


def test_two_target_members_with_a_shared_layer_end_as_they_would_alone() -> None:
    # SGD: Adam's normalized steps turn rounding-level gradient differences into visible ones
    # on near-zero gradients, which says nothing about the stacking (Adam is checked above).
    specs = [
        variant(TWO, optimizer={"name": "sgd", "lr": lr, "momentum": 0.9}, seed=s) for s, lr in [(0, 0.05), (3, 0.02)]
    ]
    results = check_group(specs, val_rows=60)
    assert "val_accuracy_color" in results[0].history[-1].metrics


def test_gaussian_members_end_as_they_would_alone() -> None:
    specs = [
        variant(GAUSS, optimizer={"name": "adam", "lr": lr}, seed=s) for s, lr in [(0, 0.01), (1, 0.003), (2, 0.02)]
    ]
    check_group(specs, val_rows=586)


def test_a_diverging_member_leaves_the_others_unchanged() -> None:
    house = {"dataset": {"name": "house_prices"}, "model": {"hidden_layers": 2, "neurons": 8}, "batch_size": 128,
             "epochs": 10}  # fmt: skip
    calm = [variant(house, optimizer={"name": "sgd", "lr": 0.05}, seed=s) for s in (1, 2)]
    wild = variant(house, optimizer={"name": "sgd", "lr": 1.5})  # NaN in its fifth epoch
    results = check_group([calm[0], wild, calm[1]], val_rows=586)
    assert results[1].status == "diverged"
    assert results[1].epochs_done == 4
    assert "epoch 5" in (results[1].error or "")
    assert results[0].status == results[2].status == "succeeded"


def test_members_stop_at_their_own_epochs_and_early_stopping() -> None:
    specs = [
        variant(MLP, epochs=3, seed=0),
        variant(MLP, epochs=9, seed=1),
        variant(MLP, epochs=40, seed=2, optimizer={"name": "adam", "lr": 0.1}, early_stopping={"patience": 2}),
        variant(MLP, epochs=5, seed=3),
    ]
    finished: list[int] = []
    results = check_group(specs, val_rows=80, on_finish=lambda i, r: finished.append(i))
    assert [r.epochs_done for r in results[:2]] == [3, 9]
    assert results[2].epochs_done < 40
    assert finished.index(0) < finished.index(3) < finished.index(1)


def test_cancelling_one_member_stops_only_that_member() -> None:
    specs = [variant(MLP, seed=s) for s in range(3)]
    epochs_seen: dict[int, int] = {}

    def on_epoch(i: int, result: Any) -> None:
        epochs_seen[i] = result.epoch

    results = train_group(specs, on_epoch=on_epoch, cancelled=lambda: {1} if epochs_seen.get(1, 0) >= 3 else set())
    assert results[1].status == "cancelled"
    assert results[1].epochs_done == 3
    assert results[1].artifact is not None
    for i in (0, 2):
        assert_same_run(results[i], train(specs[i]), 80)


def test_a_group_resumes_from_its_members_checkpoints_and_a_member_checkpoint_resumes_alone() -> None:
    specs = [variant(MLP, seed=s, optimizer={"name": "adam", "lr": lr}) for s, lr in [(0, 0.01), (1, 0.03)]]
    checkpoints: dict[int, dict[int, bytes]] = {}

    def keep(i: int, blob: bytes, epoch: int) -> None:
        checkpoints.setdefault(epoch, {})[i] = blob

    first = train_group(specs, on_checkpoint=keep, checkpoint_seconds=0,
                        cancelled=lambda: {0, 1} if 4 in checkpoints else set())  # fmt: skip
    assert [r.status for r in first] == ["cancelled", "cancelled"]
    resumed = train_group(specs, resume_from=checkpoints[4])
    alone = [train(s) for s in specs]
    for r, a in zip(resumed, alone, strict=True):
        assert_same_run(r, a, 80)
    # A member's checkpoint is a single run's checkpoint.
    assert_same_run(train(specs[1], resume_from=checkpoints[4][1]), alone[1], 80)


def assert_identical(group: TrainResult, alone: TrainResult) -> None:
    """The same numbers, not within a tolerance: a stack of one runs a lone run's operations."""
    assert (group.status, group.epochs_done, group.error) == (alone.status, alone.epochs_done, alone.error)
    assert [(h.epoch, h.train_loss, h.val_loss, h.metrics) for h in group.history] == [
        (h.epoch, h.train_loss, h.val_loss, h.metrics) for h in alone.history
    ]
    assert group.best == alone.best
    if alone.artifact is not None:
        a_net, g_net = load_predictor(alone.artifact).network, load_predictor(group.artifact).network
        for key, value in a_net.state_dict().items():
            assert torch.equal(g_net.state_dict()[key], value), key


@pytest.mark.parametrize(
    "spec",
    [
        variant(MLP, optimizer={"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 0.01}),
        variant(MLP, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.1}, seed=4),
        variant(MLP, optimizer={"name": "rmsprop", "lr": 0.003, "momentum": 0.5}, keep="last"),
        variant(CNN, optimizer={"name": "adam", "lr": 0.01, "weight_decay": 0.001}),
        variant(TWO, optimizer={"name": "sgd", "lr": 0.05}),
        variant(GAUSS, optimizer={"name": "adam", "lr": 0.01}),
        variant(MLP, optimizer={"name": "adam", "lr": 0.1}, epochs=40, early_stopping={"patience": 2}),
        {"dataset": {"name": "digits", "params": {"n_samples": 300}}, "loss": "mse",
         "model": {"hidden_layers": 1, "neurons": 8}, "batch_size": 10, "epochs": 2},
    ],
    ids=["sgd-fast", "adamw-fast", "rmsprop-fast-keep-last", "cnn-adam", "two-targets", "gaussian", "early-stop",
         "mlp-on-images"],
)  # fmt: skip
def test_a_group_of_one_trains_exactly_as_train(spec: dict[str, Any]) -> None:
    assert_identical(train_group([spec])[0], train(spec))


def test_a_group_of_one_diverges_resumes_and_cancels_exactly_as_train() -> None:
    house = {"dataset": {"name": "house_prices"}, "model": {"hidden_layers": 2, "neurons": 8}, "batch_size": 128,
             "epochs": 10, "optimizer": {"name": "sgd", "lr": 1.5}}  # fmt: skip
    assert_identical(train_group([house])[0], train(house))
    spec = variant(MLP, optimizer={"name": "adam", "lr": 0.01})
    checkpoints: dict[int, bytes] = {}
    first = train_group([spec], on_checkpoint=lambda i, blob, epoch: checkpoints.setdefault(epoch, blob),
                        checkpoint_seconds=0, cancelled=lambda: {0} if 4 in checkpoints else set())  # fmt: skip
    assert first[0].status == "cancelled"
    assert_identical(train_group([spec], resume_from={0: checkpoints[4]})[0], train(spec))
    assert_identical(train(spec, resume_from=checkpoints[4]), train(spec))


def test_a_group_left_with_one_member_goes_on_as_that_members_lone_run() -> None:
    """Compaction down to one member switches to the stack-of-one step mid-run; the survivor
    still ends as alone (within the stacked tolerance: its first epochs were stacked)."""
    specs = [variant(MLP, epochs=2, seed=0), variant(MLP, epochs=8, seed=1, optimizer={"name": "adam", "lr": 0.01})]
    check_group(specs, val_rows=80)


def test_the_group_key_separates_what_cannot_be_stacked() -> None:
    key = lambda s: group_key(validate_spec(s))  # noqa: E731
    assert key(variant(MLP, seed=1, optimizer={"name": "adam", "lr": 0.5}, epochs=3)) == key(MLP)
    assert key(variant(MLP, batch_size=8)) != key(MLP)
    assert key(variant(MLP, model={"hidden_layers": 2, "neurons": 9})) != key(MLP)
    assert key(variant(MLP, model={"hidden_layers": 2, "neurons": 8, "activation": "tanh"})) != key(MLP)
    assert key(variant(MLP, optimizer={"name": "sgd", "lr": 0.1})) != key(MLP)
    with pytest.raises(ValueError, match="cannot train together"):
        train_group([MLP, variant(MLP, batch_size=8)])


def test_groups_are_planned_by_key_size_and_memory() -> None:
    a = [(f"a{i}", validate_spec(variant(MLP, seed=i))) for i in range(5)]
    b = [(f"b{i}", validate_spec(variant(MLP, batch_size=8, seed=i))) for i in range(2)]
    members = [a[0], b[0], *a[1:], b[1]]
    assert plan_groups(members, max_members=3, memory_bytes=1 << 30) == [["a0", "a1", "a2"], ["a3", "a4"], ["b0", "b1"]]
    from ml.grouping import member_bytes

    one = member_bytes(a[0][1])
    assert plan_groups(a, max_members=10, memory_bytes=2 * one) == [["a0", "a1"], ["a2", "a3"], ["a4"]]
