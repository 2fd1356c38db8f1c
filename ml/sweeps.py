"""Sweeps: one request expands into many named experiment specs.

A sweep is a `base` spec and exactly one way to vary it:

- `variants`: a list of rows, each a `name` and dotted-path overrides,
  `{"name": "model5", "model.neurons": 32}`;
- `grid`: dotted path → list of values; the rows are the cartesian product (first path
  slowest), named from their values (`neurons=8,lr=0.01`);
- `random`: `samples` rows drawn with `seed` from a `space` of `{"choice": [...]}`,
  `{"uniform": [lo, hi]}`, `{"log_uniform": [lo, hi]}` or `{"int": [lo, hi]}` (inclusive; the
  distributions are in `ml/search_space.py`).

`repeats: N` trains every row N times with seeds seed, seed + 1, ..., seed + N - 1 (the
initialization and the shuffle change; the dataset's own seed, hence the split, does not). The
members of a row keep its name and carry their repeat index.

A dotted path addresses the spec (`model.neurons`, `optimizer.lr`, `dataset.params.noise`,
`model.heads.color.kernel_size`, `batch_size`); a dict value merges into the object at its path,
any other value replaces it. `expand` builds the specs, `check_sweep` validates each one with
`validate_spec`, and both raise `SweepInvalid` naming the row and the field. Nothing here
imports torch or SQL: the API and the CLI use it as it is.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ml.datasets.base import DatasetInfo
from ml.search_space import RandomSearch, draw
from ml.spec import CheckedSpec, ExperimentSpec, LongName, SpecInvalid, validate_spec

MAX_NAME = 100  # ExperimentSpec.name's limit
MAX_REPORTED_ERRORS = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepNotify(_Strict):
    """A sweep's webhook: `finished` is sent once, when its last member reaches a terminal status."""

    url: str = Field(min_length=1, max_length=2000, description="an http(s) URL of an allowed destination")
    events: list[Literal["finished"]] = Field(default=["finished"], min_length=1)  # pydantic copies the default


class SweepRequest(_Strict):
    """The body of `POST /sweeps` (and a study file without its `report` and `evaluate`)."""

    name: LongName = Field("sweep", description="1 to 200 characters, no control characters")
    base: dict[str, Any] = Field(description="the spec every row starts from")
    variants: list[dict[str, Any]] | None = Field(
        None, min_length=1, description='rows: {"name": ..., "<dotted.path>": value, ...}'
    )
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] | None = Field(
        None, min_length=1, description="dotted path → values; the rows are the cartesian product"
    )
    random: RandomSearch | None = Field(None, description="rows drawn from a space, seeded")
    repeats: int = Field(1, ge=1, le=100, description="train every row with this many seeds")
    notify: SweepNotify | None = Field(None, description="a signed webhook when the last member ends")

    @model_validator(mode="after")
    def _one_mode(self) -> SweepRequest:
        given = [m for m in ("variants", "grid", "random") if getattr(self, m) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of variants, grid or random" + (f" (got {' and '.join(given)})" if given else "")
            )
        return self

    @property
    def mode(self) -> Literal["variants", "grid", "random"]:
        return "variants" if self.variants is not None else "grid" if self.grid is not None else "random"

    @property
    def row_count(self) -> int:
        if self.variants is not None:
            return len(self.variants)
        if self.grid is not None:
            return math.prod(len(v) for v in self.grid.values())
        assert self.random is not None
        return self.random.samples

    @property
    def size(self) -> int:
        """How many experiments the sweep trains (rows × repeats), known before expanding."""
        return self.row_count * self.repeats


@dataclass(frozen=True)
class SweepMember:
    """One experiment of a sweep: row `row` (named `name`), repeat `repeat` of it."""

    index: int  # position in the sweep: rows in order, each row's repeats together
    row: int
    name: str
    repeat: int
    spec: dict[str, Any]
    loc: tuple[str | int, ...]  # where its row is in the request, for errors


@dataclass(frozen=True)
class CheckedMember:
    member: SweepMember
    checked: CheckedSpec


class SweepInvalid(SpecInvalid):
    """The sweep was refused; `errors` name the row (in `loc` and `msg`) and the field."""


