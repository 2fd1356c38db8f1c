"""The experiment spec: the contract between a user, the API and the trainer.

`ExperimentSpec` (its models in `ml/spec_models.py`) checks each field on its own (types,
ranges, unknown fields); `validate_spec`
then checks the spec against its dataset (task, shapes, targets) and the limits, and returns
the normalized spec with every default filled in, the task and the exact parameter count.
Nothing here imports torch: the API validates specs without loading training code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ml import layers as L
from ml.datasets.base import DatasetError, DatasetInfo, Target
from ml.datasets.catalog import BUILTINS, describe_builtin
from ml.datasets.split import split_sizes
from ml.memory import memory_error
from ml.spec_models import (
    EXAMPLE_SPEC,
    MAX_NOTES_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    Activation,
    ArchitectureSpec,
    DatasetSpec,
    EarlyStoppingSpec,
    ExperimentEvent,
    ExperimentSpec,
    LongName,
    Loss,
    ModelSpec,
    Name,
    NormalizeSpec,
    Notes,
    NotifySpec,
    OptimizerSpec,
    OverrideSpec,
    SplitSpec,
    Tag,
    Tags,
)

# The spec's models live in ml/spec_models.py; this module is where callers import them from.
__all__ = [
    "EXAMPLE_SPEC",
    "MAX_NOTES_LENGTH",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "Activation",
    "ArchitectureSpec",
    "CheckedSpec",
    "DatasetSpec",
    "EarlyStoppingSpec",
    "ExperimentEvent",
    "ExperimentSpec",
    "LongName",
    "Loss",
    "ModelSpec",
    "Name",
    "NormalizeSpec",
    "Notes",
    "NotifySpec",
    "OptimizerSpec",
    "OverrideSpec",
    "SpecInvalid",
    "SplitSpec",
    "Tag",
    "Tags",
    "outputs_of",
    "param_count",
    "plan_network",
    "validate_spec",
]


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
