"""Seeded train / validation / test splits, stratified on the target for classification.

The sizes depend only on (n, val, test), not on the data, so the API can show a dataset's
`sizes` without loading it (`split_sizes`), and `split_indices` gives exactly those sizes.
"""

from __future__ import annotations

import math

import numpy as np

from ml.datasets.base import Dataset, DatasetError


def _count(fraction: float, n: int) -> int:
    # Round half up (not to even): 0.25 of 10 rows is 3 rows, whatever the platform.
    return int(math.floor(fraction * n + 0.5))


def split_sizes(n: int, val: float, test: float) -> dict[str, int]:
    """How many of n rows each part gets: val and test are fractions of the whole; every part
    that is asked for gets at least one row, train gets the rest (at least one)."""
    if not 0.0 < val < 1.0 or not 0.0 <= test < 1.0 or val + test >= 1.0:
        raise DatasetError(f"split fractions need 0 < val, 0 <= test and val + test < 1; got val={val}, test={test}")
    n_val = max(1, _count(val, n))
    n_test = max(1, _count(test, n)) if test > 0.0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DatasetError(f"{n} rows are too few for val={val}, test={test}: nothing would be left to train on")
    return {"train": n_train, "val": n_val, "test": n_test}


def _take(
    rows: np.ndarray, size: int, labels: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` into (the rest, `size` rows), stratified on labels[rows] when it can be."""
    from sklearn.model_selection import train_test_split  # sklearn costs ~1 s to import: not at import time

    state = int(rng.integers(0, 2**31 - 1))  # scikit-learn wants a legacy seed; derive it from ours
    if labels is not None:
        try:
            rest, taken = train_test_split(rows, test_size=size, random_state=state, stratify=labels[rows])
            return rest, taken
        except ValueError:
            # A class with a single row, or fewer rows to take than classes: scikit-learn cannot
            # stratify. A plain random split is the documented fallback, not an error.
            pass
    rest, taken = train_test_split(rows, test_size=size, random_state=state)
    return rest, taken


def split_indices(dataset: Dataset, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Disjoint, sorted int64 row indices {"train", "val", "test"} covering every row of dataset.

    Same (dataset, val, test, seed) → the same split; `test` may be 0 (an empty "test").
    Classification datasets are stratified on their first target (for colored digits, the digit).
    """
    sizes = split_sizes(len(dataset), val, test)
    first = dataset.info.targets[0]
    labels = None if first.is_regression else np.asarray(dataset.y[first.name])
    rng = np.random.default_rng(seed)
    rest = np.arange(len(dataset), dtype=np.int64)
    test_rows = np.empty(0, dtype=np.int64)
    if sizes["test"]:
        rest, test_rows = _take(rest, sizes["test"], labels, rng)
    train_rows, val_rows = _take(rest, sizes["val"], labels, rng)
    return {"train": np.sort(train_rows), "val": np.sort(val_rows), "test": np.sort(test_rows)}
