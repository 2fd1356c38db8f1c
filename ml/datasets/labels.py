"""Targets of uploaded datasets: numbers or text → class indices (with their classes) or values,
refusing what cannot be learned (a constant target, a class too small to be split)."""

from __future__ import annotations

import re

import numpy as np

from ml.datasets.base import MAX_TEXT_CHARS, DatasetError, Task, excerpt

MIN_ROWS = 10
MAX_CLASSES_FOR_INTEGERS = 20  # an integer-valued numeric target with more values is a regression
# Control characters (C0, DEL, C1): refused in names stored as JSON (PostgreSQL's JSON refuses NUL).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def task_of(classes: tuple[str, ...] | None) -> Task:
    if classes is None:
        return "regression"
    return "binary" if len(classes) == 2 else "multiclass"


def check_rows(n: int, what: str) -> None:
    if n < MIN_ROWS:
        raise DatasetError(f"{what} has {n} rows; at least {MIN_ROWS} are needed")


def check_name(name: str, what: str) -> None:
    """A column or class name kept in the dataset's description: short, no control characters."""
    if len(name) > MAX_TEXT_CHARS:
        raise DatasetError(f"{what} {excerpt(name, 40)!r} is longer than {MAX_TEXT_CHARS} characters")
    bad = CONTROL.search(name)
    if bad is not None:
        raise DatasetError(
            f"{what} {excerpt(name, 40)!r} holds a control character (U+{ord(bad.group()):04X}); use printable text"
        )


def check_labels(y: np.ndarray, classes: tuple[str, ...], what: str) -> None:
    """Refuse a constant target and a class too small to appear in both train and validation."""
    if len(classes) < 2:
        raise DatasetError(f"{what} has a single value ({excerpt(classes[0])!r}): there is nothing to predict")
    counts = np.bincount(y, minlength=len(classes))
    small = [f"{excerpt(c, 40)!r} ({k} row)" for c, k in zip(classes, counts, strict=True) if k < 2]
    if small:
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""  # an id column would list them all
        raise DatasetError(f"{what}: every class needs at least 2 rows; too few for {', '.join(small[:5])}{more}")


def labels_of(values: np.ndarray, what: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Numeric target (N,) → (y, classes): classes for integer labels, None for a regression.

    Integer dtypes are labels; float values are labels only if all are integers and there are
    at most MAX_CLASSES_FOR_INTEGERS of them (a price in whole dollars is still a regression)."""
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0]) + 1
        raise DatasetError(f"{what} has a non-finite value ({values[row - 1]}) in row {row}")
    distinct = np.unique(values)
    is_integer = values.dtype.kind in "biu" or bool(np.all(distinct == np.round(distinct)))
    if values.dtype.kind == "f" and (not is_integer or len(distinct) > MAX_CLASSES_FOR_INTEGERS):
        if len(distinct) < 2:
            raise DatasetError(f"{what} has a single value ({distinct[0]}): there is nothing to predict")
        return values.astype(np.float32), None
    classes = tuple(str(int(v)) for v in distinct)  # numeric order: "2" before "10"
    y = np.searchsorted(distinct, values).astype(np.int64)
    check_labels(y, classes, what)
    return y, classes
