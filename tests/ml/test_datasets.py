"""ml.datasets: the built-ins are what their descriptions promise, and splits are seeded and
stratified (uploads: tests/ml/test_uploads.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from ml.datasets import (
    BUILTINS,
    Dataset,
    DatasetError,
    DatasetInfo,
    Target,
    describe_builtin,
    load_builtin,
    split_indices,
    split_sizes,
)
from ml.datasets.catalog import HOUSE_FEATURES, HOUSE_ROWS, PALETTE
from ml.datasets.tabular import complete_rows

PLANE = ["spirals", "moons", "circles", "xor"]
CASES: list[tuple[str, dict[str, Any]]] = [
    *[(name, {"n_samples": 301, "noise": 0.2}) for name in PLANE],
    ("digits", {}),
    ("digits", {"n_samples": 1003}),
    ("colored_digits", {"n_colors": 4}),
    ("house_prices", {}),
]


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_builtin("digits", {}, 0)


@pytest.fixture(scope="module")
def colored() -> Dataset:
    return load_builtin("colored_digits", {"n_colors": len(PALETTE)}, 0)


@pytest.fixture(scope="module")
def house() -> Dataset:
    return load_builtin("house_prices", {}, 0)


# --- built-ins ----------------------------------------------------------------------------------


def test_every_builtin_is_covered() -> None:
    assert {name for name, _ in CASES} == set(BUILTINS)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_builtin_matches_its_description(name: str, params: dict[str, Any]) -> None:
    info = describe_builtin(name, params)
    data = load_builtin(name, params, 3)
    assert data.info == info  # shapes, features, targets, n_samples: described without loading
    assert data.x.dtype == np.float32
    assert data.x.shape == (info.n_samples, *info.input_shape)
    assert np.isfinite(data.x).all()
    assert list(data.y) == [t.name for t in info.targets]
    for t in info.targets:
        y = data.y[t.name]
        assert y.shape == (info.n_samples,)
        if t.is_regression:
            assert y.dtype == np.float32
        else:
            assert y.dtype == np.int64
            counts = np.bincount(y, minlength=len(t.classes))
            assert len(counts) == len(t.classes)
            assert counts.max() - counts.min() <= 1  # balanced


@pytest.mark.parametrize("name", PLANE)
def test_plane_is_seeded(name: str) -> None:
    params = {"n_samples": 200, "noise": 0.1}
    a, b, c = (load_builtin(name, params, s) for s in (0, 0, 1))
    assert np.array_equal(a.x, b.x)
    assert np.array_equal(a.y["label"], b.y["label"])
    assert not np.array_equal(a.x, c.x)
    assert a.info.features == ("x1", "x2")
    assert a.info.targets == (Target("label", ("0", "1")),)
    assert not np.array_equal(a.y["label"], np.sort(a.y["label"]))  # rows are shuffled


@pytest.mark.parametrize("name", ["spirals", "circles", "xor"])
def test_plane_is_nonlinear_but_learnable(name: str) -> None:
    # A straight line cannot separate the classes; a local method can (the noise does not
    # swamp the structure).
    train = load_builtin(name, {"n_samples": 2000, "noise": 0.1}, 0)
    val = load_builtin(name, {"n_samples": 1000, "noise": 0.1}, 1)
    linear = LogisticRegression().fit(train.x, train.y["label"]).score(val.x, val.y["label"])
    local = KNeighborsClassifier(5).fit(train.x, train.y["label"]).score(val.x, val.y["label"])
    assert linear < 0.7
    assert local > 0.95


def test_spirals_noise_spreads_the_points() -> None:
    def spread(noise: float) -> float:
        return float(load_builtin("spirals", {"n_samples": 500, "noise": noise}, 0).x.std())

    assert spread(0.0) < spread(1.0)


def test_digits_are_real_shuffled_mnist(digits: Dataset) -> None:
    x, y = digits.x, digits.y["digit"]
    assert x.shape == (5000, 1, 16, 16)
    assert x.min() >= 0.0
    assert x.max() <= 1.0
    assert x.max() > 0.9  # scaled from 0..255, not left in bytes or squashed
    assert np.bincount(y).tolist() == [500] * 10
    assert len(set(y[:30].tolist())) >= 5  # the file is sorted by label: the loader shuffles it
    # A "0" is a ring with an empty centre, a "1" a stroke through it: the mean images differ.
    mean0, mean1 = x[y == 0, 0].mean(axis=0), x[y == 1, 0].mean(axis=0)  # (16, 16)
    centre = (slice(6, 10), slice(6, 10))
    assert mean1[centre].mean() > 2 * mean0[centre].mean()
    assert np.abs(mean0 - mean1).mean() > 0.05
    assert 0.05 < x.mean() < 0.25  # MNIST is mostly black background


def test_digits_subset_is_stratified_and_seeded(digits: Dataset) -> None:
    a = load_builtin("digits", {"n_samples": 1000}, 5)
    b = load_builtin("digits", {"n_samples": 1000}, 5)
    c = load_builtin("digits", {"n_samples": 1000}, 6)
    assert np.array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert np.bincount(a.y["digit"]).tolist() == [100] * 10
    # The subset holds images of the full set, with their own labels.
    full = {img.tobytes(): label for img, label in zip(digits.x, digits.y["digit"], strict=True)}
    assert all(full[img.tobytes()] == label for img, label in zip(a.x, a.y["digit"], strict=True))


def test_loaded_arrays_do_not_share_the_cache() -> None:
    a = load_builtin("digits", {"n_samples": 100}, 0)
    a.x[:] = -1.0
    assert load_builtin("digits", {"n_samples": 100}, 0).x.min() >= 0.0


def test_colored_digits_are_tinted_digits(digits: Dataset, colored: Dataset) -> None:
    assert colored.x.shape == (5000, 3, 16, 16)
    assert colored.x.min() >= 0.0
    assert colored.x.max() <= 1.0
    assert np.array_equal(colored.y["digit"], digits.y["digit"])  # the same images, same order
    color = colored.y["color"]
    assert np.bincount(color).tolist() == [500] * len(PALETTE)
    # Each image is its gray image times its color: channel sums / gray sum = the palette rgb.
    gray = digits.x.sum(axis=(1, 2, 3))  # (N,)
    rgb = colored.x.sum(axis=(2, 3)) / gray[:, None]  # (N, 3)
    palette = np.array([c for _, c in PALETTE], dtype=np.float32)  # (10, 3)
    np.testing.assert_allclose(rgb, palette[color], atol=1e-4)
    # Colors are independent of digits: every digit shows up in every color.
    assert (np.histogram2d(colored.y["digit"], color, bins=(10, len(PALETTE)))[0] > 0).all()


def test_colored_digits_dominant_channels_match_the_palette() -> None:
    data = load_builtin("colored_digits", {"n_samples": 500, "n_colors": 5}, 2)
    lit = data.x.sum(axis=(2, 3)) > 0  # (N, 3): which of red, green, blue carry the digit
    expected = np.array([c for _, c in PALETTE[:5]]) > 0  # red, green, blue, yellow, magenta
    assert np.array_equal(lit, expected[data.y["color"]])
    assert data.info.target("color").classes == ("red", "green", "blue", "yellow", "magenta")


def test_house_prices_are_in_dollars(house: Dataset) -> None:
    assert house.x.shape == (HOUSE_ROWS, len(HOUSE_FEATURES))
    price = house.y["Sale_Price"]
    assert 100_000 < float(np.median(price)) < 300_000
    assert price.min() > 0
    living = house.x[:, HOUSE_FEATURES.index("Gr_Liv_Area")]  # square feet
    assert 1000 < float(np.median(living)) < 2500
    year = house.x[:, HOUSE_FEATURES.index("Year_Built")]
    assert year.min() > 1850
    assert year.max() <= 2010


def test_house_rows_with_a_missing_value_are_dropped() -> None:
    table = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": [1.0, 2.0, 3.0, None], "c": ["x", None, None, None]})
    kept = complete_rows(table, ["a", "b"])  # a missing "c" does not matter: it is not used
    assert kept.index.tolist() == [0, 2]
    assert kept.columns.tolist() == ["a", "b"]
    with pytest.raises(DatasetError, match="has no column 'z'"):
        complete_rows(table, ["a", "z"])


# --- splits ---------------------------------------------------------------------------------------


def _tiny(labels: list[int]) -> Dataset:
    n = len(labels)
    classes = tuple(str(c) for c in range(max(labels) + 1))
    info = DatasetInfo("tiny", "multiclass", (1,), ("f",), (Target("t", classes),), n)
    return Dataset(info, np.arange(n, dtype=np.float32)[:, None], {"t": np.array(labels, dtype=np.int64)})


@pytest.mark.parametrize(("name", "params"), CASES)
def test_split_is_a_seeded_partition(name: str, params: dict[str, Any]) -> None:
    data = load_builtin(name, params, 0)
    a = split_indices(data, 0.2, 0.1, 7)
    again = split_indices(data, 0.2, 0.1, 7)
    assert all(np.array_equal(a[k], again[k]) for k in ("train", "val", "test"))
    b = split_indices(data, 0.2, 0.1, 8)
    assert not np.array_equal(a["val"], b["val"])
    assert {k: len(v) for k, v in a.items()} == split_sizes(len(data), 0.2, 0.1)
    everything = np.concatenate([a["train"], a["val"], a["test"]])
    assert everything.dtype == np.int64
    assert np.array_equal(np.sort(everything), np.arange(len(data)))  # disjoint and covering


def test_split_is_stratified(digits: Dataset) -> None:
    parts = split_indices(digits, 0.2, 0.2, 0)
    for rows in parts.values():  # 3000, 1000, 1000 rows: exactly a tenth of each is each digit
        assert np.bincount(digits.y["digit"][rows]).tolist() == [len(rows) // 10] * 10


def test_split_without_test() -> None:
    parts = split_indices(load_builtin("moons", {"n_samples": 100}, 0), 0.25, 0.0, 0)
    assert len(parts["test"]) == 0
    assert parts["test"].dtype == np.int64
    assert (len(parts["train"]), len(parts["val"])) == (75, 25)


def test_split_falls_back_when_a_class_is_too_small() -> None:
    data = _tiny([0] * 10 + [1] * 10 + [2])  # class 2 has one row: cannot be stratified
    parts = split_indices(data, 0.2, 0.2, 0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(21))


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.5, 0.5), (0.2, -0.1), (1.2, 0.0)])
def test_split_refuses_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(DatasetError, match="val"):
        split_sizes(100, val, test)
