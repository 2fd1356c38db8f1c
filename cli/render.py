"""How the `labtrain` commands show things: numbers by their kind (accuracy as a percentage, RMSE
in the target's units), experiments and study tables as Rich tables, and a run followed live
(a progress bar on a terminal, one line per epoch otherwise, for logs and scripts)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from labtrain import TERMINAL, Client, Event, Sweep

NOT_METRICS = {"epoch", "train_loss", "val_loss", "seconds"}


def format_value(key: str, value: Any, std: Any = None) -> str:
    """A cell: accuracies as percentages, losses to 4 decimals, large values with separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "✓" if value else ""
    if isinstance(value, list):
        return ", ".join(format_value(key, v) for v in value)
    if (
        not isinstance(value, float | int)
        or key in ("epoch", "bs", "ep", "par", "n", "label")
        or key.endswith(".label")
    ):
        return f"{value:,}" if key == "par" and isinstance(value, int) else str(value)
    leaf = key.rsplit(".", 1)[-1]
    if "accuracy" in key:
        return f"{100 * value:.1f}%" if std is None else f"{100 * value:.1f} ± {100 * std:.1f}%"
    if leaf.startswith("p_") or leaf == "p(label)":
        return f"{value:.3f}"
    if "loss" in key:
        return f"{value:.4f}"
    if key == "seconds":
        return f"{value:.3f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}" if std is None else f"{value:,.0f} ± {std:,.0f}"
    return f"{value:.4g}" if std is None else f"{value:.4g} ± {std:.2g}"


def metric_summary(metrics: dict[str, Any] | None) -> str:
    """`val_accuracy 97.5% (epoch 12)` from a latest/best metrics object."""
    if not metrics:
        return "-"
    shown = [f"{k} {format_value(k, v)}" for k, v in metrics.items() if k not in NOT_METRICS]
    epoch = f" (epoch {metrics['epoch']})" if "epoch" in metrics else ""
    return ", ".join(shown) + epoch if shown else "-"


