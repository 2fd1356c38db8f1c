"""Torch threads per training process: one for the report's networks, dense or convolutional,
so two workers on two cores never oversubscribe them; the cores for large networks. The rule is
`ml.cpu.thread_count`, which both `ml.train.train`/`train_group` and the worker use."""

from __future__ import annotations

import os

import torch
import yaml

from core.settings import Settings
from ml import cpu
from ml.spec import validate_spec
from ml.train import train
from worker.steps import thread_settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _threads(spec: dict, members: int = 1, **settings: object) -> int:
    checked = validate_spec(spec)
    given = thread_settings(Settings(**settings))  # what the worker passes to train()/train_group()
    return cpu.thread_count(checked, members, requested=given["threads"], processes=given["processes"])


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
    assert _threads(big_mlp) == cpu.CORES
    assert _threads(big_mlp, worker_concurrency=cpu.CORES) == 1
    assert _threads(big_mlp, torch_threads=3) == 3
    cnn = {"name": "cnn", "dataset": {"name": "digits"}, "model": {"type": "cnn", "conv_layers": 2}, "loss": "ce"}
    assert _threads(cnn) == 1


def test_the_limit_is_inclusive_and_counts_every_member_of_a_group() -> None:
    mlp = {"name": "m", "dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden_layers": 1, "neurons": 64}}
    checked = validate_spec(mlp | {"loss": "ce"})
    at_limit = cpu.SMALL_MODEL_PARAMS // checked.param_count
    assert cpu.thread_count(checked, at_limit) == 1
    assert cpu.thread_count(checked, at_limit + 1) == cpu.CORES


def test_convolutions_are_read_from_the_built_network() -> None:
    """The rule reads the network's plan (trunk and every head), not the raw spec."""
    dense = validate_spec({"name": "d", "dataset": {"name": "digits"}, "model": {"type": "mlp"}, "loss": "ce"})
    conv = validate_spec({"name": "c", "dataset": {"name": "digits"}, "model": {"type": "cnn"}, "loss": "ce"})
    assert not cpu.has_conv(dense)
    assert cpu.has_conv(conv)


def test_training_restores_the_process_thread_count() -> None:
    before = torch.get_num_threads()
    spec = {"name": "t", "dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden_layers": 1, "neurons": 8}}
    train(spec | {"loss": "ce", "epochs": 1}, threads=before + 1)
    assert torch.get_num_threads() == before
