"""SQL for evaluations: every look at a split of a trained model, and the count of looks at its
test split kept on the experiment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, undefer

from core.tables import Evaluation, Experiment, UploadedDataset, utcnow


def record(session: Session, experiment_id: str, split: str, metrics: dict[str, Any]) -> tuple[Evaluation, int]:
    """Insert an evaluation; a test evaluation also increments the experiment's `test_evaluations`
    in one UPDATE (concurrent evaluations each count). Returns the row and the experiment's count."""
    evaluation = Evaluation(experiment_id=experiment_id, split=split, metrics=metrics, created_at=utcnow())
    session.add(evaluation)
    session.flush()
    if split == "test":
        count = session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id)
            .values(test_evaluations=Experiment.test_evaluations + 1)
            .returning(Experiment.test_evaluations)
        ).scalar_one()
    else:
        count = session.execute(select(Experiment.test_evaluations).where(Experiment.id == experiment_id)).scalar_one()
    return evaluation, count


def list_for(session: Session, experiment_id: str) -> list[Evaluation]:
    """The experiment's evaluations, oldest first."""
    stmt = select(Evaluation).where(Evaluation.experiment_id == experiment_id).order_by(Evaluation.id)
    return list(session.scalars(stmt))


def uploaded_dataset(session: Session, dataset_id: str, owner: str) -> UploadedDataset | None:
    """The uploaded dataset an experiment was trained on, with its bytes, to evaluate on it again.
    (The datasets resource itself, issue 8, keeps its own SQL in its repository.)"""
    stmt = (
        select(UploadedDataset)
        .where(UploadedDataset.id == dataset_id, UploadedDataset.owner == owner)
        .options(undefer(UploadedDataset.data))
    )
    return session.scalars(stmt).one_or_none()
