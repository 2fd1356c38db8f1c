"""Dataset use cases: describe the built-ins and the owner's uploads, store an upload (validated
completely first), look one up for a spec, and delete one no experiment is waiting to train on.

An upload's bytes live in its database row, so a worker on any host can train on it; they are
parsed as numbers only (CSV text, NPZ with allow_pickle=False), never unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import UnitOfWork
from api.errors import (
    DatasetInUse,
    DatasetInvalid,
    DatasetNameTaken,
    DatasetNotFound,
    DatasetReadOnly,
    UploadTooLarge,
)
from api.schemas import DatasetRead
from core.repositories import datasets as repo
from core.settings import Settings
from core.tables import UploadedDataset
from ml.datasets import (
    BUILTINS,
    DatasetError,
    DatasetInfo,
    DatasetTooLarge,
    Target,
    UploadLimits,
    describe_builtin,
    read_csv,
    read_npz,
    split_sizes,
)
from ml.datasets.base import NO_LIMITS, excerpt
from ml.datasets.labels import CONTROL
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


def find_upload(session: Session, owner: str, name_or_id: str, *, lock: bool = False) -> UploadedDataset | None:
    """One of the owner's uploads by id, else by name (names are unique per owner). A key with a
    control character names none (and never reaches PostgreSQL, which refuses NUL in text)."""
    if CONTROL.search(name_or_id) is not None:
        return None
    row = repo.get(session, name_or_id, owner, lock=lock)
    if row is None:
        row = repo.get_by_name(session, owner, name_or_id, lock=lock)
    return row


def get_upload(session: Session, owner: str, name_or_id: str) -> UploadedDataset:
    row = find_upload(session, owner, name_or_id)
    if row is None:
        raise DatasetNotFound(
            f"no dataset {excerpt(name_or_id, 80)!r}: neither a built-in ({', '.join(BUILTINS)}) nor the name "
            "or id of one of your uploads"
        )
    return row


def check_upload_exists(session: Session, owner: str, dataset_id: str | None) -> None:
    """After a failed insert: DatasetNotFound if the upload it named was deleted meanwhile (a
    foreign-key failure, not a bad request). A built-in (None) or a present upload passes."""
    if dataset_id is not None and repo.get(session, dataset_id, owner) is None:
        raise DatasetNotFound(f"dataset {dataset_id} was deleted while the experiment was being created on it")


def read_dataset(session: Session, owner: str, name_or_id: str) -> DatasetRead:
    """A built-in by name, or one of the owner's uploads by id or name."""
    if name_or_id in BUILTINS:
        return builtin_read(name_or_id)
    return upload_read(get_upload(session, owner, name_or_id))


def upload_info(session: Session, owner: str) -> Callable[[str], DatasetInfo | None]:
    """For `validate_spec`: an upload's id or name → its DatasetInfo (with `upload_id`, so the
    normalized spec names it by id), only among the owner's uploads (another owner's is unknown).
    Each row read is share-locked to the end of the request's transaction, so it cannot be
    deleted under the experiment being created on it (PostgreSQL; on SQLite the insert's foreign
    key check refuses it, see api.services.experiments)."""
    seen: dict[str, DatasetInfo | None] = {}

    def lookup(name_or_id: str) -> DatasetInfo | None:
        if name_or_id not in seen:
            row = find_upload(session, owner, name_or_id, lock=True)
            seen[name_or_id] = replace(info_from_dict(row.info), upload_id=row.id) if row is not None else None
        return seen[name_or_id]

    return lookup


def _format_of(form: UploadForm) -> str:
    if form.format is not None:
        fmt = form.format.strip().lower()
        if fmt not in FORMATS:
            raise _invalid("format", f"format {excerpt(form.format, 40)!r} is not one of {', '.join(FORMATS)}")
        return fmt
    suffix = PurePath(form.filename or "").suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    return "npz" if form.data.startswith(NPZ_MAGIC) else "csv"


def _name_of(form: UploadForm) -> str:
    name = (form.name if form.name is not None else PurePath(form.filename or "upload").stem).strip()
    if not name or len(name) > 200:
        raise _invalid("name", "a dataset name needs 1 to 200 characters (the `name` field, or the file's name)")
    bad = CONTROL.search(name)
    if bad is not None:
        raise _invalid(
            "name", f"the dataset name holds a control character (U+{ord(bad.group()):04X}); use printable text"
        )
    if name in BUILTINS:
        raise DatasetNameTaken(
            f"{name!r} is a built-in dataset's name (a spec's dataset.name would be ambiguous); pick another `name`"
        )
    return name


@dataclass(frozen=True)
class ParsedUpload:
    """An upload checked completely, ready to store: its bytes, format, name and description."""

    data: bytes
    format: str
    name: str
    info: DatasetInfo


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_columns=settings.max_upload_columns,
        max_cells=settings.max_upload_cells,
        max_inflated_bytes=settings.max_upload_inflated_bytes,
    )


def parse_upload(form: UploadForm, limits: UploadLimits = NO_LIMITS) -> ParsedUpload:
    """Validate an upload completely, within `limits`, keeping none of its arrays (CPU-bound: the
    route runs it in a worker thread, holding no database session). DatasetInvalid (422) names
    the field, column or array at fault; UploadTooLarge (413) the limit and its setting."""
    fmt, name = _format_of(form), _name_of(form)
    if not form.data:
        raise _invalid("file", "the file is empty")
    what = f"{fmt.upper()} file {excerpt(form.filename or name, 80)!r}"
    try:
        if fmt == "csv":
            if not form.target or not form.target.strip():
                raise _invalid("target", "a CSV upload needs `target`, the name of the column to predict", "missing")
            dataset = read_csv(form.data, form.target.strip(), name=name, limits=limits, keep=False)
        else:
            if form.target is not None:
                raise _invalid("target", "`target` is for CSV files; an NPZ's target is its array y")
            dataset = read_npz(form.data, name=name, limits=limits, keep=False)
    except DatasetTooLarge as exc:
        setting = f"LABTRAIN_{exc.limit.replace('max_', 'MAX_UPLOAD_').upper()}"
        raise UploadTooLarge(f"{what}: {exc} ({setting})", limit=setting) from exc
    except DatasetError as exc:
        raise _invalid("file", f"{what}: {exc}", "dataset_invalid") from exc
    return ParsedUpload(form.data, fmt, name, dataset.info)


def create_dataset(uow: UnitOfWork, *, owner: str, upload: ParsedUpload) -> UploadedDataset:
    """Store a validated upload under a name the owner does not use yet."""
    session = uow.session
    name = upload.name
    existing = repo.get_by_name(session, owner, name)
    if existing is not None:
        raise DatasetNameTaken(f"you already have a dataset named {name!r} ({existing.id}); pick another `name`")
    info = upload.info.to_dict()
    try:
        return repo.create(session, owner=owner, name=name, format=upload.format, info=info, data=upload.data)
    except IntegrityError:  # a concurrent upload took the name first
        session.rollback()
        raise DatasetNameTaken(f"you already have a dataset named {name!r}; pick another `name`") from None


def delete_dataset(uow: UnitOfWork, owner: str, name_or_id: str) -> None:
    """Delete an upload (by id or name) no queued or running experiment trains on (409 naming
    them otherwise)."""
    session = uow.session
    if name_or_id in BUILTINS:
        raise DatasetReadOnly(f"{name_or_id!r} is a built-in dataset; only uploads can be deleted")
    dataset_id = get_upload(session, owner, name_or_id).id
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
