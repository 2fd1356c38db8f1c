"""The sweep comparison: its x from the sweep's request, its scales, legend numbers, error bars,
a colour with one value dropped, and labels that never overprint."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from ml import sweep_plots
from ml.figures import place_labels
from ml.plot_format import PlotError
from ml.spec import validate_spec
from ml.sweep_plots import PARAMETERS, Point, compare, compare_figure, default_axes, swept_paths
from ml.sweeps import expand
from tests.ml.test_plots import assert_picture, legend_texts

BASE: dict[str, Any] = {
    "dataset": {"name": "spirals", "params": {"n_samples": 200}},
    "model": {"hidden_layers": 2, "neurons": 16},
    "optimizer": {"name": "sgd", "lr": 0.01},
    "epochs": 5,
}


def row_specs(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored (normalized) spec of each row's first member, as the API reads them."""
    members = [m for m in expand(request) if m.repeat == 0]
    return [validate_spec(m.spec).spec.model_dump(mode="json") for m in members]


def axes_of(request: dict[str, Any]) -> tuple[str, str | None]:
    return default_axes(request, row_specs(request))


def test_x_is_the_one_path_a_grid_random_space_or_variants_vary() -> None:
    grid = {"base": BASE, "grid": {"optimizer.lr": [0.003, 0.01, 0.03, 0.1, 0.3]}, "repeats": 5}
    assert swept_paths(grid) == ["optimizer.lr"]
    assert axes_of(grid) == ("optimizer.lr", None)
    space = {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}, "model.neurons": {"choice": [8, 16, 32]}}
    random_search = {"base": BASE, "random": {"samples": 12, "seed": 3, "space": space}}
    assert swept_paths(random_search) == ["optimizer.lr", "model.neurons"]
    assert axes_of(random_search) == ("optimizer.lr", "model.neurons")
    variants = {"base": BASE, "variants": [{"name": "relu"}, {"name": "tanh", "model.activation": "tanh"}]}
    assert swept_paths(variants) == ["model.activation"]
    assert axes_of(variants) == ("model.activation", None)  # a categorical x


def test_with_several_swept_paths_x_is_the_first_numeric_one_or_the_parameter_count() -> None:
    grid = {"base": BASE, "grid": {"model.activation": ["relu", "tanh"], "optimizer.lr": [0.01, 0.1]}}
    assert axes_of(grid) == ("optimizer.lr", "model.activation")
    # A path given one value does not vary: the other is the swept one.
    fixed = {"base": BASE, "grid": {"optimizer.lr": [0.01], "model.neurons": [8, 16, 32]}}
    assert axes_of(fixed) == ("model.neurons", None)
    # Variants that change the architecture several ways at once compare by size, as the report does.
    variants = {"base": BASE, "variants": [
        {"name": "model0", "model.hidden_layers": 1, "model.neurons": 10, "epochs": 10},
        {"name": "model4"},
        {"name": "model7", "model.activation": "sigmoid"},
    ]}  # fmt: skip
    assert swept_paths(variants) == ["model.hidden_layers", "model.neurons", "epochs", "model.activation"]
    assert axes_of(variants) == (PARAMETERS, "model.hidden_layers")
    # A variant that repeats the base varies nothing: the parameter count.
    assert axes_of({"base": BASE, "variants": [{"name": "a"}, {"name": "b"}]}) == (PARAMETERS, None)


def grid_points(repeats: int = 5) -> list[Point]:
    return [
        Point(f"lr={lr:g}", lr, 0.9 - 0.1 * abs(math.log10(lr) + 1.5), 0.02 if repeats > 1 else None)
        for lr in (0.003, 0.01, 0.03, 0.1, 0.3)
    ]


