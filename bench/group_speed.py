"""25 experiments of the report's exercise 1 model4 (5 learning rates x 5 seeds), trained three
ways in one run: 25 plain PyTorch loops (DataLoader, nn.Module, torch.optim), 25 labtrain
`train()` calls one after another, and one `train_group()` of all 25.

    .venv/bin/python -m bench.group_speed [--epochs 200]

The ratios are what matter (same machine, same run); the per-member validation accuracies of
the group equal the single runs' (printed as the largest difference).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.train_speed import plain_loop
from ml.group import train_group
from ml.train import train

BASE = {
    "dataset": {"name": "spirals", "params": {"n_samples": 1000}},
    "model": {"hidden_layers": 2, "neurons": 16},
    "loss": "mse",
    "batch_size": 10,
}
LRS = (0.003, 0.01, 0.03, 0.1, 0.3)


def specs(epochs: int) -> list[dict]:
    return [
        {**BASE, "epochs": epochs, "seed": s, "optimizer": {"name": "sgd", "lr": lr}} for s in range(5) for lr in LRS
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    runs = specs(args.epochs)
    train(runs[0] | {"epochs": 1})  # warm the dataset cache and imports for every method alike
    torch.set_num_threads(1)

    start = time.perf_counter()
    for spec in runs:
        plain_loop(spec)
    plain = time.perf_counter() - start

    start = time.perf_counter()
    alone = [train(spec) for spec in runs]
    sequential = time.perf_counter() - start

    start = time.perf_counter()
    grouped = train_group(runs)
    group = time.perf_counter() - start

    diff = max(
        abs(g.history[-1].metrics["val_accuracy"] - a.history[-1].metrics["val_accuracy"])
        for g, a in zip(grouped, alone, strict=True)
    )
    steps = sum(len(h) for h in [range(60 * args.epochs)] * len(runs))
    print(f"25 x ex1 model4, {args.epochs} epochs ({steps:,} model-steps)")
    print("| method | seconds | model-steps/s | speed-up vs plain loops |")
    print("|---|---|---|---|")
    for name, seconds in [("25 plain PyTorch loops", plain), ("25 x labtrain train()", sequential),
                          ("labtrain train_group() of 25", group)]:  # fmt: skip
        print(f"| {name} | {seconds:.1f} | {steps / seconds:,.0f} | {plain / seconds:.1f}x |")
    print(f"group vs train() one after another: {sequential / group:.1f}x; largest val accuracy difference: {diff:.4f}")


if __name__ == "__main__":
    main()
