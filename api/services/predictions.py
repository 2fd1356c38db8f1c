"""Serving trained models: predictions from the cached model, evaluations on a split (recorded,
test looks counted), and the stored model itself.

Only a succeeded experiment has a model to serve; any other status is ExperimentNotFinished.
torch (through ml.predict, ml.evaluate) is imported on first use, never at API start-up.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from api.errors import DatasetUnavailable, ExperimentNotFinished, ExperimentNotFound, InvalidInputs, ModelUnavailable
from api.model_cache import ModelCache
from api.services.experiments import get_experiment
from core.artifact_store import ArtifactStore, ArtifactUnavailable
from core.repositories import artifacts as artifacts_repo
from core.repositories import evaluations as evaluations_repo
from core.repositories.artifacts import ModelRef
from core.settings import Settings
from core.tables import Artifact, Evaluation, Experiment

if TYPE_CHECKING:
    from ml.datasets import Dataset
    from ml.predict import Predictor

_ROW = re.compile(r"^row (\d+): (.*)$", re.DOTALL)
# ml.predict's messages → pydantic-like error types (anything else is a value_error).
_INPUT_ERROR_TYPES = (
    ("is not a number", "number_type"),
    ("not a finite number", "finite_number"),
    ("missing feature", "missing"),
    ("unknown feature", "extra_forbidden"),
    ("expected ", "shape"),
    ("not a rectangular array", "shape"),
    ("not an object", "shape"),
)


# -- the model -------------------------------------------------------------------------------


def succeeded_experiment(session: Session, owner: str, experiment_id: str) -> Experiment:
    """The experiment, if it succeeded; else ExperimentNotFinished naming its status."""
    experiment = get_experiment(session, owner, experiment_id)
    if experiment.status == "succeeded":
        return experiment
    state = {
        "queued": "is queued",
        "running": f"is running (epoch {experiment.epochs_done} of {experiment.spec.get('epochs', '?')})",
        "failed": f"failed ({experiment.error})" if experiment.error else "failed",
        "cancelled": "was cancelled",
        "diverged": "diverged" + (f" ({experiment.error})" if experiment.error else ""),
    }.get(experiment.status, f"is {experiment.status}")
    raise ExperimentNotFinished(
        f"experiment {experiment_id} {state}; only a succeeded experiment has a model to serve",
        status=experiment.status,
    )


def model_artifact(session: Session, experiment: Experiment) -> Artifact:
    artifact = artifacts_repo.describe(session, experiment.id, "model")
    if artifact is None:
        raise ModelUnavailable(f"experiment {experiment.id} succeeded but no model is stored for it")
    return artifact


def serving_ref(session: Session, owner: str, experiment_id: str) -> ModelRef:
    """The identity of a succeeded experiment's model, in one query (a prediction's only query
    when its model is cached); 404, 409 or 503 otherwise."""
    ref = artifacts_repo.model_ref(session, experiment_id, owner)
    if ref is None or ref.status != "succeeded":
        succeeded_experiment(session, owner, experiment_id)  # raises, naming the status
        ref = artifacts_repo.model_ref(session, experiment_id, owner)  # it succeeded a moment ago
        if ref is None:
            raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
    if ref.artifact_id is None:
        raise ModelUnavailable(f"experiment {experiment_id} succeeded but no model is stored for it")
    return ref


def cached_model(
    session: Session, cache: ModelCache, store: ArtifactStore, experiment_id: str, ref: ModelRef
) -> Predictor:
    """The model `ref` names, from the cache; keyed by the exact stored blob (row id, creation
    time, sha256), so a replaced model is never answered for its successor or the reverse."""

    def fetch() -> bytes:
        artifact = artifacts_repo.get_by_id(session, ref.artifact_id) if ref.artifact_id is not None else None
        if artifact is None or (artifact.created_at, artifact.sha256) != (ref.created_at, ref.sha256):
            raise ArtifactUnavailable(
                f"the model of experiment {experiment_id} was replaced while being loaded; send the request again"
            )
        return store.read(session, artifact)

    try:
        return cache.get((experiment_id, ref.artifact_id, ref.created_at, ref.sha256), fetch)
    except ArtifactUnavailable as exc:
        raise ModelUnavailable(str(exc)) from exc


# -- predictions -----------------------------------------------------------------------------


def _inputs_error(message: str, kind: str, row: int | None = None) -> InvalidInputs:
    loc: list[str | int] = ["body", "inputs"] if row is None else ["body", "inputs", row]
    return InvalidInputs([{"loc": loc, "msg": message, "type": kind}])


def _from_input_error(message: str) -> InvalidInputs:
    """ml.predict.InputError ("row 3: 'a' is not a number") → a 422 item located at the row."""
    kind = next((t for needle, t in _INPUT_ERROR_TYPES if needle in message), "value_error")
    match = _ROW.match(message)
    if match is None:
        return _inputs_error(message, kind)
    return _inputs_error(match.group(2), kind, int(match.group(1)))


def _first_non_finite(predictions: list[dict[str, Any]]) -> int | None:
    def finite(value: Any) -> bool:
        if isinstance(value, dict):
            return all(finite(v) for v in value.values())
        if isinstance(value, list):
            return all(finite(v) for v in value)
        return not isinstance(value, float) or math.isfinite(value)

    return next((i for i, p in enumerate(predictions) if not finite(p)), None)


def predict(
    session: Session,
    cache: ModelCache,
    store: ArtifactStore,
    settings: Settings,
    *,
    owner: str,
    experiment_id: str,
    inputs: list[Any],
) -> list[dict[str, Any]]:
    """One prediction per input row, in the dataset's original units."""
    from ml.predict import InputError

    ref = serving_ref(session, owner, experiment_id)
    if not inputs:
        raise _inputs_error("inputs must be a non-empty list of rows", "too_short")
    if len(inputs) > settings.max_prediction_rows:
        raise _inputs_error(
            f"{len(inputs)} rows is more than the limit of {settings.max_prediction_rows} per request "
            "(LABTRAIN_MAX_PREDICTION_ROWS); send them in several requests",
            "too_long",
        )
    predictor = cached_model(session, cache, store, experiment_id, ref)
    try:
        x = predictor.parse(inputs)
    except InputError as exc:
        raise _from_input_error(str(exc)) from None
    predictions = predictor.predict_array(x, settings.max_prediction_memory_bytes)
    bad = _first_non_finite(predictions)
    if bad is not None:
        raise _inputs_error(
            "the model's output for this row is not a finite number; are its values in the dataset's original units?",
            "non_finite_output",
            bad,
        )
    return predictions


