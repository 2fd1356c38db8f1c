"""labtrain's `train()` and a group of one (`train_group([spec])`, the stacked engine at K = 1)
against a plain PyTorch loop (nn.Module + torch.optim + DataLoader) on the same data, the same
network and the same number of epochs, in one run (each side its best of `--repeats`).

    .venv/bin/python bench/train_speed.py            # the report's configurations
    .venv/bin/python bench/train_speed.py --quick    # fewer epochs, for a smoke run

Both sides use the same thread count (the one `train()` picks) and the same prepared split;
the figure that matters is the ratio of steps per second, measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from ml.cpu import thread_count
from ml.data import load_dataset, prepare
from ml.group import train_group
from ml.networks import build_network
from ml.objective import Objective
from ml.spec import validate_spec
from ml.train import train

CONFIGS = {
    "A: ex1 model4 (2-16-16-1 ReLU, SGD 0.01, batch 10)": {
        "dataset": {"name": "spirals", "params": {"n_samples": 1000}},
        "model": {"hidden_layers": 2, "neurons": 16}, "loss": "mse",
        "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 10, "epochs": 200,
    },
    "B: ex1 model22 (3x8 ReLU, BCE, Adam 0.01, batch 128)": {
        "dataset": {"name": "spirals", "params": {"n_samples": 3000, "noise": 0.1}, "split": {"val": 0.2, "test": 0.2}},
        "model": {"hidden_layers": 3, "neurons": 8}, "loss": "bce",
        "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 128, "epochs": 300,
    },
    "C: ex2 model4 (five 3x3 convs of 8 filters, SGD 0.01, batch 10)": {
        "dataset": {"name": "digits"},
        "model": {"type": "cnn", "conv_layers": 5, "filters": 8, "kernel_size": 3, "hidden_layers": 0},
        "loss": "ce", "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 10, "epochs": 4,
    },
    "D: ex4 full-batch regression (3x8 ReLU, Adam 0.01)": {
        "dataset": {"name": "house_prices"}, "model": {"hidden_layers": 3, "neurons": 8}, "loss": "mse",
        "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": "full", "epochs": 800,
    },
    "D2: ex4 with a Gaussian head (σ network 3x20)": {
        "dataset": {"name": "house_prices"}, "model": {"hidden_layers": 3, "neurons": 8, "sigma": {"neurons": 20}},
        "loss": "gaussian_nll", "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": "full", "epochs": 800,
    },
}  # fmt: skip

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}


def plain_loop(spec_dict: dict) -> tuple[float, int, dict[str, float]]:
    """The loop most tutorials write: a DataLoader over the tensors, zero_grad/backward/step."""
    checked = validate_spec(spec_dict)
    spec = checked.spec
    norm, splits = prepare(spec, load_dataset(spec), torch.device("cpu"))
    train_split, val = splits["train"], splits["val"]
    (target,) = [t.name for t in checked.info.targets] if len(checked.info.targets) == 1 else [None]
    network = build_network(checked.plan, seed=spec.seed)
    optimizer = OPTIMIZERS[spec.optimizer.name](network.parameters(), lr=spec.optimizer.lr)
    objective = Objective(checked.info, spec.loss, norm.y_std)
    batch = len(train_split) if spec.batch_size == "full" else spec.batch_size
    loader = DataLoader(TensorDataset(train_split.x, train_split.y[target]), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(spec.seed))  # fmt: skip
    steps = 0
    start = time.perf_counter()
    for _ in range(spec.epochs):
        network.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = objective.loss(network(xb), {target: yb})
            loss.backward()
            optimizer.step()
            steps += 1
        network.eval()
        with torch.no_grad():
            objective.metrics(network(val.x), val.y)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        metrics = objective.metrics(network(val.x), val.y)
    return seconds, steps, metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tenth of the epochs")
    parser.add_argument("--only", default="", help="run configs whose name starts with this")
    parser.add_argument("--repeats", type=int, default=3, help="each side's best of this many")
    args = parser.parse_args()
    print(
        "| config | threads | plain loop steps/s | train() steps/s | group of one steps/s "
        "| train() / plain | group of one / train() | plain val | train() val | group of one val |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, spec in CONFIGS.items():
        if not name.startswith(args.only):
            continue
        if args.quick:
            spec = {**spec, "epochs": max(1, spec["epochs"] // 10)}
        threads = thread_count(validate_spec(spec))
        plain_s = ours_s = group_s = float("inf")
        for _ in range(args.repeats):  # interleaved, so a busy moment of the machine hits all three
            torch.set_num_threads(threads)
            torch.backends.mkldnn.enabled = True  # the plain loop runs with PyTorch's defaults
            seconds, steps, plain_m = plain_loop(spec)
            plain_s = min(plain_s, seconds)
            ours = train(spec)  # picks the same thread count; its own settings for the run
            ours_s = min(ours_s, sum(h.seconds for h in ours.history))
            group = train_group([spec])[0]
            group_s = min(group_s, sum(h.seconds for h in group.history))
        key = "val_accuracy" if "val_accuracy" in plain_m else "val_rmse"
        print(
            f"| {name} | {threads} | {steps / plain_s:,.0f} | {steps / ours_s:,.0f} | {steps / group_s:,.0f} "
            f"| {plain_s / ours_s:.2f}x | {ours_s / group_s:.2f}x "
            f"| {plain_m[key]:.4g} | {ours.history[-1].metrics[key]:.4g} | {group.history[-1].metrics[key]:.4g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
