"""The experiment spec's fields: every pydantic model a spec is made of, each field checked on its
own (types, ranges, names, unknown fields). `ml.spec` checks a spec against its dataset and the
limits; import from there. Nothing here imports torch.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ml.datasets.catalog import BUILTINS

Activation = Literal["relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu"]
Loss = Literal["mse", "bce", "ce", "gaussian_nll"]


class _Strict(BaseModel):
    """Unknown fields refused, and no lax coercion: a bool or a string is never taken for a
    number (`epochs: true`, `lr: "0.1"` are 422s), a float never for an integer (`epochs: 3.0`);
    an integer is a float where one is expected (`lr: 1`). NaN and infinities are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _no_control_characters(value: str) -> str:
    """Names go into tables, logs and the database (PostgreSQL refuses NUL in text)."""
    for i, char in enumerate(value):
        if unicodedata.category(char) == "Cc":
            raise ValueError(f"must not contain control characters (U+{ord(char):04X} at position {i})")
    return value


# A short name a person gave (an experiment, a sweep, a sweep row): printable, 1 to N characters.
Name = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_control_characters)]
LongName = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_control_characters)]

MAX_TAGS, MAX_TAG_LENGTH, MAX_NOTES_LENGTH = 20, 50, 10_000


def _tag(value: str) -> str:
    # Commas separate tags in `labtrain tag --add a,b` and in the stored column (core.tables.TagList).
    if "," in value:
        raise ValueError(f"a tag must not contain a comma: {value[:MAX_TAG_LENGTH]!r}")
    if value != value.strip():
        raise ValueError(f"a tag must not start or end with a space: {value[:MAX_TAG_LENGTH]!r}")
    return value


def _distinct(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))  # a repeated tag is kept once, in first-seen order


def _notes_text(value: str) -> str:
    """Notes are free text over several lines: tabs and line breaks yes, other control characters no."""
    _no_control_characters(value.translate(_LINE_BREAKS))
    return value


_LINE_BREAKS = {ord("\n"): " ", ord("\r"): " ", ord("\t"): " "}


# A label to find runs by (`GET /experiments?tag=`): 1 to 50 characters, no control character or comma.
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TAG_LENGTH),
    AfterValidator(_no_control_characters),
    AfterValidator(_tag),
]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_distinct)]
Notes = Annotated[str, StringConstraints(max_length=MAX_NOTES_LENGTH), AfterValidator(_notes_text)]


class SplitSpec(_Strict):
    """Fractions of the whole dataset; the rest trains. Seeded, stratified for classification."""

    val: float = Field(0.2, gt=0.0, lt=1.0)
    test: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitSpec:
        if self.val + self.test > 0.9:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves under 10% to train on; keep it at most 0.9")
        return self


class NormalizeSpec(_Strict):
    """Standardize with training-split statistics only: inputs per feature (per channel for
    images), the regression target too (de-normalized for every metric and prediction)."""

    inputs: bool = True
    target: bool = True


class DatasetSpec(_Strict):
    name: LongName | None = Field(None, description="a built-in dataset")
    id: LongName | None = Field(None, description="an uploaded dataset's id")
    params: dict[str, Any] = Field(default_factory=dict, description="the built-in's parameters")
    split: SplitSpec = Field(default_factory=SplitSpec)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds generation and the split")
    normalize: NormalizeSpec = Field(default_factory=NormalizeSpec)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of name (a built-in: " + ", ".join(BUILTINS) + ") or id (an upload)")
        if self.id is not None and self.params:
            raise ValueError("params apply to built-in datasets only")
        return self


DENSE_DEFAULTS: dict[str, Any] = {"hidden_layers": 1, "neurons": 16}


def _widths_alone(data: dict[str, Any], defaults: dict[str, Any]) -> None:
    """`widths` or `hidden_layers` × `neurons`, not both. A normalized spec lists every field with
    its default, so the rule refuses `hidden_layers` and `neurons` next to `widths` only when they
    differ from their defaults (a user who writes both with the default values loses nothing)."""
    if data.get("widths") is None:
        return
    given = [k for k, default in defaults.items() if data.get(k, default) != default]
    if given:
        raise ValueError(
            f"give either widths (the width of each hidden layer) or {' and '.join(given)}, not both: "
            f"widths {data['widths']!r:.100} already sets every hidden layer"
        )


