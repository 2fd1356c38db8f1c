"""How plots write numbers and name things: pure helpers, no matplotlib, no torch, so the rules a
picture follows (3 significant digits, when an axis is logarithmic, which epoch is marked, the
dataset's units and wording) are tested on their own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Built-in datasets whose target has a unit and whose rows have a name of their own.
UNITS = {"house_prices": "USD"}
ROW_NOUNS = {"house_prices": "sales"}
LOG_DECADES = 2.0  # a positive series spanning more than this many decades gets a log axis


def sig3(value: Any) -> str:
    """A value as a legend or a tick shows it: floats to 3 significant digits with thousands
    separators (0.0015422826 → "0.00154", 154228.3 → "154,000"), integers exact (11,738),
    booleans lower-case, anything else compact JSON."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return f"{value:g}"
        if not 1e-4 <= abs(value) < 1e6:
            return f"{value:.3g}"
        rounded = float(f"{value:.3g}")
        return f"{rounded:,.0f}" if abs(rounded) >= 1000 else f"{rounded:.3g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def log_scale(values: Iterable[Any], *, decades: float = LOG_DECADES) -> bool:
    """True when every finite value is a positive number and they span more than `decades`
    decades (max / min > 10**decades): a linear axis would flatten all but the largest."""
    finite = [float(v) for v in values if is_number(v) and math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) > 10**decades


def y_scale(values: Iterable[Any], *, decades: float = LOG_DECADES) -> tuple[str, float]:
    """(scale, linthresh) of a value axis: "log" by log_scale; "symlog" when some value is not
    positive and the largest magnitude is more than `decades` decades above the median one (a
    negative NLL loss with a spike of 135,000: linear up to about the median magnitude, `linthresh`,
    logarithmic beyond); else "linear"."""
    finite = [float(v) for v in values if is_number(v) and math.isfinite(v)]
    if log_scale(finite, decades=decades):
        return "log", 0.0
    magnitudes = sorted(abs(v) for v in finite if v != 0)
    if not magnitudes or min(finite) > 0:
        return "linear", 0.0
    median = magnitudes[len(magnitudes) // 2]
    if magnitudes[-1] / median <= 10**decades:
        return "linear", 0.0
    return "symlog", 10 ** math.floor(math.log10(median))


def is_learning_rate(path: str) -> bool:
    leaf = path.rsplit(".", 1)[-1]
    return leaf in {"lr", "learning_rate"}


@dataclass(frozen=True)
class KeptEpoch:
    epoch: int
    label: str  # how the mark reads: "kept: epoch 156" or "best: epoch 156"


def kept_epoch(served: Mapping[str, Any] | None, best: Mapping[str, Any] | None) -> KeptEpoch | None:
    """The epoch to mark on learning curves: the served model's (`metrics.served`) when the
    experiment records it, else the best validation epoch so far; None before either exists."""
    for metrics, word in ((served, "kept"), (best, "best")):
        epoch = (metrics or {}).get("epoch")
        if isinstance(epoch, int | float) and not isinstance(epoch, bool):
            return KeptEpoch(int(epoch), f"{word}: epoch {int(epoch)}")
    return None


@dataclass(frozen=True)
class Wording:
    """How a regression dataset's values and rows are named on axes and legends."""

    unit: str | None  # "USD" for house prices; None when the data has no known unit
    rows: str  # what a row is: "sales" for house prices, "samples", "<upload> samples"

    def axis(self, what: str) -> str:
        """`what (unit)`, e.g. "Sale_Price (USD)"; just `what` without a unit or when `what`
        already names it (an upload's unit is its target column: "σ of progression")."""
        return f"{what} ({self.unit})" if self.unit and self.unit not in what else what


def wording(dataset: Mapping[str, Any], target: str | None = None) -> Wording:
    """The wording of a spec's `dataset` object: a built-in by its `name` (USD and "sales" for
    house_prices, "samples" otherwise), an upload (`id` set) by its target column (the unit) and
    its own name (given as `name` when the caller knows it)."""
    name = dataset.get("name")
    if dataset.get("id") is not None:
        return Wording(unit=target, rows=f"{name} samples" if name else "samples")
    return Wording(unit=UNITS.get(str(name)), rows=ROW_NOUNS.get(str(name), "samples"))


class PlotError(ValueError):
    """This plot does not apply to this experiment or sweep; the message says why."""
