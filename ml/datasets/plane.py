"""The 2-D binary built-ins: spirals, moons, circles and xor.

Each returns `params.n_samples` points as x (N, 2) float32 with features x1, x2 and one binary
target "label" (int64 indices into ("0", "1")), balanced (class sizes differ by at most one),
rows in random order, Gaussian noise of standard deviation `params.noise`, all drawn from
`numpy.random.default_rng(seed)`: the same (params, seed) gives the same array, bit for bit.

Scales (noise is absolute, so these fix how hard a given noise is):
- spirals: two interleaved arms of 1.75 turns each, radius growing from 0.5 to 6; along any ray
  an arm is 11/7 ≈ 1.6 from the nearest arm of the other class, so at noise 0.1-0.3 a 3×8 ReLU
  MLP with Adam reaches 97-100% while a single hidden layer of 10 units stays near 75-80%
  (measured on 1,000 points, 60/20/20 split: the contrast of the report's Table 1).
- moons: scikit-learn's make_moons (half circles of radius 1).
- circles: scikit-learn's make_circles, inner radius 0.5 of the outer 1.
- xor: four blobs centred on (±1, ±1); opposite corners share a class.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_circles, make_moons

from ml.datasets.base import Dataset
from ml.datasets.catalog import BUILTINS, PlaneParams

# spirals geometry: the arm's angle runs over SPIRAL_TURNS turns and its radius grows linearly
# from SPIRAL_R0 to SPIRAL_R1 (an Archimedean spiral). Starting away from the centre keeps the
# two arms from touching at their inner end, where no classifier could separate them.
SPIRAL_TURNS = 1.75
SPIRAL_R0 = 0.5
SPIRAL_R1 = 6.0
CIRCLES_FACTOR = 0.5  # inner radius / outer radius


def _class_sizes(n: int) -> tuple[int, int]:
    """Balanced class sizes: class 0 gets the odd point out, as scikit-learn's generators do."""
    return n - n // 2, n // 2


def _sklearn_seed(rng: np.random.Generator) -> int:
    # scikit-learn takes a legacy RandomState seed; draw it from our Generator so `seed` alone
    # fixes the result.
    return int(rng.integers(0, 2**31 - 1))


def _finish(name: str, params: PlaneParams, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Dataset:
    """Shuffle the rows (generators emit class by class) and wrap them with their description."""
    order = rng.permutation(len(y))
    info = BUILTINS[name].describe(params)
    return Dataset(info=info, x=x[order].astype(np.float32), y={"label": y[order].astype(np.int64)})


def spirals(params: PlaneParams, seed: int) -> Dataset:
    """Two interleaved spirals; class 1 is class 0 rotated by half a turn."""
    rng = np.random.default_rng(seed)
    n0, n1 = _class_sizes(params.n_samples)
    y = np.repeat(np.array([0, 1]), [n0, n1])  # (N,)
    # Even density along the arm: the arc length of an Archimedean spiral grows with radius²,
    # so radius² is drawn uniformly.
    radius = np.sqrt(rng.uniform(SPIRAL_R0**2, SPIRAL_R1**2, size=len(y)))  # (N,)
    angle = 2.0 * np.pi * SPIRAL_TURNS * (radius - SPIRAL_R0) / (SPIRAL_R1 - SPIRAL_R0) + np.pi * y
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)  # (N, 2)
    x += rng.normal(0.0, params.noise, size=x.shape)
    return _finish("spirals", params, x, y, rng)


def moons(params: PlaneParams, seed: int) -> Dataset:
    """Two interleaving half circles (scikit-learn's make_moons)."""
    rng = np.random.default_rng(seed)
    x, y = make_moons(n_samples=params.n_samples, noise=params.noise, random_state=_sklearn_seed(rng))
    return _finish("moons", params, x, y, rng)


def circles(params: PlaneParams, seed: int) -> Dataset:
    """A circle inside another (scikit-learn's make_circles); class 1 is the inner circle."""
    rng = np.random.default_rng(seed)
    x, y = make_circles(
        n_samples=params.n_samples, noise=params.noise, factor=CIRCLES_FACTOR, random_state=_sklearn_seed(rng)
    )
    return _finish("circles", params, x, y, rng)


def xor(params: PlaneParams, seed: int) -> Dataset:
    """Four Gaussian blobs at (±1, ±1): class 0 at (+1, +1) and (-1, -1), class 1 at the others."""
    rng = np.random.default_rng(seed)
    n0, n1 = _class_sizes(params.n_samples)
    # Each class splits its points between its two corners.
    corners = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])  # (4, 2)
    counts = [n0 - n0 // 2, n0 // 2, n1 - n1 // 2, n1 // 2]
    centre = np.repeat(corners, counts, axis=0)  # (N, 2)
    y = np.repeat(np.array([0, 0, 1, 1]), counts)  # (N,)
    x = centre + rng.normal(0.0, params.noise, size=centre.shape)
    return _finish("xor", params, x, y, rng)