def _error(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


# -- dotted paths ----------------------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """The object type behind Optional/Union/Annotated (a model or a dict when there is one)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        options = [_unwrap(a) for a in get_args(annotation) if a is not type(None)]
        for option in options:
            if (isinstance(option, type) and issubclass(option, BaseModel)) or get_origin(option) is dict:
                return option
        return options[0] if len(options) == 1 else annotation
    return annotation


def path_problem(path: str) -> str | None:
    """Why `path` does not address a field of the spec, or None when it does."""
    parts = path.split(".")
    if not all(parts):
        return f"{path!r} is not a dotted path (like model.neurons or optimizer.lr)"
    if parts[0] == "name":
        return "name is the row's own name, not an override"
    node: Any = ExperimentSpec
    for i, part in enumerate(parts):
        node = _unwrap(node)
        where = ".".join(parts[:i]) or "the spec"
        if isinstance(node, type) and issubclass(node, BaseModel):
            fields = node.model_fields
            if part not in fields:
                return f"unknown path {path!r}: {where} has no field {part!r} (it has {', '.join(fields)})"
            node = fields[part].annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]  # any key: a dataset parameter, a head's target name
        elif node is Any:
            return None  # free-form below here (dataset.params); validate_spec checks the values
        else:
            return f"unknown path {path!r}: {where} is a value, not an object"
    return None