def predict_in_session(
    factory: sessionmaker[Session],
    cache: ModelCache,
    store: ArtifactStore,
    settings: Settings,
    *,
    owner: str,
    experiment_id: str,
    inputs: list[Any],
) -> list[dict[str, Any]]:
    """`predict` in a session of its own (read-only: closed, never committed)."""
    with factory() as session:
        return predict(session, cache, store, settings, owner=owner, experiment_id=experiment_id, inputs=inputs)


# -- evaluations -----------------------------------------------------------------------------


def evaluation_dataset(session: Session, experiment: Experiment, predictor: Predictor) -> Dataset:
    """The data the model was trained on: a built-in rebuilt from its spec, or the upload's bytes."""
    from ml.data import load_dataset
    from ml.datasets import DatasetError
    from ml.datasets.files import from_upload
    from ml.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate(predictor.spec)
    if spec.dataset.id is None:
        return load_dataset(spec)
    upload = evaluations_repo.uploaded_dataset(session, spec.dataset.id, experiment.owner)
    if upload is None:
        raise DatasetUnavailable(f"the uploaded dataset {spec.dataset.id} of experiment {experiment.id} is gone")
    try:
        dataset = from_upload(upload.format, upload.data, upload.info, name=upload.name)
    except (DatasetError, ValueError, KeyError) as exc:
        raise DatasetUnavailable(
            f"the uploaded dataset {spec.dataset.id} cannot be read again to evaluate on it: {exc}"
        ) from exc
    mine, trained = dataset.info, predictor.info
    if (mine.input_shape, mine.features, mine.targets, mine.n_samples) != (
        trained.input_shape,
        trained.features,
        trained.targets,
        trained.n_samples,
    ):
        raise DatasetUnavailable(
            f"the uploaded dataset {spec.dataset.id} no longer matches the data experiment {experiment.id} was "
            "trained on; its splits cannot be rebuilt"
        )
    return dataset


def evaluate(
    session: Session,
    cache: ModelCache,
    store: ArtifactStore,
    *,
    owner: str,
    experiment_id: str,
    split: str,
) -> tuple[Evaluation, int]:
    """Metrics on `split` in original units, recorded; returns the evaluation and the
    experiment's test evaluation count after it."""
    from ml.evaluate import evaluate as evaluate_split

    experiment = succeeded_experiment(session, owner, experiment_id)
    predictor = cached_model(session, cache, store, experiment_id, serving_ref(session, owner, experiment_id))
    dataset = evaluation_dataset(session, experiment, predictor)
    try:
        metrics = evaluate_split(predictor, dataset, split)
    except ValueError as exc:  # the split is empty (split.test = 0)
        raise InvalidInputs([{"loc": ["body", "split"], "msg": str(exc), "type": "empty_split"}]) from exc
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    return evaluations_repo.record(session, experiment.id, split, clean)


def list_evaluations(session: Session, owner: str, experiment_id: str) -> list[Evaluation]:
    get_experiment(session, owner, experiment_id)
    return evaluations_repo.list_for(session, experiment_id)


# -- the model file --------------------------------------------------------------------------


def read_model(
    session: Session, store: ArtifactStore, *, owner: str, experiment_id: str
) -> tuple[Experiment, Artifact, bytes | Path]:
    """The stored model: its bytes, or the path of its file (served without reading it here)."""
    experiment = succeeded_experiment(session, owner, experiment_id)
    artifact = model_artifact(session, experiment)
    try:
        path = store.path_of(artifact)
        if path is not None and path.is_file():
            return experiment, artifact, path
        return experiment, artifact, store.read(session, artifact)
    except ArtifactUnavailable as exc:
        raise ModelUnavailable(str(exc)) from exc
