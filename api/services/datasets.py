"""Dataset use cases: describe the built-ins and the owner's uploads, store an upload (validated
completely first), look one up for a spec, and delete one no experiment is waiting to train on.

An upload's bytes live in its database row, so a worker on any host can train on it; they are
parsed as numbers only (CSV text, NPZ with allow_pickle=False), never unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import UnitOfWork
from api.errors import DatasetInUse, DatasetInvalid, DatasetNameTaken, DatasetNotFound, DatasetReadOnly
from api.schemas import DatasetRead
from core.repositories import datasets as repo
from core.tables import UploadedDataset
from ml.datasets import BUILTINS, DatasetError, DatasetInfo, Target, describe_builtin, from_csv, from_npz, split_sizes
from ml.spec import SplitSpec

FORMATS = ("csv", "npz")
NPZ_MAGIC = b"PK"  # an .npz is a zip archive


@dataclass(frozen=True)
class UploadForm:
    """The fields of a `POST /datasets` form, as read from the request."""

    data: bytes
    filename: str | None
    target: str | None
    name: str | None
    format: str | None


def _invalid(field: str, message: str, kind: str = "value_error") -> DatasetInvalid:
    return DatasetInvalid([{"loc": ["body", field], "msg": message, "type": kind}])


def _default_sizes(n: int) -> dict[str, int]:
    split = SplitSpec()
    try:
        return split_sizes(n, split.val, split.test)
    except DatasetError:  # too few rows for the default split (never for a stored upload)
        return {"train": n, "val": 0, "test": 0}


def info_from_dict(data: dict[str, Any]) -> DatasetInfo:
    """The DatasetInfo stored with an upload (`DatasetInfo.to_dict()`), back as the object."""
    targets = tuple(
        Target(name, tuple(classes) if classes is not None else None) for name, classes in data["targets"].items()
    )
    return DatasetInfo(
        name=data["name"],
        task=data["task"],
        input_shape=tuple(data["input_shape"]),
        features=tuple(data["features"]),
        targets=targets,
        n_samples=int(data["n_samples"]),
        description=data.get("description", ""),
    )


def _read(info: dict[str, Any], **fields: Any) -> DatasetRead:
    return DatasetRead(
        task=info["task"],
        input_shape=info["input_shape"],
        features=info["features"],
        targets=info["targets"],
        n_samples=info["n_samples"],
        sizes=_default_sizes(int(info["n_samples"])),
        description=info.get("description", ""),
        **fields,
    )


def builtin_read(name: str) -> DatasetRead:
    params = BUILTINS[name].params().model_dump()
    return _read(describe_builtin(name, params).to_dict(), name=name, kind="builtin", params=params)


def upload_read(row: UploadedDataset) -> DatasetRead:
    return _read(
        row.info,
        id=row.id,
        name=row.name,
        kind="upload",
        format=row.format,
        size_bytes=row.size,
        created_at=row.created_at,
    )


def list_datasets(session: Session, owner: str) -> list[DatasetRead]:
    """The built-ins, then the owner's uploads, newest first."""
    return [builtin_read(name) for name in BUILTINS] + [upload_read(r) for r in repo.list_for(session, owner)]


def get_upload(session: Session, owner: str, dataset_id: str) -> UploadedDataset:
    row = repo.get(session, dataset_id, owner)
    if row is None:
        raise DatasetNotFound(
            f"no dataset {dataset_id!r}: neither a built-in ({', '.join(BUILTINS)}) nor one of your uploads"
        )
    return row


def read_dataset(session: Session, owner: str, name_or_id: str) -> DatasetRead:
    """A built-in by name, or one of the owner's uploads by id."""
    if name_or_id in BUILTINS:
        return builtin_read(name_or_id)
    return upload_read(get_upload(session, owner, name_or_id))


def upload_info(session: Session, owner: str) -> Callable[[str], DatasetInfo | None]:
    """For `validate_spec`: an upload id → its DatasetInfo, only among the owner's uploads (another
    owner's id is unknown). Each row read is share-locked to the end of the request's
    transaction, so it cannot be deleted under the experiment being created on it."""
    seen: dict[str, DatasetInfo | None] = {}

    def lookup(dataset_id: str) -> DatasetInfo | None:
        if dataset_id not in seen:
            row = repo.get(session, dataset_id, owner, lock=True)
            seen[dataset_id] = info_from_dict(row.info) if row is not None else None
        return seen[dataset_id]

    return lookup


def _format_of(form: UploadForm) -> str:
    if form.format is not None:
        fmt = form.format.strip().lower()
        if fmt not in FORMATS:
            raise _invalid("format", f"format {form.format!r} is not one of {', '.join(FORMATS)}")
        return fmt
    suffix = PurePath(form.filename or "").suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    return "npz" if form.data.startswith(NPZ_MAGIC) else "csv"


def _name_of(form: UploadForm) -> str:
    name = (form.name if form.name is not None else PurePath(form.filename or "upload").stem).strip()
    if not name or len(name) > 200:
        raise _invalid("name", "a dataset name needs 1 to 200 characters (the `name` field, or the file's name)")
    return name


def parse_upload(form: UploadForm) -> tuple[str, str, DatasetInfo]:
    """Validate an upload completely: (format, name, its description), or DatasetInvalid naming
    the field, column or array at fault."""
    fmt, name = _format_of(form), _name_of(form)
    if not form.data:
        raise _invalid("file", "the file is empty")
    try:
        if fmt == "csv":
            if not form.target or not form.target.strip():
                raise _invalid("target", "a CSV upload needs `target`, the name of the column to predict", "missing")
            dataset = from_csv(form.data, form.target.strip(), name=name)
        else:
            if form.target is not None:
                raise _invalid("target", "`target` is for CSV files; an NPZ's target is its array y")
            dataset = from_npz(form.data, name=name)
    except DatasetError as exc:
        raise _invalid("file", f"{fmt.upper()} file {form.filename or name!r}: {exc}", "dataset_invalid") from exc
    return fmt, name, dataset.info


def create_dataset(uow: UnitOfWork, *, owner: str, form: UploadForm) -> UploadedDataset:
    """Store a validated upload under a name the owner does not use yet."""
    fmt, name, info = parse_upload(form)
    session = uow.session
    existing = repo.get_by_name(session, owner, name)
    if existing is not None:
        raise DatasetNameTaken(f"you already have a dataset named {name!r} ({existing.id}); pick another `name`")
    try:
        return repo.create(session, owner=owner, name=name, format=fmt, info=info.to_dict(), data=form.data)
    except IntegrityError:  # a concurrent upload took the name first
        session.rollback()
        raise DatasetNameTaken(f"you already have a dataset named {name!r}; pick another `name`") from None


def delete_dataset(uow: UnitOfWork, owner: str, dataset_id: str) -> None:
    """Delete an upload no queued or running experiment trains on (409 naming them otherwise)."""
    session = uow.session
    if dataset_id in BUILTINS:
        raise DatasetReadOnly(f"{dataset_id!r} is a built-in dataset; only uploads can be deleted")
    get_upload(session, owner, dataset_id)
    users = repo.active_users(session, dataset_id)
    if not users:
        try:
            repo.delete_upload(session, dataset_id)
            return
        except IntegrityError:  # an experiment on it was created meanwhile
            session.rollback()
            users = repo.active_users(session, dataset_id) or ["(one just created)"]
    shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    raise DatasetInUse(
        f"dataset {dataset_id} is used by {len(users)} queued or running experiment(s): {shown}; "
        "delete it once they have finished (or cancel them)",
        experiment_ids=users[:50],
    )
