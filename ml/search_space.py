"""The search space of random (and adaptive) sweeps: distributions over dotted spec paths, and
`draw`, which samples one value reproducibly from a seeded `random.Random`. Nothing here imports
torch.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Choice(_Strict):
    choice: list[Any] = Field(min_length=1, description="one of these values, each equally likely")


class Uniform(_Strict):
    uniform: tuple[float, float] = Field(description="[lo, hi]: a float drawn uniformly")

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.uniform[0] <= self.uniform[1]:
            raise ValueError(f"uniform needs lo <= hi, got {list(self.uniform)}")
        return self


class LogUniform(_Strict):
    log_uniform: tuple[float, float] = Field(description="[lo, hi], both > 0: uniform in log space")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        lo, hi = self.log_uniform
        if not 0 < lo <= hi:
            raise ValueError(f"log_uniform needs 0 < lo <= hi, got {[lo, hi]}")
        return self


class IntRange(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    bounds: tuple[int, int] = Field(alias="int", description="[lo, hi]: an integer, both ends included")

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.bounds[0] <= self.bounds[1]:
            raise ValueError(f"int needs lo <= hi, got {list(self.bounds)}")
        return self


DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int")


def distribution_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kinds = [k for k in value if k in DISTRIBUTIONS]
        return kinds[0] if len(kinds) == 1 else None
    by_type: dict[type, str] = {Choice: "choice", Uniform: "uniform", LogUniform: "log_uniform", IntRange: "int"}
    return by_type.get(type(value))


Distribution = Annotated[
    Union[  # noqa: UP007 (a tagged union reads better spelled out)
        Annotated[Choice, Tag("choice")],
        Annotated[Uniform, Tag("uniform")],
        Annotated[LogUniform, Tag("log_uniform")],
        Annotated[IntRange, Tag("int")],
    ],
    Discriminator(
        distribution_kind,
        custom_error_type="distribution",
        custom_error_message="give exactly one of choice: [...], uniform: [lo, hi], log_uniform: [lo, hi], "
        "int: [lo, hi]",
    ),
]


class RandomSearch(_Strict):
    samples: int = Field(ge=1, le=10_000, description="how many rows to draw")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the same seed draws the same rows")
    space: dict[str, Distribution] = Field(min_length=1, description="dotted path → distribution")


def draw(distribution: Choice | Uniform | LogUniform | IntRange, rng: random.Random) -> Any:
    """One value. Only `rng.random()` is used: Python guarantees its sequence for a seed across
    versions, which it does not for choice() or randint()."""
    u = rng.random()  # [0, 1)
    if isinstance(distribution, Choice):
        return copy.deepcopy(distribution.choice[min(int(u * len(distribution.choice)), len(distribution.choice) - 1)])
    if isinstance(distribution, Uniform):
        lo, hi = distribution.uniform
        return min(lo + (hi - lo) * u, hi)
    if isinstance(distribution, LogUniform):
        lo, hi = distribution.log_uniform
        return min(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u), hi)
    lo_i, hi_i = distribution.bounds
    return min(lo_i + int(u * (hi_i - lo_i + 1)), hi_i)
