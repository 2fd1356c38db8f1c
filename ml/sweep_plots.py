"""The sweep comparison: a validation metric (mean ± std over repeats) against the swept
parameter, as PNG bytes, and the choice of its axes from the sweep's request.

The x axis defaults to what the sweep varies: the one path its grid, random space or variants
change; with several, the first numeric path of a grid or random space, and the parameter count
for variants (which usually change the architecture several ways at once). The colour defaults
to the next varied path; a colour with one value is dropped. Torch-free: the API draws it from
the study table without loading a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ml.figures import figure, number_axis, place_labels, png, thin_tick_labels
from ml.plot_format import PlotError, is_learning_rate, is_number, log_scale, sig3

PARAMETERS = "parameters"  # the x (or colour) that is the network's parameter count
MISSING = object()  # a path that a spec does not have
MAX_TICKS = 12  # up to this many distinct x values, each is a tick
MAX_LEGEND = 8  # a numeric colour with more distinct values gets a colour bar instead of a legend


def swept_paths(request: Mapping[str, Any]) -> list[str]:
    """The dotted paths a sweep's request varies, in request order: a grid's keys, a random
    space's keys, or every override key of the variants (first appearance first)."""
    if request.get("grid"):
        return list(request["grid"])
    if request.get("random"):
        return list(request["random"].get("space", {}))
    paths: list[str] = []
    for variant in request.get("variants") or []:
        paths += [k for k in variant if k != "name" and k not in paths]
    return paths


def value_at(spec: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of a (normalized) spec, or MISSING."""
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def varies(values: Sequence[Any]) -> bool:
    return len({_key(v) for v in values if v is not MISSING and v is not None}) > 1


def default_axes(request: Mapping[str, Any], specs: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """(x, colour) for a sweep whose rows have these specs: see the module's docstring."""
    varying = [p for p in swept_paths(request) if varies([value_at(s, p) for s in specs])]
    numeric = [p for p in varying if all(is_number(v) for s in specs if (v := value_at(s, p)) is not MISSING)]
    if len(varying) == 1:
        x = varying[0]
    elif not varying or request.get("variants"):
        x = PARAMETERS
    else:
        x = (numeric or varying)[0]
    color = next((p for p in varying if p != x), None)
    return x, color


@dataclass(frozen=True)
class Point:
    """One row of the sweep's table: its x, its colour value and its metric over repeats."""

    name: str
    x: Any
    y: float | None
    std: float | None = None
    color: Any = None


def _y(p: Point) -> float:
    return math.nan if p.y is None else float(p.y)


def _leaf(dimension: str) -> str:
    """How a legend names a path: its last part, with its parent when that part alone says little."""
    parts = dimension.split(".")
    return ".".join(parts[-2:]) if parts[-1] in {"name", "type", "params"} else parts[-1]


def _order(values: Sequence[Any]) -> list[Any]:
    """Distinct values: numbers ascending, anything else in order of first appearance."""
    distinct = list({_key(v): v for v in values}.values())
    return sorted(distinct) if all(is_number(v) for v in distinct) else distinct


def compare(points: Sequence[Point], **options: Any) -> bytes:
    """compare_figure as PNG bytes (800 x 500)."""
    return png(compare_figure(points, **options))


def compare_figure(
    points: Sequence[Point],
    *,
    x: str,
    metric: str,
    title: str,
    color: str | None = None,
    unit: str | None = None,
    repeats: int = 1,
    lines: bool = False,
    annotate: bool = False,
) -> Figure:
    """The metric of every row against `x`: error bars of ± one standard deviation over the
    repeats, a colour per value of `color` (a legend, or a colour bar for many numbers), a line
    through each colour's points when `lines` (a grid), row names when `annotate` (variants),
    placed where they overprint nothing. x (and y) are logarithmic for a learning rate or
    positive values spanning more than two decades."""
    usable = [p for p in points if p.y is not None and math.isfinite(p.y) and p.x is not MISSING and p.x is not None]
    if not usable:
        raise PlotError(f"no row of this sweep has {metric} yet")
    if color is not None and not varies([p.color for p in usable]):
        color = None  # one value says nothing: no legend for it
    numeric_x = all(is_number(p.x) for p in usable)
    categories = [] if numeric_x else _order([p.x for p in usable])
    fig = figure((8.0, 5.0))
    ax = fig.subplots()
    x_log = numeric_x and all(p.x > 0 for p in usable) and (is_learning_rate(x) or log_scale(p.x for p in usable))

    slots = {_key(c): i for i, c in enumerate(categories)}  # categorical x: value -> position

    def position(p: Point, dodge: float = 0.0) -> float:
        return float(p.x) if numeric_x else slots[_key(p.x)] + dodge

    drawn: dict[int, float] = {}  # id(point) -> where its marker is on x
    groups = _order([p.color for p in usable]) if color is not None else [None]
    continuous = color is not None and len(groups) > MAX_LEGEND and all(is_number(g) for g in groups)
    if continuous:
        assert color is not None
        norm = LogNorm() if is_learning_rate(color) or log_scale(groups) else Normalize()
        xs, ys = [drawn.setdefault(id(p), position(p)) for p in usable], [_y(p) for p in usable]
        stds = [p.std or 0.0 for p in usable]
        if any(stds):
            ax.errorbar(xs, ys, yerr=stds, fmt="none", ecolor="0.6", capsize=2, zorder=1)
        dots = ax.scatter(xs, ys, c=[float(p.color) for p in usable], cmap="viridis", norm=norm, zorder=2)
        bar = fig.colorbar(dots, ax=ax, label=_leaf(color))
        number_axis(bar.ax.yaxis)
    else:
        width = 0.5 / len(groups)  # categorical x: the colours side by side within a category
        for i, value in enumerate(groups):
            mine = sorted((p for p in usable if color is None or _key(p.color) == _key(value)), key=position)
            dodge = 0.0 if numeric_x else (i - (len(groups) - 1) / 2) * width
            stds = [p.std or 0.0 for p in mine]
            ax.errorbar([drawn.setdefault(id(p), position(p, dodge)) for p in mine], [_y(p) for p in mine],
                        yerr=stds if any(stds) else None, fmt="o-" if lines and numeric_x else "o",
                        color=f"C{i % 10}", capsize=3, ms=5, lw=1,
                        label=None if color is None else f"{_leaf(color)}={sig3(value)}")  # fmt: skip
        if color is not None:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if x_log:
        ax.set_xscale("log")
    if log_scale(_y(p) for p in usable):
        ax.set_yscale("log")
    if metric.startswith("val_accuracy"):
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    else:
        number_axis(ax.yaxis)
    spread = f"mean ± std over {repeats} seeds" if repeats > 1 else ""
    what = f"{metric} ({unit})" if unit else metric
    ax.set_ylabel(f"{what}\n{spread}" if spread else what)
    ax.set_xlabel(x + (" (log scale)" if x_log else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if numeric_x:
        ticks = _order([p.x for p in usable])
        if len(ticks) <= MAX_TICKS:
            thin_tick_labels(fig, ax, [float(t) for t in ticks], [sig3(t) for t in ticks])
        else:
            number_axis(ax.xaxis)
    else:
        thin_tick_labels(fig, ax, list(range(len(categories))), [sig3(c) for c in categories])
    if annotate:
        best = max if metric.startswith("val_accuracy") else min
        first = best(usable, key=_y)
        ordered = [first, *(p for p in usable if p is not first)]
        place_labels(fig, ax, [(drawn[id(p)], _y(p), p.name) for p in ordered])
    return fig