def test_a_learning_rate_grid_is_logarithmic_with_error_bars_and_its_values_as_ticks() -> None:
    fig = compare_figure(grid_points(), x="optimizer.lr", metric="val_accuracy", title="t", repeats=5, lines=True)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.003", "0.01", "0.03", "0.1", "0.3"]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert bars.has_yerr
    assert "mean ± std over 5 seeds" in ax.get_ylabel()
    assert ax.get_xlabel() == "optimizer.lr (log scale)"
    assert ax.get_legend() is None  # nothing to tell apart
    assert_picture(compare(grid_points(), x="optimizer.lr", metric="val_accuracy", title="t"), (800, 500))
    # One seed: no error bars.
    fig = compare_figure(grid_points(repeats=1), x="optimizer.lr", metric="val_accuracy", title="t")
    assert not any(c.has_yerr for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer))
    # Not a learning rate, within two decades: linear.
    neurons = [Point(f"n{n}", n, 0.8, None) for n in (8, 16, 32, 64)]
    assert compare_figure(neurons, x="model.neurons", metric="val_accuracy", title="t").axes[0].get_xscale() == "linear"
    sizes = [Point(f"m{n}", n, 0.8, None) for n in (41, 337, 8193)]
    assert compare_figure(sizes, x=PARAMETERS, metric="val_accuracy", title="t").axes[0].get_xscale() == "log"


def test_legend_numbers_have_three_significant_digits() -> None:
    points = [Point("a", 1, 0.5, None, 0.0015422826108604582), Point("b", 2, 0.6, None, 0.031234567)]
    fig = compare_figure(points, x="model.hidden_layers", metric="val_accuracy", title="t", color="optimizer.lr")
    labels = legend_texts(fig.axes[0])
    assert labels == ["lr=0.00154", "lr=0.0312"]
    named = [Point("a", 1, 0.5, None, "sgd"), Point("b", 2, 0.6, None, "adam")]
    fig = compare_figure(named, x="model.hidden_layers", metric="val_accuracy", title="t", color="optimizer.name")
    assert legend_texts(fig.axes[0]) == ["optimizer.name=sgd", "optimizer.name=adam"]


def test_many_numeric_colours_get_a_colour_bar_and_a_price_axis_its_unit() -> None:
    rng = random.Random(0)
    points = [Point(f"sample-{i}", 10 ** rng.uniform(-4, -1), rng.uniform(20_000, 50_000), None,
                    10 ** rng.uniform(-5, -2)) for i in range(20)]  # fmt: skip
    fig = compare_figure(points, x="optimizer.lr", metric="val_rmse", title="t", color="optimizer.weight_decay",
                         unit="USD")  # fmt: skip
    ax, bar = fig.axes
    assert ax.get_legend() is None
    assert bar.get_ylabel() == "weight_decay"
    assert ax.get_ylabel() == "val_rmse (USD)"
    fig.canvas.draw()
    assert any("," in t.get_text() for t in ax.get_yticklabels())  # 25,000, not 25000 or 2.5e4


def test_a_colour_with_one_value_is_dropped() -> None:
    one = [Point(p.name, p.x, p.y, p.std, "relu") for p in grid_points()]
    drawn = compare(one, x="optimizer.lr", metric="val_accuracy", title="t", color="model.activation")
    assert drawn == compare(grid_points(), x="optimizer.lr", metric="val_accuracy", title="t")
    fig = compare_figure(one, x="optimizer.lr", metric="val_accuracy", title="t", color="model.activation")
    assert fig.axes[0].get_legend() is None


def test_a_categorical_x_puts_each_value_at_a_tick() -> None:
    points = [Point(f"{a}-{n}", a, 0.8 + n / 1000, 0.01, n) for a, n in itertools.product(["relu", "tanh"], [8, 16])]
    fig = compare_figure(points, x="model.activation", metric="val_accuracy", title="t", color="model.neurons")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["relu", "tanh"]
    assert legend_texts(ax) == ["neurons=8", "neurons=16"]
    # Each colour's points beside the other's within a category, not on top of them.
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    xs = [[float(v) for v in np.asarray(c.lines[0].get_xdata())] for c in bars]
    assert len(xs) == 2
    assert all(x0 < x1 for x0, x1 in zip(xs[0], xs[1], strict=True))
    assert all(abs(a - b) < 0.5 for a, b in zip(xs[0], xs[1], strict=True))


