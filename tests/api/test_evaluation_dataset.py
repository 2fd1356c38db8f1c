"""Evaluating a model trained on an uploaded dataset: its bytes are read again from the datasets
table, and an upload that is gone or no longer the data the model saw is refused, not guessed.
A real SQLite database; the model trained in-process on the upload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from api.errors import DatasetUnavailable
from api.services.predictions import evaluation_dataset
from core.db import create_db_engine, session_factory, upgrade_database
from core.repositories import experiments as experiments_repo
from core.tables import Experiment, UploadedDataset
from ml.datasets import from_csv
from ml.evaluate import evaluate
from ml.predict import Predictor, load_predictor
from ml.train import train


def csv_bytes(n: int = 200, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return ("a,b,label\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{t}\n" for r, t in zip(x, y, strict=True))).encode()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'labtrain.db'}"
    upgrade_database(url)
    engine: Engine = create_db_engine(url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


@pytest.fixture
def upload(session: Session) -> UploadedDataset:
    data = csv_bytes()
    dataset = from_csv(data, "label", name="blobs")
    row = UploadedDataset(owner="default", name="blobs", format="csv", info=dataset.info.to_dict(), data=data,
                          size=len(data))  # fmt: skip
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def trained(session: Session, upload: UploadedDataset) -> tuple[Experiment, Predictor]:
    spec = {"dataset": {"id": upload.id}, "model": {"hidden_layers": 1, "neurons": 4}, "epochs": 3}
    result = train(spec, dataset=from_csv(upload.data, "label", name="blobs"))
    predictor = load_predictor(result.artifact)
    experiment = experiments_repo.create(
        session, owner="default", name="on-upload", spec=predictor.spec, task="binary", param_count=17, queue="cpu",
        dataset_id=upload.id,
    )  # fmt: skip
    return experiment, predictor


def test_an_uploads_split_is_rebuilt_from_its_bytes(session: Session, trained: tuple[Experiment, Predictor]) -> None:
    experiment, predictor = trained
    dataset = evaluation_dataset(session, experiment, predictor)
    assert dataset.info == predictor.info
    metrics = evaluate(predictor, dataset, "test")
    assert metrics["rows"] == 40
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_an_upload_that_changed_or_is_gone_is_refused(
    session: Session, upload: UploadedDataset, trained: tuple[Experiment, Predictor]
) -> None:
    experiment, predictor = trained
    session.execute(update(UploadedDataset).where(UploadedDataset.id == upload.id).values(data=csv_bytes(150)))
    session.expire_all()
    with pytest.raises(DatasetUnavailable, match="no longer matches the data experiment"):
        evaluation_dataset(session, experiment, predictor)

    session.execute(update(Experiment).where(Experiment.id == experiment.id).values(dataset_id=None))
    session.delete(session.get(UploadedDataset, upload.id))
    session.flush()
    with pytest.raises(DatasetUnavailable, match=f"the uploaded dataset {upload.id} of experiment .* is gone"):
        evaluation_dataset(session, experiment, predictor)
