"""What every picture shares, on matplotlib's object API (no pyplot state, so concurrent requests
never share a figure): a figure of a known pixel size, its PNG bytes, number ticks written as
`sig3` writes them, and text labels placed so that they never overprint one another."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.ticker import FuncFormatter, NullFormatter
from matplotlib.transforms import Bbox

from ml.plot_format import sig3

# Every text in a picture may be a user's (experiment, sweep and row names, CSV columns, class
# labels): never parse it as mathtext, where a "$" pair is markup and bad markup an exception.
# No picture uses mathtext itself (σ, μ and ± are plain characters; ticks are written by sig3).
matplotlib.rcParams["text.parse_math"] = False

DPI = 100  # a figure of (8, 5) inches is 800 x 500 pixels
# Where a point's label may go, in points from the point, tried in order: (dx, dy, ha, va).
LABEL_OFFSETS = ((4, 4, "left", "bottom"), (4, -4, "left", "top"), (-4, 4, "right", "bottom"),
                 (-4, -4, "right", "top"))  # fmt: skip
MARKER_PX = 4  # half the side of the square each data point keeps free of labels


def figure(size: tuple[float, float]) -> Figure:
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def number_axis(axis: Any) -> None:
    """Major ticks as sig3 writes numbers (thousands separators, 3 significant digits); no minor labels."""
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: sig3(float(v))))
    axis.set_minor_formatter(NullFormatter())


def freeze_layout(fig: Figure) -> RendererAgg:
    """Lay the figure out once and keep that layout, so boxes measured now are where the PNG
    draws them (constrained layout would move the axes again when the figure is saved)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    fig.set_layout_engine("none")
    return canvas.get_renderer()


def _free(box: Bbox, inside: Bbox, taken: Sequence[Bbox]) -> bool:
    within = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    return within and not any(box.overlaps(other) for other in taken)


def place_labels(
    fig: Figure, ax: Axes, labels: Sequence[tuple[float, float, str]], *, fontsize: float = 7
) -> list[Annotation]:
    """Label data points (x, y, text) in the given order (the first get a place first): each at
    the first of LABEL_OFFSETS where it stays inside the axes and overlaps neither a kept label
    nor a data point; a label with no such place is left out. Returns the labels kept."""
    renderer = freeze_layout(fig)
    inside = ax.get_window_extent(renderer)
    to_pixels = ax.transData.transform
    taken: list[Bbox] = []
    for x, y, _ in labels:
        px, py = to_pixels((x, y))
        taken.append(Bbox.from_extents(px - MARKER_PX, py - MARKER_PX, px + MARKER_PX, py + MARKER_PX))
    kept: list[Annotation] = []
    for x, y, text in labels:
        for dx, dy, ha, va in LABEL_OFFSETS:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               ha=ha, va=va, color="0.25")  # fmt: skip
            box = note.get_window_extent(renderer)
            if _free(box, inside, taken):
                taken.append(box)
                kept.append(note)
                break
            note.remove()
    return kept


def thin_tick_labels(fig: Figure, ax: Axes, values: Sequence[float], labels: Sequence[str]) -> list[str]:
    """Ticks at `values` labelled `labels`, blanking each label that would overprint the last one
    shown (crowded values on a linear axis). Returns the labels drawn ('' where blanked)."""
    ax.set_xticks(list(values), labels=list(labels))
    ax.xaxis.set_minor_formatter(NullFormatter())
    renderer = freeze_layout(fig)
    shown: list[str] = []
    last: Bbox | None = None
    for text in ax.get_xticklabels():
        box = text.get_window_extent(renderer).expanded(1.1, 1.0)
        if last is not None and box.overlaps(last):
            shown.append("")
            continue
        shown.append(text.get_text())
        last = box
    ax.set_xticks(list(values), labels=shown)
    return shown