def test_no_measured_row_is_refused() -> None:
    with pytest.raises(PlotError, match="no row"):
        compare([Point("a", 0.01, None)], x="optimizer.lr", metric="val_accuracy", title="t")


def test_row_labels_never_overprint_one_another() -> None:
    """Variants crowded around the same size (the report's exercise 1 has many rows of 337 parameters):
    the labels kept stay inside the axes, off the points, and apart; the others are left out."""
    rng = random.Random(1)
    spread = [Point(f"model{i}", n, rng.uniform(0.5, 1.0), None) for i, n in enumerate([41, 129, 2049, 8193, 1185])]
    crowd = [Point(f"model{i}", 337, rng.uniform(0.80, 0.82), None) for i in range(5, 17)]  # within 5 pixels
    points = spread + crowd
    fig = compare_figure(points, x=PARAMETERS, metric="val_accuracy", title="t")
    ax = fig.axes[0]
    notes = place_labels(fig, ax, [(float(p.x), float(p.y or 0), p.name) for p in points])
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [n.get_window_extent(renderer) for n in notes]
    assert len(spread) < len(boxes) < len(points)  # the crowd's labels cannot all fit: some are left out
    inside = ax.get_window_extent(renderer)
    for i, box in enumerate(boxes):
        assert inside.x0 <= box.x0 <= box.x1 <= inside.x1
        assert inside.y0 <= box.y0 <= box.y1 <= inside.y1
        assert not any(box.overlaps(other) for other in boxes[i + 1 :]), notes[i].get_text()
        for p in points:
            px, py = ax.transData.transform((float(p.x), float(p.y or 0)))
            assert not box.contains(px, py), (notes[i].get_text(), p.name)
    # compare() labels the variants itself, the best row first.
    fig = compare_figure(points, x=PARAMETERS, metric="val_accuracy", title="t", annotate=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    best = max(points, key=lambda p: p.y or 0)
    assert texts[0] == best.name
    assert len(spread) < len(texts) < len(points)


def test_crowded_tick_values_keep_only_labels_that_fit() -> None:
    points = [Point(f"n{n}", n, 0.8, None) for n in (8, 9, 10, 11, 12, 1000)]  # within 2 decades: linear
    fig = compare_figure(points, x="model.neurons", metric="val_accuracy", title="t")
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert shown[0] == "8"
    assert shown[-1] == "1,000"
    assert "" in shown  # 9 .. 12 sit on top of 8
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_value_at_reads_a_dotted_path() -> None:
    spec = {"optimizer": {"lr": 0.01}, "model": {"widths": [8, 4]}}
    assert sweep_plots.value_at(spec, "optimizer.lr") == 0.01
    assert sweep_plots.value_at(spec, "model.widths") == [8, 4]
    assert sweep_plots.value_at(spec, "optimizer.momentum") is sweep_plots.MISSING
    assert sweep_plots.value_at(spec, "optimizer.lr.x") is sweep_plots.MISSING


def test_users_text_is_drawn_as_it_is_never_as_markup() -> None:
    """Sweep, row and value names are users' text: a "$" pair is not mathtext (bad markup raised)."""
    points = [Point("a $\\frac{$", 1, 0.5, None, "$x"), Point("b", 2, 0.6, None, "y$")]
    options: dict[str, Any] = {"x": "model.neurons", "metric": "val_accuracy", "color": "model.activation"}
    assert_picture(compare(points, title="price $\\frac{$ sweep", annotate=True, **options), (800, 500))
    fig = compare_figure(points, title="t", annotate=True, **options)
    assert "a $\\frac{$" in [t.get_text() for t in fig.axes[0].texts]
