"""The kept model: what a run serves is the epoch the one ranking rule chooses (`keep: best`) or
its last epoch (`keep: last`), described by `served`; a resumed run and a group member keep the
same weights as an uninterrupted single run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ml.data import load_dataset
from ml.evaluate import evaluate
from ml.group import train_group
from ml.predict import load_predictor
from ml.ranking import is_better, rank_key
from ml.results import EpochResult, TrainResult
from ml.spec import validate_spec
from ml.train import train

# The README tour's Gaussian house-price model (exercise 4): full batch, 800 epochs.
TOUR = yaml.safe_load((Path(__file__).parents[2] / "docs" / "tour" / "house_prices.yaml").read_text())


def with_(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out.update(changes)
    return out


def weights(result: TrainResult) -> dict[str, torch.Tensor]:
    assert result.artifact is not None
    return load_predictor(result.artifact).network.state_dict()


def ranked_best(history: list[EpochResult]) -> EpochResult:
    return min(history, key=lambda h: rank_key({**h.metrics, "val_loss": h.val_loss, "epoch": h.epoch}))


@pytest.fixture(scope="module")
def tour_run() -> TrainResult:
    return train(TOUR)


# -- the rule ---------------------------------------------------------------------------------


def test_the_ranking_rule_metric_then_validation_loss_then_the_earlier_epoch() -> None:
    assert is_better(
        {"val_accuracy": 0.9, "val_loss": 0.5, "epoch": 3}, {"val_accuracy": 0.8, "val_loss": 0.1, "epoch": 1}
    )
    assert is_better({"val_rmse": 10.0, "val_loss": 0.5, "epoch": 3}, {"val_rmse": 11.0, "val_loss": 0.1, "epoch": 1})
    tie = {"val_accuracy": 0.9, "val_loss": 0.3, "epoch": 2}
    assert is_better({"val_accuracy": 0.9, "val_loss": 0.2, "epoch": 7}, tie)  # lower loss wins the tie
    assert not is_better({"val_accuracy": 0.9, "val_loss": 0.3, "epoch": 7}, tie)  # a full tie: the earlier
    assert is_better({"val_accuracy": 0.1, "val_loss": 9.0, "epoch": 9}, {"val_accuracy": float("nan"), "epoch": 1})
    assert is_better({"val_rmse": 5.0}, None)
    # Two regression targets: the mean of their RMSEs.
    assert is_better({"val_rmse_a": 1.0, "val_rmse_b": 5.0}, {"val_rmse_a": 4.0, "val_rmse_b": 3.0})


# -- what is kept and served ------------------------------------------------------------------


def test_the_tour_gaussian_model_serves_its_best_validation_epoch(tour_run: TrainResult) -> None:
    run = tour_run
    assert run.status == "succeeded"
    assert run.epochs_done == 800
    best = ranked_best(run.history)
    assert run.served["epoch"] == best.epoch < 800  # σ overfits long before the end
    assert run.served == run.best
    assert run.served["val_rmse"] == best.metrics["val_rmse"]
    # A validation evaluation of the artifact is the served epoch's numbers, not the last epoch's.
    checked = validate_spec(TOUR)
    evaluation = evaluate(load_predictor(run.artifact), load_dataset(checked.spec, None), "val")  # type: ignore[arg-type]
    assert evaluation["rmse"] == pytest.approx(run.served["val_rmse"], rel=1e-5)
    assert evaluation["nll"] == pytest.approx(run.served["val_nll"], rel=1e-5)
    assert abs(evaluation["nll"] - run.history[-1].metrics["val_nll"]) > 1.0


def test_keep_last_serves_the_last_epoch(tour_run: TrainResult) -> None:
    last = train(with_(TOUR, keep="last"))
    assert last.served["epoch"] == 800
    assert last.served["val_nll"] == last.history[-1].metrics["val_nll"]
    assert last.best == tour_run.best  # the best epoch is still reported as such
    checked = validate_spec(TOUR)
    evaluation = evaluate(load_predictor(last.artifact), load_dataset(checked.spec, None), "val")  # type: ignore[arg-type]
    assert evaluation["nll"] == pytest.approx(last.history[-1].metrics["val_nll"], rel=1e-5)


@pytest.mark.parametrize("stop_after", [100, 300])  # before and after the best epoch
def test_a_resumed_run_keeps_the_model_of_an_uninterrupted_one(tour_run: TrainResult, stop_after: int) -> None:
    blobs: dict[int, bytes] = {}
    first = train(
        TOUR,
        should_stop=lambda: bool(blobs) and max(blobs) >= stop_after,
        on_checkpoint=lambda blob, epoch: blobs.__setitem__(epoch, blob),
        checkpoint_seconds=0.0,
    )
    assert first.status == "cancelled"
    assert first.epochs_done == stop_after
    resumed = train(TOUR, resume_from=blobs[stop_after])
    assert resumed.epochs_done == 800
    assert resumed.served == tour_run.served
    for key, value in weights(tour_run).items():
        torch.testing.assert_close(weights(resumed)[key], value, rtol=0, atol=0)


SPIRALS = {"dataset": {"name": "spirals", "params": {"n_samples": 600}}, "loss": "bce",
           "model": {"hidden_layers": 3, "neurons": 16}, "optimizer": {"name": "adam", "lr": 0.05},
           "batch_size": 32, "epochs": 40, "seed": 1}  # fmt: skip


def test_a_group_member_keeps_the_model_of_a_single_run() -> None:
    # Group arithmetic rounds differently (tests/ml/test_group.py): on this run the two reach the
    # same metrics to the end (losses within 1e-4), and its best epoch (36) is not its last.
    alone = train(SPIRALS)
    member, other, last = train_group([SPIRALS, with_(SPIRALS, seed=2), with_(SPIRALS, keep="last")])
    assert alone.served["epoch"] == ranked_best(alone.history).epoch < 40
    assert member.served["epoch"] == alone.served["epoch"]
    assert member.served["val_accuracy"] == alone.served["val_accuracy"]
    assert member.served["val_loss"] == pytest.approx(alone.served["val_loss"], rel=1e-4)
    kept = torch.cat([w.flatten() for w in weights(alone).values()])
    near = torch.cat([w.flatten() for w in weights(member).values()])
    far = torch.cat([w.flatten() for w in weights(last).values()])  # the same run's last epoch
    assert (near - kept).norm() < 0.01 * (far - kept).norm()
    assert other.served["epoch"] == ranked_best(other.history).epoch
    assert last.served["epoch"] == 40


def test_a_group_of_tour_models_serves_what_it_reports(tour_run: TrainResult) -> None:
    # Over 800 full-batch epochs the Gaussian model is chaotic: a rounding difference of 1e-7 at
    # epoch 50 grows into another trajectory (another best epoch), so a member is checked
    # against itself: its artifact evaluates to its `served` numbers.
    members = train_group([TOUR, with_(TOUR, seed=1), with_(TOUR, keep="last")])
    dataset = load_dataset(validate_spec(TOUR).spec, None)
    for result in members:
        assert result.served["epoch"] == (800 if result is members[2] else ranked_best(result.history).epoch)
        evaluation = evaluate(load_predictor(result.artifact), dataset, "val")  # type: ignore[arg-type]
        assert evaluation["rmse"] == pytest.approx(result.served["val_rmse"], rel=1e-5)
        assert evaluation["nll"] == pytest.approx(result.served["val_nll"], rel=1e-5)


def test_a_resumed_group_keeps_its_members_models() -> None:
    specs = [with_(TOUR, epochs=300), with_(TOUR, epochs=300, seed=1)]
    whole = train_group(specs)
    blobs: dict[int, dict[int, bytes]] = {}
    cut = 200
    train_group(
        specs,
        cancelled=lambda: {0, 1} if cut in blobs.get(0, {}) and cut in blobs.get(1, {}) else set(),
        on_checkpoint=lambda i, blob, epoch: blobs.setdefault(i, {}).__setitem__(epoch, blob),
        checkpoint_seconds=0.0,
    )
    resumed = train_group(specs, resume_from={i: blobs[i][cut] for i in (0, 1)})
    for w, r in zip(whole, resumed, strict=True):
        assert r.served == w.served
        for key, value in weights(w).items():
            torch.testing.assert_close(weights(r)[key], value, rtol=0, atol=0)


def test_early_stopping_serves_the_ranked_best_epoch() -> None:
    spirals = {"dataset": {"name": "spirals", "params": {"n_samples": 600}}, "loss": "bce",
               "model": {"hidden_layers": 3, "neurons": 16}, "optimizer": {"name": "adam", "lr": 0.05},
               "batch_size": 32, "epochs": 400, "seed": 1, "early_stopping": {"patience": 5}}  # fmt: skip
    result = train(spirals)
    assert result.epochs_done < 400
    assert result.served["epoch"] == ranked_best(result.history).epoch
    checked = validate_spec(spirals)
    evaluation = evaluate(load_predictor(result.artifact), load_dataset(checked.spec, None), "val")  # type: ignore[arg-type]
    assert evaluation["accuracy"] == pytest.approx(result.served["val_accuracy"])


def test_a_checkpoint_from_before_kept_weights_still_resumes_and_serves_what_it_says() -> None:
    from ml.artifact import read_checkpoint, save_checkpoint

    blobs: dict[int, bytes] = {}
    train(
        SPIRALS,
        should_stop=lambda: 20 in blobs,
        on_checkpoint=lambda blob, epoch: blobs.__setitem__(epoch, blob),
        checkpoint_seconds=0.0,
    )
    tensors, state = read_checkpoint(blobs[20])
    del tensors["kept_params"]  # what the previous version wrote (its digest did not know `keep`)
    resumed = train(SPIRALS, resume_from=save_checkpoint(tensors, state))
    assert resumed.epochs_done == 40
    assert resumed.served["epoch"] >= 20  # the best epoch before 20 cannot be served: its weights are gone
    checked = validate_spec(SPIRALS)
    evaluation = evaluate(load_predictor(resumed.artifact), load_dataset(checked.spec, None), "val")  # type: ignore[arg-type]
    assert evaluation["accuracy"] == pytest.approx(resumed.served["val_accuracy"])