def _merge(into: dict[str, Any], value: dict[str, Any]) -> None:
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(into.get(key), dict):
            _merge(into[key], item)
        else:
            into[key] = copy.deepcopy(item)


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with each dotted path set (dict values merged), objects created as needed."""
    spec = copy.deepcopy(base)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            _merge(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return spec


# -- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    name: str
    overrides: dict[str, Any]
    loc: tuple[str | int, ...]


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _variant_rows(variants: list[dict[str, Any]], errors: list[dict[str, Any]]) -> list[_Row]:
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        name = variant.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
            errors.append(
                _error(("variants", i, "name"), f"row {i} needs a name: a string of 1 to {MAX_NAME} characters")
            )
            continue
        if name in seen:
            taken = f"row {name!r} (variants[{i}]): the name is already row {seen[name]}'s; give each row its own name"
            errors.append(_error(("variants", i, "name"), taken))
            continue
        seen[name] = i
        rows.append(_Row(name, {k: v for k, v in variant.items() if k != "name"}, ("variants", i)))
    return rows


def _grid_rows(grid: dict[str, list[Any]]) -> list[_Row]:
    paths = list(grid)
    leaves = [p.rsplit(".", 1)[-1] for p in paths]
    keys = [leaf if leaves.count(leaf) == 1 else path for path, leaf in zip(paths, leaves, strict=True)]
    rows: list[_Row] = []
    taken: set[str] = set()
    for i, values in enumerate(itertools.product(*grid.values())):
        name = ",".join(f"{k}={_label(v)}" for k, v in zip(keys, values, strict=True))
        if len(name) > MAX_NAME or name in taken:
            name = f"grid-{i:03d}"
        taken.add(name)
        rows.append(_Row(name, dict(zip(paths, values, strict=True)), ("grid", i)))
    return rows


def _random_rows(search: RandomSearch) -> list[_Row]:
    rng = random.Random(search.seed)
    width = len(str(search.samples - 1))
    return [
        _Row(f"sample-{i:0{width}d}", {path: draw(d, rng) for path, d in search.space.items()}, ("random", i))
        for i in range(search.samples)
    ]


# -- expansion and validation ----------------------------------------------------------------


def parse_request(payload: dict[str, Any]) -> SweepRequest:
    """The request, or SweepInvalid naming each field (as the API's 422 would)."""
    try:
        return SweepRequest.model_validate(payload)
    except ValidationError as exc:
        raise SweepInvalid(
            [
                {"loc": list(e["loc"]), "msg": e["msg"].removeprefix("Value error, "), "type": e["type"]}
                for e in exc.errors()
            ]
        ) from None


def _size_error(request: SweepRequest, max_size: int) -> dict[str, Any]:
    rows, repeats = request.row_count, request.repeats
    how = f"{rows:,} rows × {repeats} repeats" if repeats > 1 else f"{rows:,} rows"
    return _error(
        (request.mode,),
        f"the sweep expands to {request.size:,} experiments ({how}), above the limit of {max_size:,} "
        "(LABTRAIN_MAX_SWEEP_SIZE); split it or use random with fewer samples",
        "sweep_too_large",
    )


def expand(request: SweepRequest | dict[str, Any], *, max_size: int | None = None) -> list[SweepMember]:
    """Every member's spec, in order: rows in request order, each row's repeats together."""
    if not isinstance(request, SweepRequest):
        request = parse_request(request)
    if max_size is not None and request.size > max_size:
        raise SweepInvalid([_size_error(request, max_size)])  # refused before building anything
    errors: list[dict[str, Any]] = []
    if request.variants is not None:
        rows = _variant_rows(request.variants, errors)
    elif request.grid is not None:
        rows = _grid_rows(request.grid)
        errors += [_error(("grid", p), f"grid: {problem}") for p in request.grid if (problem := path_problem(p))]
    else:
        assert request.random is not None
        rows = _random_rows(request.random)
        errors += [
            _error(("random", "space", p), f"random: {problem}")
            for p in request.random.space
            if (problem := path_problem(p))
        ]
    if request.variants is not None:
        for row in rows:
            for path in row.overrides:
                if problem := path_problem(path):
                    errors.append(_error((*row.loc, path), f"row {row.name!r} ({_where(row.loc)}): {problem}"))
    if errors:
        raise SweepInvalid(errors[:MAX_REPORTED_ERRORS])

    default_seed = ExperimentSpec.model_fields["seed"].default
    members: list[SweepMember] = []
    for r, row in enumerate(rows):
        spec = apply_overrides(request.base, row.overrides)
        spec["name"] = row.name
        seed = spec.get("seed", default_seed)
        for repeat in range(request.repeats):
            member_spec = copy.deepcopy(spec) if repeat else spec
            if request.repeats > 1 and isinstance(seed, int) and not isinstance(seed, bool):
                member_spec["seed"] = seed + repeat
            members.append(SweepMember(len(members), r, row.name, repeat, member_spec, row.loc))
    return members


def _where(loc: tuple[str | int, ...]) -> str:
    return f"{loc[0]}[{loc[1]}]" if len(loc) == 2 else ".".join(map(str, loc))


def check_sweep(
    request: SweepRequest | dict[str, Any],
    *,
    max_params: int | None = None,
    max_size: int | None = None,
    max_epochs: int | None = None,
    upload_info: Callable[[str], DatasetInfo | None] | None = None,
    max_run_memory_bytes: int | None = None,
) -> list[CheckedMember]:
    """Expand and validate every member; one bad row refuses the whole sweep (SweepInvalid
    lists every bad row, each once; a problem every row shares is reported once, at `base`)."""
    members = expand(request, max_size=max_size)
    checked: list[CheckedMember] = []
    per_row: dict[int, list[dict[str, Any]]] = {}
    for member in members:
        try:
            result = validate_spec(
                member.spec, max_params=max_params, upload_info=upload_info, max_run_memory_bytes=max_run_memory_bytes
            )
        except SpecInvalid as exc:
            per_row.setdefault(member.row, exc.errors)
            continue
        if max_epochs is not None and result.spec.epochs > max_epochs:
            per_row.setdefault(member.row, [_error(
                ("epochs",), f"{result.spec.epochs} epochs is above the limit of {max_epochs} (LABTRAIN_MAX_EPOCHS)",
                "too_many_epochs",
            )])  # fmt: skip
            continue
        checked.append(CheckedMember(member, result))
    if not per_row:
        return checked
    first = {m.row: m for m in reversed(members)}
    problems = [[(tuple(e["loc"]), e["msg"]) for e in errs] for errs in per_row.values()]
    if len(per_row) == len(first) and len(first) > 1 and all(p == problems[0] for p in problems):
        shared = next(iter(per_row.values()))
        raise SweepInvalid([{**e, "loc": ["base", *e["loc"]], "msg": f"every row: {e['msg']}"} for e in shared])
    errors = []
    for row, errs in per_row.items():
        m = first[row]
        for e in errs:
            errors.append({**e, "loc": [*m.loc, *e["loc"]], "msg": f"row {m.name!r} ({_where(m.loc)}): {e['msg']}"})
    raise SweepInvalid(errors[:MAX_REPORTED_ERRORS])