def experiment_table(e: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows = [
        ("id", e["id"]),
        ("name", e["name"]),
        ("status", e["status"] + (f": {e['error']}" if e.get("error") else "") + _ahead(e)),
        ("task", e["task"]),
        ("parameters", f"{e['param_count']:,}"),
        ("epochs", f"{e['epochs_done']}/{e['spec']['epochs']}"),
        ("latest", metric_summary(e["metrics"]["latest"])),
        ("best", metric_summary(e["metrics"]["best"])),
        ("served", metric_summary(e["metrics"].get("served"))),
        ("test evaluations", str(e["test_evaluations"])),
        ("device", e.get("device") or "-"),
        ("worker", f"{e.get('worker') or '-'} (attempt {e.get('attempt', 0)})"),
        ("sweep", e.get("sweep_id") or "-"),
        ("tags", escape(", ".join(e.get("tags") or [])) or "-"),
        ("notes", escape(e.get("notes") or "-")),
        ("created", _time(e["created_at"])),
        ("started", _time(e.get("started_at"))),
        ("finished", _time(e.get("finished_at"))),
        ("training time", "-" if e.get("train_seconds") is None else f"{e['train_seconds']:.1f} s"),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _ahead(e: dict[str, Any]) -> str:
    """`, 3 ahead on the cpu queue` for a queued experiment (nothing once a worker has it)."""
    position = e.get("queue_position")
    if e.get("status") != "queued" or position is None:
        return ""
    return f", {position} ahead on the {e.get('queue', '?')} queue"


def _time(value: str | None) -> str:
    return "-" if not value else value[:19].replace("T", " ") + " UTC"


def sweep_table(data: dict[str, Any]) -> Table:
    """The study table: metrics as mean ± std over repeats; `*` and bold on the best row."""
    rows = data["rows"]
    hidden = {"best", "experiment_ids"} | {c for c in data["columns"] if c.endswith(("_mean", "_std"))}
    if all((r.get("n") or 0) <= 1 for r in rows):
        hidden.add("n")
    if not any(r.get("test_evaluations") for r in rows):
        hidden.add("test_evaluations")
    columns = [c for c in data["columns"] if c not in hidden]
    grid = Table(*columns, title=f"{data['name']} ({data['status']})", box=None)
    for row in rows:
        cells = [format_value(c, row.get(c), row.get(f"{c}_std")) for c in columns]
        cells[0] = f"{cells[0]} *" if row.get("best") else cells[0]
        grid.add_row(*cells, style="bold" if row.get("best") else None)
    return grid


# -- a run followed live ---------------------------------------------------------------------------


class EpochClock:
    """Time left: the slower of the recent epochs' own durations (`seconds`) and the pace at which
    their events arrived (which includes the worker's writes; a replay of stored epochs arrives in
    a burst and so never makes the estimate shorter)."""

    def __init__(self, window: int = 20) -> None:
        self.seen: deque[tuple[float, int, float]] = deque(maxlen=window)

    def add(self, epoch: int, seconds: float) -> None:
        self.seen.append((time.monotonic(), epoch, seconds))

    def left(self, total: int) -> float | None:
        if not self.seen:
            return None
        per_epoch = sum(s for _, _, s in self.seen) / len(self.seen)
        (t0, e0, _), (t1, e1, _) = self.seen[0], self.seen[-1]
        if e1 > e0:
            per_epoch = max(per_epoch, (t1 - t0) / (e1 - e0))
        return max(total - e1, 0) * per_epoch


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "<1s"
    seconds = round(seconds)
    return f"~{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"~{seconds}s"


def epoch_stats(data: dict[str, Any]) -> str:
    """`loss 0.4123  val_accuracy 81.0%`: the training loss and the validation metrics."""
    parts = [f"loss {format_value('train_loss', data.get('train_loss'))}"]
    parts += [f"{k} {format_value(k, v)}" for k, v in data.items() if k not in NOT_METRICS and k.startswith("val_")]
    return "  ".join(parts)


def follow_experiment(client: Client, experiment_id: str, err: Console, out: Console) -> int:
    """Show the run's progress until it ends; returns the exit code (0 succeeded, 1 not, 130 Ctrl-C)."""
    experiment = client.experiment(experiment_id).data
    name, total, status = experiment["name"], int(experiment["spec"]["epochs"]), experiment["status"]
    clock = EpochClock()
    done = 0
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[stats]}"),
        TextColumn("[dim]{task.fields[left]}"),
        console=err,
        disable=not err.is_terminal,  # logs and pipes get one line per epoch instead
    )
    bar = progress.add_task(f"{name} {status}{_ahead(experiment)}", total=total, stats="", left="")
    if not err.is_terminal and status == "queued":
        err.print(f"status queued{_ahead(experiment)}")
    say = progress.console.print if err.is_terminal else err.print

    def on_reconnect(attempt: int, reason: str) -> None:
        say(f"[yellow]{reason}: reconnecting (attempt {attempt}) after epoch {done}[/]")

    try:
        with progress:
            for event in client.events(experiment_id, on_reconnect=on_reconnect):
                if event.kind == "epoch":
                    done = int(event.data.get("epoch", done))
                    clock.add(done, float(event.data.get("seconds") or 0.0))
                    eta = clock.left(total)
                    left = "" if eta is None else f"{_duration(eta)} left"
                    progress.update(bar, completed=done, stats=epoch_stats(event.data), left=left)
                    if not err.is_terminal:
                        err.print(f"epoch {done}/{total}  {epoch_stats(event.data)}  {left}".rstrip())
                else:
                    status, total = _on_status(event, total)
                    finished = status == "succeeded"
                    progress.update(bar, description=f"{name} {status}", total=done if finished else total,
                                    left="" if status in TERMINAL else progress.tasks[0].fields["left"])  # fmt: skip
                    if not err.is_terminal:
                        err.print(f"status {status} ({done}/{total} epochs)")
    except KeyboardInterrupt:
        err.print(f"the run goes on: labtrain watch {experiment_id}")
        return 130
    final = client.experiment(experiment_id).data
    line = f"{final['id']} {final['name']}: {final['status']} after {final['epochs_done']} epochs"
    if final["metrics"]["best"]:
        line += f"; best {metric_summary(final['metrics']['best'])}"
    out.print(line + (f"; {final['error']}" if final.get("error") else ""), soft_wrap=True)
    return 0 if final["status"] == "succeeded" else 1


def _on_status(event: Event, total: int) -> tuple[str, int]:
    status = str(event.data.get("status", "?"))
    epochs = event.data.get("epochs")
    return status, int(epochs) if isinstance(epochs, int) and epochs > 0 else total


def follow_sweep(client: Client, sweep_id: str, err: Console, out: Console) -> int:
    """Show how many members ended until all have, then the study table; 0 finished, 1 cancelled."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} ended"),
        TextColumn("{task.fields[counts]}"),
        console=err,
        disable=not err.is_terminal,
    )
    bar = progress.add_task(f"sweep {sweep_id}", total=None, counts="")
    last: list[str] = []

    def on_progress(sweep: Sweep) -> None:
        counts = sweep.data["counts"]
        ended = sum(n for s, n in counts.items() if s not in ("queued", "running"))
        text = ", ".join(f"{n} {s}" for s, n in counts.items())
        progress.update(bar, total=sum(counts.values()), completed=ended, counts=text)
        if not err.is_terminal and last != [text]:
            err.print(f"sweep {sweep_id}: {text}")
            last[:] = [text]

    try:
        with progress:
            sweep = client.sweep(sweep_id).wait(on_progress=on_progress, poll_interval=1.0)
    except KeyboardInterrupt:
        err.print(f"the sweep goes on: labtrain table {sweep_id}")
        return 130
    out.print(sweep_table(sweep.table_data()))
    return 0 if sweep.status == "finished" else 1
