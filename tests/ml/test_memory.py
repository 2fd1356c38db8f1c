"""The training-memory estimate (ml.memory): its terms on specs whose numbers are worked by hand,
the refusal above LABTRAIN_MAX_RUN_MEMORY_BYTES at the field to change, the report's specs
accepted under the default, and the group budget using the same estimate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings
from ml.grouping import member_bytes
from ml.memory import activation_floats, optimizer_copies, training_memory
from ml.spec import SpecInvalid, validate_spec
from ml.sweeps import check_sweep

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIMIT = Settings().max_run_memory_bytes


def spirals(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": {"name": "spirals", "params": {"n_samples": 1000}},
        "model": {"hidden_layers": 2, "neurons": 8},
        "optimizer": {"name": "adam", "lr": 0.01},
        "batch_size": 32,
    }
    return spec | overrides


def test_each_term_of_a_small_mlp_is_worked_by_hand() -> None:
    checked = validate_spec(spirals())
    # 2 → 8 → 8 → 1: 24 + 72 + 9 = 105 parameters; every layer's outputs: 8 + 8 + 1 = 17 a row.
    assert checked.param_count == 105
    assert activation_floats(checked.plan) == 17
    m = training_memory(checked.spec, checked.info, checked.plan)
    # parameters, gradients, Adam's two buffers, the best and last finite weights: 6 copies.
    assert m.state == 6 * 105 * 4
    assert m.batch == 32
    assert m.activations == 2 * 32 * 17 * 4
    assert m.data == 1000 * (2 + 1) * 4  # every split: 2 features and 1 target per row
    assert m.total == m.state + m.activations + m.data


def test_a_full_batch_is_the_training_split_and_the_optimizer_sets_the_state() -> None:
    checked = validate_spec(spirals(batch_size="full", optimizer={"name": "sgd", "lr": 0.1}))
    m = training_memory(checked.spec, checked.info, checked.plan)
    assert m.batch == 600  # 1000 rows, 20% validation, 20% test
    assert m.state == 4 * 105 * 4  # plain SGD keeps no buffer
    assert optimizer_copies("sgd", 0.9) == 1
    assert optimizer_copies("rmsprop", None) == 1
    assert optimizer_copies("rmsprop", 0.9) == 2
    assert optimizer_copies("adamw", None) == 2


def test_convolutions_count_their_outputs_before_and_after_pooling() -> None:
    spec = {
        "dataset": {"name": "digits", "params": {"n_samples": 200}},
        "model": {"type": "cnn", "conv_layers": 1, "filters": 4, "kernel_size": 5, "pool": 2, "hidden_layers": 0},
    }
    checked = validate_spec(spec)
    # 1×16×16 → 4×12×12 (576) → pooled 4×6×6 (144) → 10 outputs.
    assert activation_floats(checked.plan) == 576 + 144 + 10


def test_the_reports_bomb_is_refused_naming_the_limit_and_the_field() -> None:
    bomb = {
        "dataset": {"name": "spirals", "params": {"n_samples": 1_000_000}},
        "model": {"widths": [65536]},
        "batch_size": "full",
        "epochs": 1,
    }
    with pytest.raises(SpecInvalid) as caught:
        validate_spec(bomb, max_run_memory_bytes=DEFAULT_LIMIT)
    (error,) = caught.value.errors
    assert error["loc"] == ["batch_size"]
    assert error["type"] == "too_much_memory"
    assert "LABTRAIN_MAX_RUN_MEMORY_BYTES" in error["msg"]
    assert "8.0 GiB" in error["msg"]
    assert "a batch of 600,000 rows" in error["msg"]
    # 600,000 rows × (65,536 + 1) outputs × 2 × 4 bytes ≈ 293 GiB: the estimate says so.
    assert "293." in error["msg"]
    # Without a limit (ml.train in a notebook) nothing is refused; a smaller batch fits.
    assert validate_spec(bomb).param_count == 2 * 65536 + 65536 + 65536 + 1
    assert validate_spec({**bomb, "batch_size": 256}, max_run_memory_bytes=DEFAULT_LIMIT).spec.batch_size == 256


def test_a_huge_dataset_is_located_at_the_dataset() -> None:
    spec = spirals(dataset={"name": "spirals", "params": {"n_samples": 1_000_000}})
    with pytest.raises(SpecInvalid) as caught:
        validate_spec(spec, max_run_memory_bytes=10 * 2**20)  # the data alone is 11.4 MiB
    assert caught.value.errors[0]["loc"] == ["dataset"]


def _studies() -> list[Path]:
    return sorted((ROOT / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", _studies(), ids=lambda p: p.name)
def test_every_study_of_the_report_fits_the_default_limit(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    body.pop("report", None)
    body.pop("evaluate", None)
    checked = check_sweep(body, max_run_memory_bytes=DEFAULT_LIMIT)
    assert checked
    assert max(member_bytes(c.checked) for c in checked) < DEFAULT_LIMIT


@pytest.mark.parametrize("name", ["model22.json", "model22.yaml"])
def test_the_examples_fit_the_default_limit(name: str) -> None:
    text = (ROOT / "examples" / name).read_text()
    spec = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    assert validate_spec(spec, max_run_memory_bytes=DEFAULT_LIMIT).param_count > 0


def test_the_group_budget_uses_the_same_estimate() -> None:
    checked = validate_spec(spirals(batch_size="full"))
    assert member_bytes(checked) == training_memory(checked.spec, checked.info, checked.plan).total
