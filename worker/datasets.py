"""The uploaded dataset an experiment trains on, rebuilt from the bytes stored in its database
row: a worker on any host that reaches the database can train on it. Built-ins need nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.db import session_scope
from core.repositories import datasets as datasets_repo
from core.repositories import experiments as experiments_repo

if TYPE_CHECKING:
    from ml.datasets import Dataset


class UploadUnavailable(RuntimeError):
    """The experiment's upload is gone or cannot be read; the run fails with this message."""


def upload_of(experiment_id: str) -> Dataset | None:
    """The upload `experiment_id` trains on, as arrays (None when it trains on a built-in)."""
    from ml.datasets import DatasetError
    from ml.datasets.files import from_upload

    with session_scope() as session:
        row = experiments_repo.get(session, experiment_id)
        if row is None:
            return None
        dataset_id = row.dataset_id or (row.spec.get("dataset") or {}).get("id")
        if dataset_id is None:
            return None
        upload = datasets_repo.get(session, dataset_id, row.owner, with_data=True)
        if upload is None:
            raise UploadUnavailable(f"the uploaded dataset {dataset_id} is gone (deleted?)")
        fmt, data, info, name = upload.format, upload.data, dict(upload.info), upload.name
    try:
        return from_upload(fmt, data, info, name=name)
    except DatasetError as exc:
        raise UploadUnavailable(f"the uploaded dataset {dataset_id} cannot be read: {exc}") from exc