class ArchitectureSpec(_Strict):
    """Layers of one network: convolutions (cnn) then dense hidden layers; the output layer is
    added from the dataset's targets."""

    type: Literal["mlp", "cnn"] = "mlp"
    hidden_layers: int = Field(1, ge=0, le=64, description="dense hidden layers (or widths)")
    neurons: int = Field(16, ge=1, le=65_536, description="width of each dense hidden layer (or widths)")
    widths: list[Annotated[int, Field(ge=1, le=65_536)]] | None = Field(
        None, max_length=64, description="the width of each dense hidden layer, instead of hidden_layers × neurons"
    )
    activation: Activation = "relu"
    conv_layers: int = Field(0, ge=0, le=32, description="cnn only: number of convolutions")
    filters: int = Field(8, ge=1, le=4096, description="cnn only: filters per convolution")
    kernel_size: int = Field(3, ge=1, le=64, description="cnn only: square kernel, stride 1, no padding")
    pool: int | None = Field(None, ge=2, le=16, description="cnn only: max pooling after each convolution")

    @model_validator(mode="before")
    @classmethod
    def _cnn_defaults(cls, data: Any) -> Any:
        # A cnn without conv_layers means one convolution; conv fields on an mlp are a mistake.
        if isinstance(data, dict):
            if data.get("type") == "cnn" and "conv_layers" not in data:
                data = {**data, "conv_layers": 1}
            if data.get("type", "mlp") == "mlp":
                # Compared with the defaults, so a normalized spec (which lists them) validates again.
                defaults = {"conv_layers": 0, "filters": 8, "kernel_size": 3, "pool": None}
                wrong = [k for k, v in defaults.items() if data.get(k, v) not in (v, None)]
                if wrong:
                    raise ValueError(f"{', '.join(wrong)} apply to type 'cnn' only; set type: cnn")
            _widths_alone(data, DENSE_DEFAULTS)
        return data

    @property
    def dense_widths(self) -> list[int]:
        return list(self.widths) if self.widths is not None else [self.neurons] * self.hidden_layers


