"""The experiment spec: the contract between a user, the API and the trainer.

`ExperimentSpec` checks each field on its own (types, ranges, unknown fields); `validate_spec`
then checks the spec against its dataset (task, shapes, targets) and the limits, and returns
the normalized spec with every default filled in, the task and the exact parameter count.
Nothing here imports torch: the API validates specs without loading training code.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ml import layers as L
from ml.datasets.base import DatasetError, DatasetInfo, Target
from ml.datasets.catalog import BUILTINS, describe_builtin
from ml.datasets.split import split_sizes
from ml.memory import memory_error

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


class SpecInvalid(ValueError):
    """The spec was refused; `errors` lists `{"loc": [...], "msg": ..., "type": ...}` items."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class CheckedSpec:
    spec: ExperimentSpec  # normalized: every default filled, the loss chosen
    task: str
    param_count: int
    info: DatasetInfo
    plan: L.NetworkPlan


def _error(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> SpecInvalid:
    return SpecInvalid([{"loc": list(loc), "msg": msg, "type": kind}])


def validate_spec(
    payload: dict[str, Any] | ExperimentSpec,
    *,
    max_params: int | None = None,
    upload_info: Callable[[str], DatasetInfo | None] | None = None,
    max_run_memory_bytes: int | None = None,
) -> CheckedSpec:
    """Check a spec on its own and against its dataset; raise SpecInvalid naming each problem.

    `upload_info` maps an upload's id (`dataset.id`) or name (a `dataset.name` no built-in has)
    to its description; `max_run_memory_bytes` refuses a run whose estimated training memory
    (ml.memory) is above it."""
    try:
        spec = payload if isinstance(payload, ExperimentSpec) else ExperimentSpec.model_validate(payload)
    except ValidationError as exc:
        raise SpecInvalid(
            [{"loc": list(e["loc"]), "msg": _message(e["msg"]), "type": e["type"]} for e in exc.errors()]
        ) from None
    info, source = _dataset_info(spec, upload_info)
    loss = _check_loss(spec, info)
    spec = spec.model_copy(update={"loss": loss, "dataset": spec.dataset.model_copy(update=source)}, deep=True)
    _check_batch_size(spec, info)
    plan = plan_network(spec, info)
    if max_params is not None and plan.params > max_params:
        raise _error(
            ("model",),
            f"the network has {plan.params:,} parameters, above the limit of {max_params:,}; "
            "use fewer or narrower layers",
            "too_many_parameters",
        )
    too_big = memory_error(spec, info, plan, max_run_memory_bytes) if max_run_memory_bytes is not None else None
    if too_big is not None:
        raise SpecInvalid([too_big])
    return CheckedSpec(spec=spec, task=info.task, param_count=plan.params, info=info, plan=plan)


def _check_batch_size(spec: ExperimentSpec, info: DatasetInfo) -> None:
    """A batch larger than the training split would silently be the whole split: refused, with
    the split's size, so the user writes that number or "full"."""
    split = spec.dataset.split
    try:
        train = split_sizes(info.n_samples, split.val, split.test)["train"]
    except DatasetError as exc:
        raise _error(("dataset", "split"), str(exc)) from None
    if isinstance(spec.batch_size, int) and spec.batch_size > train:
        raise _error(
            ("batch_size",),
            f"batch_size {spec.batch_size:,} is larger than the training split of {info.name} "
            f"({train:,} of {info.n_samples:,} rows with val={split.val:g}, test={split.test:g}); "
            f'use at most {train:,}, or "full"',
            "batch_size_too_large",
        )


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def param_count(payload: dict[str, Any] | ExperimentSpec) -> int:
    """The exact number of trainable parameters of a spec's network, without building it."""
    return validate_spec(payload).param_count


def _dataset_info(
    spec: ExperimentSpec, upload_info: Callable[[str], DatasetInfo | None] | None
) -> tuple[DatasetInfo, dict[str, Any]]:
    """The dataset's description and the normalized `dataset` fields: a built-in's params, or an
    upload named by its id (a `dataset.name` that is an upload's becomes its `dataset.id`)."""
    ds = spec.dataset
    if ds.id is not None:
        info = upload_info(ds.id) if upload_info is not None else None
        if info is None:
            raise _error(("dataset", "id"), f"no uploaded dataset with id {ds.id[:80]!r}", "not_found")
        return info, {"params": {}, "id": info.upload_id or ds.id}
    assert ds.name is not None
    if ds.name not in BUILTINS:
        info = upload_info(ds.name) if upload_info is not None else None
        if info is None:
            raise _error(
                ("dataset", "name"),
                f"unknown dataset {ds.name[:80]!r}; built-ins are {', '.join(BUILTINS)}, or the name of one of "
                "your uploads",
            )
        if ds.params:
            raise _error(("dataset", "params"), "params apply to built-in datasets only")
        if info.upload_id is None:  # described without a lookup (a notebook's own dataset): as named
            return info, {"params": {}}
        return info, {"params": {}, "name": None, "id": info.upload_id}
    builtin = BUILTINS[ds.name]
    try:
        params = builtin.params.model_validate(ds.params, strict=True)  # no "2000" for 2000, as in the spec
    except ValidationError as exc:
        raise SpecInvalid(
            [{"loc": ["dataset", "params", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        ) from None
    return describe_builtin(ds.name, params.model_dump()), {"params": params.model_dump()}


def _check_loss(spec: ExperimentSpec, info: DatasetInfo) -> str:
    targets = info.targets
    if spec.loss is None:
        if info.task == "regression":
            return "mse"
        return "bce" if all(len(t.classes or ()) == 2 for t in targets) else "ce"
    loss = spec.loss
    regression = [t.name for t in targets if t.is_regression]
    if loss == "gaussian_nll" and (info.task != "regression"):
        raise _error(("loss",), f"gaussian_nll is for regression; {info.name} is {info.task}: use ce, bce or mse")
    if loss in ("bce", "ce") and regression:
        raise _error(("loss",), f"{loss} is for classification; {info.name} is regression: use mse or gaussian_nll")
    if loss == "bce":
        wide = [f"{t.name} ({len(t.classes or ())} classes)" for t in targets if len(t.classes or ()) != 2]
        if wide:
            raise _error(("loss",), f"bce is for two classes, but {', '.join(wide)}: use ce (or mse)")
    return loss


def outputs_of(target: Target, loss: str) -> int:
    """Output units for a target: one logit for two classes (bce, mse), one per class otherwise."""
    if target.classes is None:
        return 1
    return 1 if len(target.classes) == 2 and loss != "ce" else len(target.classes)


def plan_network(spec: ExperimentSpec, info: DatasetInfo) -> L.NetworkPlan:
    """The layers of the spec's network on this dataset (raises SpecInvalid at the wrong field)."""
    m = spec.model
    assert spec.loss is not None
    if m.heads is not None and len(info.targets) < 2:
        raise _error(("model", "heads"), f"heads are for datasets with several targets; {info.name} has one")
    if m.shared_layers and len(info.targets) < 2:
        raise _error(
            ("model", "shared_layers"), f"shared_layers is for datasets with several targets; {info.name} has one"
        )
    if m.sigma is not None and spec.loss != "gaussian_nll":
        raise _error(("model", "sigma"), "sigma configures the σ network of loss gaussian_nll only")
    names = [t.name for t in info.targets]
    for head in m.heads or {}:
        if head not in names:
            raise _error(
                ("model", "heads", head), f"{info.name} has no target {head!r}; its targets: {', '.join(names)}"
            )

    base = m.base()
    body = _stack(base, info.input_shape, ("model",), "the model")
    if spec.loss == "gaussian_nll":
        sigma = (m.sigma or OverrideSpec()).over(base)
        sigma_body = _stack(sigma, info.input_shape, ("model", "sigma"), "the sigma network")
        trunk = L.Stack((), info.input_shape)
        return L.NetworkPlan(
            info.input_shape, trunk, {"mu": L.with_output(body, 1), "log_var": L.with_output(sigma_body, 1)}
        )

    if m.shared_layers > len(body.layers):
        raise _error(
            ("model", "shared_layers"),
            f"shared_layers {m.shared_layers} exceeds the model's {len(body.layers)} hidden layers",
        )
    trunk, rest = L.split(body, m.shared_layers, info.input_shape)
    heads: dict[str, L.Stack] = {}
    for target in info.targets:
        override = (m.heads or {}).get(target.name)
        if override is None:
            stack = rest
        else:
            shared = f" (after {m.shared_layers} shared layer{'s' if m.shared_layers > 1 else ''})"
            where = f"head {target.name}" + (shared if m.shared_layers else "")
            stack = _stack(override.over(base), trunk.output_shape, ("model", "heads", target.name), where)
        heads[target.name] = L.with_output(stack, outputs_of(target, spec.loss))
    return L.NetworkPlan(info.input_shape, trunk, heads)


def _stack(arch: ArchitectureSpec, shape: tuple[int, ...], loc: tuple[str, ...], where: str) -> L.Stack:
    try:
        convs = L.conv_stack(shape, arch.conv_layers, arch.filters, arch.kernel_size, arch.activation, arch.pool, where)
    except L.PlanError as exc:
        raise _error((*loc, exc.field), exc.message) from None
    return L.join(convs, L.dense_stack(convs.output_shape, arch.dense_widths, arch.activation))
