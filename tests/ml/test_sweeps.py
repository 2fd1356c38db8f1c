"""Sweep expansion (variants, grid, random, repeats) and validation, and the study files."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml.sweeps import SweepInvalid, SweepRequest, apply_overrides, check_sweep, expand, path_problem

STUDIES = Path(__file__).resolve().parents[2] / "studies"
BASE: dict[str, Any] = {
    "dataset": {"name": "spirals", "params": {"n_samples": 200}},
    "model": {"hidden_layers": 2, "neurons": 16},
    "optimizer": {"name": "sgd", "lr": 0.01},
    "epochs": 5,
}


def test_variants_override_dotted_paths_of_the_base() -> None:
    members = expand({"base": BASE, "variants": [
        {"name": "model4"},
        {"name": "model5", "model.neurons": 32, "dataset.params.noise": 0.3},
        {"name": "model19", "optimizer.name": "adam", "batch_size": "full", "model.sigma": {"neurons": 20}},
    ]})  # fmt: skip
    assert [(m.index, m.row, m.name, m.repeat, m.loc) for m in members] == [
        (0, 0, "model4", 0, ("variants", 0)), (1, 1, "model5", 0, ("variants", 1)),
        (2, 2, "model19", 0, ("variants", 2))]  # fmt: skip
    assert members[0].spec == BASE | {"name": "model4"}
    assert members[1].spec == {
        "name": "model5",
        "dataset": {"name": "spirals", "params": {"n_samples": 200, "noise": 0.3}},
        "model": {"hidden_layers": 2, "neurons": 32},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "epochs": 5,
    }
    assert members[2].spec["optimizer"] == {"name": "adam", "lr": 0.01}
    assert members[2].spec["model"] == {"hidden_layers": 2, "neurons": 16, "sigma": {"neurons": 20}}
    assert members[2].spec["batch_size"] == "full"
    assert BASE["model"] == {"hidden_layers": 2, "neurons": 16}  # the base is never modified


def test_a_dict_value_merges_and_anything_else_replaces() -> None:
    base = {"model": {"type": "cnn", "heads": {"color": {"kernel_size": 16, "filters": 5}}}}
    merged = apply_overrides(base, {"model.heads": {"color": {"kernel_size": 14}}, "model.type": "mlp"})
    assert merged == {"model": {"type": "mlp", "heads": {"color": {"kernel_size": 14, "filters": 5}}}}
    assert apply_overrides({"model": None}, {"model.neurons": 3}) == {"model": {"neurons": 3}}
    assert apply_overrides({}, {"model.widths": [4, 2]}) == {"model": {"widths": [4, 2]}}


def test_grid_is_the_cartesian_product_named_from_its_values() -> None:
    members = expand({"base": BASE, "grid": {"model.neurons": [8, 16, 32], "optimizer.lr": [0.01, 0.1]}})
    assert [m.name for m in members] == [
        "neurons=8,lr=0.01", "neurons=8,lr=0.1", "neurons=16,lr=0.01", "neurons=16,lr=0.1",
        "neurons=32,lr=0.01", "neurons=32,lr=0.1"]  # fmt: skip
    assert [(m.spec["model"]["neurons"], m.spec["optimizer"]["lr"]) for m in members] == [
        (8, 0.01), (8, 0.1), (16, 0.01), (16, 0.1), (32, 0.01), (32, 0.1)]  # fmt: skip
    assert [m.loc for m in members] == [("grid", i) for i in range(6)]
    # Two paths ending alike are named in full.
    same_leaf = expand({"base": BASE, "grid": {"model.neurons": [4], "model.sigma.neurons": [20]}})
    assert same_leaf[0].name == "model.neurons=4,model.sigma.neurons=20"
    listed = expand({"base": BASE, "grid": {"model.widths": [[4, 2]], "loss": ["mse"]}})
    assert listed[0].name == "widths=[4,2],loss=mse"


SPACE: dict[str, Any] = {
    "optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
    "dataset.params.noise": {"uniform": [0.05, 0.3]},
    "model.neurons": {"int": [2, 5]},
    "optimizer.name": {"choice": ["sgd", "adam", "rmsprop"]},
}


def _random(seed: int, samples: int = 200) -> list[dict[str, Any]]:
    return [m.spec for m in expand({"base": BASE, "random": {"samples": samples, "seed": seed, "space": SPACE}})]


def test_random_is_reproducible_for_a_seed_and_stays_in_its_space() -> None:
    first, again, other = _random(3), _random(3), _random(4)
    assert first == again
    assert first != other
    assert [s["name"] for s in first[:3]] == ["sample-000", "sample-001", "sample-002"]
    lrs = [s["optimizer"]["lr"] for s in first]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs)
    # Log-uniform: about half the draws below the geometric middle 10^-2.5.
    assert 0.35 < sum(lr < 10**-2.5 for lr in lrs) / len(lrs) < 0.65
    assert all(0.05 <= s["dataset"]["params"]["noise"] <= 0.3 for s in first)
    assert {s["model"]["neurons"] for s in first} == {2, 3, 4, 5}  # both ends included
    assert {s["optimizer"]["name"] for s in first} == {"sgd", "adam", "rmsprop"}
    assert all(isinstance(s["model"]["neurons"], int) for s in first)
    # A longer draw starts with the shorter one.
    assert _random(3, samples=5) == [s | {"name": f"sample-{i}"} for i, s in enumerate(first[:5])]


def test_repeats_train_each_row_with_consecutive_seeds_under_its_name() -> None:
    members = expand({"base": BASE | {"seed": 10}, "variants": [{"name": "a"}, {"name": "b", "seed": 100}],
                      "repeats": 3})  # fmt: skip
    assert [(m.name, m.row, m.repeat, m.spec["seed"]) for m in members] == [
        ("a", 0, 0, 10), ("a", 0, 1, 11), ("a", 0, 2, 12),
        ("b", 1, 0, 100), ("b", 1, 1, 101), ("b", 1, 2, 102)]  # fmt: skip
    assert all(m.spec["dataset"] == BASE["dataset"] for m in members)  # the split stays the same
    assert [m.spec["seed"] for m in expand({"base": BASE, "grid": {"epochs": [1]}, "repeats": 2})] == [0, 1]
    assert "seed" not in expand({"base": BASE, "grid": {"epochs": [1]}})[0].spec  # one repeat: as given


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("model.neuron", "model has no field 'neuron'"),
        ("optimiser.lr", "the spec has no field 'optimiser'"),
        ("epochs.max", "epochs is a value, not an object"),
        ("model..neurons", "not a dotted path"),
    ],
)
def test_unknown_paths_are_refused_naming_the_row_and_the_path(path: str, problem: str) -> None:
    with pytest.raises(SweepInvalid) as caught:
        expand({"base": BASE, "variants": [{"name": "ok"}, {"name": "model7", path: 1}]})
    (error,) = caught.value.errors
    assert error["loc"] == ["variants", 1, path]
    assert error["msg"].startswith("row 'model7' (variants[1]): ")
    assert problem in error["msg"]


def test_known_paths_reach_into_heads_sigma_and_dataset_params() -> None:
    for path in ("model.heads.color.kernel_size", "model.sigma.neurons", "dataset.params.noise", "batch_size",
                 "dataset.split.val", "early_stopping.patience", "model.widths"):  # fmt: skip
        assert path_problem(path) is None, path
    assert "has no field 'kernel'" in (path_problem("model.heads.color.kernel") or "")
    with pytest.raises(SweepInvalid) as caught:
        expand({"base": BASE, "grid": {"model.neurons": [1], "modle.x": [2]}})
    assert [e["loc"] for e in caught.value.errors] == [["grid", "modle.x"]]
    with pytest.raises(SweepInvalid) as caught:
        expand({"base": BASE, "random": {"samples": 1, "space": {"lr": {"choice": [1]}}}})
    assert [e["loc"] for e in caught.value.errors] == [["random", "space", "lr"]]
    with pytest.raises(SweepInvalid, match="name is the row's own name"):
        expand({"base": BASE, "grid": {"name": ["a", "b"]}})


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"variants": [{"name": "a"}, {"model.neurons": 3}]}, ["variants", 1, "name"], "row 1 needs a name"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, ["variants", 1, "name"], "already row 0's"),
        ({"variants": [{"name": "a"}], "grid": {"epochs": [1]}}, [], "exactly one of variants, grid or random"),
        ({}, [], "exactly one of variants, grid or random"),
        ({"grid": {"epochs": []}}, ["grid", "epochs"], "at least 1 item"),
        ({"random": {"samples": 2, "space": {"epochs": {"int": [5, 1]}}}}, ["random", "space", "epochs", "int"],
         "lo <= hi"),
        ({"random": {"samples": 2, "space": {"optimizer.lr": {"log_uniform": [0, 1]}}}},
         ["random", "space", "optimizer.lr", "log_uniform"], "0 < lo"),
        ({"random": {"samples": 2, "space": {"epochs": {"choice": [1], "int": [1, 2]}}}},
         ["random", "space", "epochs"], "exactly one of choice"),
        ({"variants": [{"name": "a"}], "repeats": 0}, ["repeats"], "greater than or equal to 1"),
        ({"variants": [{"name": "a"}], "sweep": 1}, ["sweep"], "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_malformed_requests_name_the_field(body: dict[str, Any], loc: list[Any], words: str) -> None:
    with pytest.raises(SweepInvalid) as caught:
        expand({"base": BASE, **body})
    assert any(e["loc"][: len(loc)] == loc and words in e["msg"] for e in caught.value.errors), caught.value.errors


def test_size_limit_is_checked_before_expanding() -> None:
    huge = {"base": BASE, "grid": {f"model.{k}": list(range(1, 101)) for k in ("neurons", "hidden_layers")}
            | {"epochs": list(range(1, 101)), "seed": list(range(100))}}  # fmt: skip
    assert SweepRequest.model_validate(huge).size == 100**4
    started = time.perf_counter()
    with pytest.raises(SweepInvalid) as caught:
        expand(huge, max_size=500)
    assert time.perf_counter() - started < 1.0
    (error,) = caught.value.errors
    assert error["type"] == "sweep_too_large"
    assert "100,000,000 experiments" in error["msg"]
    with pytest.raises(SweepInvalid, match=r"6 experiments \(3 rows × 2 repeats\), above the limit of 5"):
        expand({"base": BASE, "grid": {"epochs": [1, 2, 3]}, "repeats": 2}, max_size=5)
    assert len(expand({"base": BASE, "grid": {"epochs": [1, 2, 3]}, "repeats": 2}, max_size=6)) == 6


def test_check_sweep_validates_every_row_and_names_the_bad_ones() -> None:
    body = {"base": BASE, "variants": [
        {"name": "ok"},
        {"name": "conv", "model.type": "cnn"},
        {"name": "lr", "optimizer.lr": -1},
        {"name": "big", "model.neurons": 4000},
    ]}  # fmt: skip
    with pytest.raises(SweepInvalid) as caught:
        check_sweep(body, max_params=1_000_000)
    errors = caught.value.errors
    assert [e["loc"] for e in errors] == [
        ["variants", 1, "model", "type"], ["variants", 2, "optimizer", "lr"], ["variants", 3, "model"]]  # fmt: skip
    assert [e["msg"].split(":")[0] for e in errors] == [
        "row 'conv' (variants[1])", "row 'lr' (variants[2])", "row 'big' (variants[3])"]  # fmt: skip
    assert errors[2]["type"] == "too_many_parameters"
    checked = check_sweep({"base": BASE, "variants": [{"name": "ok"}], "repeats": 2})
    assert [(c.member.name, c.checked.param_count, c.checked.spec.seed) for c in checked] == [
        ("ok", 337, 0), ("ok", 337, 1)]  # fmt: skip
    assert checked[0].checked.spec.loss == "bce"  # normalized: defaults filled


def test_a_problem_every_row_shares_is_reported_once_at_the_base() -> None:
    with pytest.raises(SweepInvalid) as caught:
        check_sweep({"base": BASE | {"loss": "gaussian_nll"}, "grid": {"model.neurons": [4, 8, 16]}, "repeats": 2})
    (error,) = caught.value.errors
    assert error["loc"] == ["base", "loss"]
    assert error["msg"].startswith("every row: gaussian_nll is for regression")
    with pytest.raises(SweepInvalid) as caught:
        check_sweep({"base": BASE, "grid": {"epochs": [10, 10_000]}}, max_epochs=1000)
    assert [e["loc"] for e in caught.value.errors] == [["grid", 1, "epochs"]]
    assert "row 'epochs=10000'" in caught.value.errors[0]["msg"]


# -- the study files -------------------------------------------------------------------------


def _study(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    data = yaml.safe_load((STUDIES / name).read_text())
    return data, data.pop("report"), data.pop("evaluate")


STUDY_FILES = sorted(p.name for p in STUDIES.glob("*.yaml"))


def test_there_is_a_study_per_exercise() -> None:
    assert STUDY_FILES == ["exercise1.yaml", "exercise2.yaml", "exercise3.yaml", "exercise4.yaml"]


@pytest.mark.parametrize("name", STUDY_FILES)
def test_every_study_expands_validates_and_names_its_report_rows(name: str) -> None:
    body, report, evaluate = _study(name)
    checked = check_sweep(body, max_params=5_000_000, max_size=500, max_epochs=100_000)
    names = [c.member.name for c in checked]
    rows = list(dict.fromkeys(names))
    # Every row trained with five seeds (the table's mean ± std), serving its last epoch as the
    # report's numbers are (keep: last), except rows that say otherwise by name.
    assert body["repeats"] == 5
    assert all(names.count(r) == 5 for r in rows)
    assert all(c.checked.spec.keep == ("best" if c.member.name.endswith("_best") else "last") for c in checked)
    assert set(report["rows"]) <= set(rows)
    assert report["metric"] in ("val_accuracy", "val_rmse")
    assert evaluate["rows"]
    assert all(r == "best" or r in rows for r in evaluate["rows"])
    for c in checked:
        assert c.checked.spec.device == "auto"
        # Nothing in a study trains on the test split: it is held out for `evaluate` only.
        assert c.checked.spec.dataset.split.test == 0.2


@pytest.mark.parametrize("name", ["exercise1.yaml", "exercise2.yaml"])
def test_parameter_counts_equal_the_reports(name: str) -> None:
    body, report, _ = _study(name)
    counts = {c.member.name: c.checked.param_count for c in check_sweep(body, max_size=500)}
    for row, published in report["rows"].items():
        assert counts[row] == published.get("par_exact", published["par"]), row
    if name == "exercise1.yaml":
        assert (report["rows"]["model1"]["par"], counts["model1"]) == (128, 129)  # the report's misprint
        assert len(counts) == 23  # 25 printed rows, model4 and model9 twice


def test_exercise3_compares_zero_one_and_two_shared_layers() -> None:
    body, _, _ = _study("exercise3.yaml")
    checked = {c.member.name: c.checked for c in check_sweep(body)}
    assert {n: c.spec.model.shared_layers for n, c in checked.items()} == {"shared0": 0, "shared1": 1, "shared2": 2}
    color = {n: c.plan.heads["color"].layers[0] for n, c in checked.items()}
    assert {n: (layer.kernel_size, layer.out_channels) for n, layer in color.items()} == {  # type: ignore[union-attr]
        "shared0": (16, 5), "shared1": (14, 5), "shared2": (12, 5)}  # fmt: skip
    digit = checked["shared0"].plan.heads["digit"]
    assert digit.params == 5306 + 2 * 8 * 9  # exercise 2's model4 on three input channels


def test_exercise4_has_the_mse_rows_and_the_gaussian_model() -> None:
    body, report, evaluate = _study("exercise4.yaml")
    checked = {c.member.name: c.checked for c in check_sweep(body)}
    assert len(checked) == 15  # 13 MSE rows, the Gaussian model, and it again serving its best epoch
    assert {c.spec.loss for n, c in checked.items() if not n.startswith("gaussian")} == {"mse"}
    gaussian = checked["gaussian"].spec
    assert gaussian.loss == "gaussian_nll"
    assert gaussian.model.sigma is not None
    assert gaussian.model.sigma.neurons == 20
    assert gaussian.model_dump(exclude={"name", "loss", "model"}) == checked["model11"].spec.model_dump(
        exclude={"name", "loss", "model"})  # fmt: skip
    assert checked["gaussian_best"].spec.model_dump(exclude={"name", "keep"}) == gaussian.model_dump(
        exclude={"name", "keep"})  # fmt: skip
    assert (gaussian.keep, checked["gaussian_best"].spec.keep) == ("last", "best")
    assert evaluate["rows"] == ["model11", "gaussian", "gaussian_best"]
    assert not math.isclose(checked["model0"].param_count, report["rows"]["model0"]["par"])  # see the file