class OverrideSpec(_Strict):
    """Per-head (or σ network) overrides: any field left out is the model's own."""

    type: Literal["mlp", "cnn"] | None = None
    hidden_layers: int | None = Field(None, ge=0, le=64)
    neurons: int | None = Field(None, ge=1, le=65_536)
    widths: list[Annotated[int, Field(ge=1, le=65_536)]] | None = Field(None, max_length=64)
    activation: Activation | None = None
    conv_layers: int | None = Field(None, ge=0, le=32)
    filters: int | None = Field(None, ge=1, le=4096)
    kernel_size: int | None = Field(None, ge=1, le=64)
    pool: int | None = Field(None, ge=2, le=16)

    @model_validator(mode="before")
    @classmethod
    def _widths_or_dense(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _widths_alone(data, {"hidden_layers": None, "neurons": None})
        return data

    def over(self, base: ArchitectureSpec) -> ArchitectureSpec:
        merged = base.model_dump()
        given = self.model_dump(exclude_none=True)
        if ("hidden_layers" in given or "neurons" in given) and "widths" not in given:
            merged["widths"] = None  # new depth or width replaces inherited explicit widths
        merged.update(given)
        if merged["type"] == "mlp":
            merged.update(conv_layers=0, pool=None)
        elif merged["conv_layers"] == 0 and "conv_layers" not in given:
            merged["conv_layers"] = 1
        # Every field was validated on its own model; the merge only combines them.
        return ArchitectureSpec.model_construct(**merged)


class ModelSpec(ArchitectureSpec):
    shared_layers: int = Field(
        0, ge=0, le=96, description="two targets: how many of the model's first layers both heads use"
    )
    heads: dict[str, OverrideSpec] | None = Field(
        None, description="two targets: per-target architecture after the shared layers"
    )
    sigma: OverrideSpec | None = Field(None, description="gaussian_nll: the log σ² network (default: the μ network's)")

    def base(self) -> ArchitectureSpec:
        return ArchitectureSpec.model_construct(**self.model_dump(exclude={"shared_layers", "heads", "sigma"}))


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adam", "rmsprop", "adamw"] = "adam"
    lr: float = Field(0.001, gt=0.0, le=100.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0, description="sgd and rmsprop only")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _momentum_fits(self) -> OptimizerSpec:
        if self.momentum is not None and self.name in ("adam", "adamw"):
            raise ValueError(f"momentum applies to sgd and rmsprop; {self.name} has its own betas")
        return self


class EarlyStoppingSpec(_Strict):
    """Stop when the validation loss has not improved by min_delta for `patience` epochs; the
    artifact holds the kept weights (`keep`), as without early stopping."""

    patience: int = Field(ge=1, le=100_000)
    min_delta: float = Field(0.0, ge=0.0)


ExperimentEvent = Literal["succeeded", "failed", "cancelled", "diverged"]


def _all_events() -> list[ExperimentEvent]:
    return ["succeeded", "failed", "cancelled", "diverged"]


class NotifySpec(_Strict):
    """A signed webhook POSTed when the run ends (the API checks `url` against
    LABTRAIN_WEBHOOK_ALLOW; core/webhooks.py sends it)."""

    url: str = Field(min_length=1, max_length=2000, description="an http(s) URL of an allowed destination")
    events: list[ExperimentEvent] = Field(
        default_factory=_all_events,
        min_length=1,
        description="the terminal statuses that send an event (default: all)",
    )


class ExperimentSpec(_Strict):
    model_config = ConfigDict(json_schema_extra=lambda schema: schema.update(examples=[EXAMPLE_SPEC]))

    name: Name = Field("experiment", description="1 to 100 characters, no control characters")
    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: Loss | None = Field(None, description="default: bce (binary), ce (classes), mse (regression)")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    batch_size: Annotated[
        int | Literal["full"],
        # The validator below reads the value before pydantic does; say the same in the schema, so a
        # generated client builds an integer or the one string. `enum` beside `const`: given `const`
        # alone, openapi-python-client 0.29 refuses every integer (tests/integration/test_generated_client.py).
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                    {"type": "string", "enum": ["full"], "const": "full"},
                ]
            }
        ),
    ] = Field(32, description="rows per step, or 'full' for the whole split")
    epochs: int = Field(10, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="initialization and shuffling")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    early_stopping: EarlyStoppingSpec | None = None
    tags: Tags = Field(
        default_factory=list,
        description=f"labels to find the run by (`GET /experiments?tag=`): at most {MAX_TAGS}, each 1 to "
        f"{MAX_TAG_LENGTH} characters without a comma; stored beside the spec, changed with PATCH",
    )
    notes: Notes | None = Field(
        None, description=f"free text, at most {MAX_NOTES_LENGTH:,} characters; stored beside the spec"
    )
    keep: Literal["best", "last"] = Field(
        "best",
        description="the weights a run keeps and serves: the best validation epoch (ml.ranking) or the last",
    )
    notify: NotifySpec | None = Field(None, description="a signed webhook when the run ends")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, v: Any) -> Any:
        if v == "full" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1_000_000):
            return v
        raise ValueError(f"batch_size must be an integer from 1 to 1,000,000 or 'full', not {v!r:.100}")


EXAMPLE_SPEC: dict[str, Any] = {
    "name": "model22",
    "dataset": {
        "name": "spirals",
        "params": {"n_samples": 2000, "noise": 0.1},
        "split": {"val": 0.2, "test": 0.2},
        "seed": 0,
    },
    "model": {"type": "mlp", "hidden_layers": 3, "neurons": 8, "activation": "relu"},
    "loss": "bce",
    "optimizer": {"name": "adam", "lr": 0.01},
    "batch_size": 128,
    "epochs": 300,
    "seed": 0,
}
