"""Torch threads per training process: one for the report's networks, dense or convolutional,
so two workers on two cores never oversubscribe them; the cores for large networks."""

from __future__ import annotations

import os

import yaml

from core.settings import Settings
from ml.spec import validate_spec
from worker.runner import choose_threads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _threads(spec: dict, **settings: object) -> int:
    checked = validate_spec(spec)
    return choose_threads(checked.spec.model_dump(mode="json"), checked.param_count, Settings(**settings))


def test_the_reports_networks_train_on_one_thread_each() -> None:
    for study in ("exercise1", "exercise2", "exercise3", "exercise4"):
        with open(os.path.join(ROOT, "studies", f"{study}.yaml")) as f:
            base = yaml.safe_load(f)["base"]
        assert _threads(base | {"name": study}) == 1, study


def test_large_networks_share_the_cores_and_the_setting_wins() -> None:
    big_mlp = {
        "name": "big",
        "dataset": {"name": "digits"},
        "model": {"type": "mlp", "hidden_layers": 2, "neurons": 1024},
        "loss": "ce",
    }
    cores = os.cpu_count() or 1
    assert _threads(big_mlp) == cores
    assert _threads(big_mlp, worker_concurrency=cores) == 1
    assert _threads(big_mlp, torch_threads=3) == 3
    cnn = {"name": "cnn", "dataset": {"name": "digits"}, "model": {"type": "cnn", "conv_layers": 2}, "loss": "ce"}
    assert _threads(cnn) == 1
