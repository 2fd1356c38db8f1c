"""The steps every run of the worker shares, single or grouped: the claim (with the retry cap),
the resume point of a taken-over run, the fenced finish, the thread arguments, the time limit,
and the JSON-safe metrics. `worker/runner.py` and `worker/group_runner.py` both use these, so
a run ends the same way whichever runner trained it.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from core.artifact_store import ArtifactStore, ArtifactUnavailable
from core.db import in_session, reset_connections
from core.repositories import artifacts
from core.repositories import experiments as experiments_repo
from core.repositories import metrics as metrics_repo
from core.repositories import runs as runs_repo
from core.settings import Settings, get_settings
from core.tables import utcnow
from ml.ranking import is_better
from ml.results import EpochResult

log = logging.getLogger("labtrain.worker")

CANCEL_POLL_SECONDS = 0.3  # at most this often a run reads its cancel flag


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe metrics: non-finite numbers become null."""
    return {k: (finite(v) if isinstance(v, float) else v) for k, v in metrics.items()}


def epoch_metrics(row: EpochResult | dict[str, Any]) -> dict[str, Any]:
    """The validation metrics of one epoch as stored in latest/best: val_loss, the task's metrics, epoch."""
    if isinstance(row, EpochResult):
        return clean({"epoch": row.epoch, "val_loss": row.val_loss, **row.metrics})
    return clean(row)


def keeps_best(spec: dict[str, Any]) -> bool:
    """The spec's `keep` (absent from specs stored before it existed: the default, as training reads it)."""
    return spec.get("keep", "best") == "best"


def served_of(keep_best: bool, latest: dict[str, Any] | None, best: dict[str, Any] | None) -> dict[str, Any] | None:
    """What `metrics.served` says while a run trains: the epoch whose weights it keeps so far."""
    return best if keep_best else latest


def thread_settings(settings: Settings) -> dict[str, Any]:
    """The thread arguments of `ml.train.train` / `ml.group.train_group` for this worker: the
    rule itself is `ml.cpu.thread_count` (one place for the library and the worker)."""
    return {"threads": settings.torch_threads or None, "processes": settings.worker_concurrency}


def over_time_limit(exc: BaseException) -> bool:
    """True when the run's time limit caused `exc`: Celery's soft limit is a signal raised wherever
    the run is, and code cleaning up after it (SQLAlchemy's pool inside a connection check) may
    raise its own exception on top. The connections are reset: one may be left mid-query."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SoftTimeLimitExceeded):
            reset_connections()
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def time_limit_error(settings: Settings) -> str:
    return f"the run took longer than the limit of {settings.max_run_seconds} s (LABTRAIN_MAX_RUN_SECONDS)"


def claim_run(session: Any, experiment_id: str, *, worker: str, takeover: bool) -> runs_repo.Claim | None:
    """The claim of single and group runs: a queued experiment, or a running one whose run is
    lost (stale heartbeat, or `takeover`: its message came back because its process died). A run
    whose every allowed attempt died is ended here instead (`claim.gave_up`), its checkpoint
    dropped: a run that kills its process (out of memory, a crash in a library) is not delivered
    forever."""
    settings = get_settings()
    stale_before = utcnow() - timedelta(seconds=settings.heartbeat_stale_seconds)
    claim = runs_repo.claim(
        session,
        experiment_id,
        worker=worker,
        stale_before=stale_before,
        takeover=takeover,
        max_attempts=settings.max_attempts,
    )
    if claim is not None and claim.gave_up:
        ArtifactStore.from_settings(settings).remove(session, experiment_id, "checkpoint")
    return claim


def gave_up(experiment_id: str, attempts: int) -> str:
    """Log a run `claim_run` ended; returns what happened, for the task's result."""
    log.error(
        "experiment %s: its worker process died in each of its %d attempts; not tried again", experiment_id, attempts
    )
    return "gave up"


def resume_point(session: Any, experiment_id: str, attempt: int) -> tuple[bytes | None, dict[str, Any] | None]:
    """For a taken-over run: its checkpoint (or None to start over), with the history after the
    checkpoint dropped so the epochs trained again are not recorded twice."""
    from ml.train import checkpoint_epoch

    checkpoint = artifacts.describe(session, experiment_id, "checkpoint")
    blob: bytes | None = None
    if checkpoint is not None:
        try:
            blob = ArtifactStore.from_settings(get_settings()).read(session, checkpoint)
        except ArtifactUnavailable as exc:  # start over rather than never finish
            log.warning("experiment %s: checkpoint unreadable, training from the start: %s", experiment_id, exc)
    done = checkpoint_epoch(blob) if blob is not None else 0
    metrics_repo.delete_after(session, experiment_id, done)
    rows = metrics_repo.list_epochs(session, experiment_id)
    best: dict[str, Any] | None = None
    latest: dict[str, Any] | None = None
    for row in rows:
        latest = epoch_metrics({"epoch": row.epoch, "val_loss": row.val_loss, **row.metrics})
        if is_better(latest, best):
            best = latest
    experiment = experiments_repo.get(session, experiment_id)
    served = served_of(keeps_best(experiment.spec) if experiment is not None else True, latest, best)
    runs_repo.record_progress(
        session, experiment_id, attempt, epochs_done=done, latest=latest, best=best, served=served
    )
    return blob, best


def finish(
    experiment_id: str,
    attempt: int,
    *,
    status: str,
    error: str | None = None,
    artifact: bytes | None = None,
    **values: Any,
) -> str:
    def write(session: Any) -> bool:
        if not runs_repo.touch(session, experiment_id, attempt):
            return False
        store = ArtifactStore.from_settings(get_settings())
        if artifact is not None:
            store.put(session, experiment_id, "model", artifact, epoch=values.get("epochs_done"))
        store.remove(session, experiment_id, "checkpoint")  # a finished run never resumes
        runs_repo.finish(session, experiment_id, attempt, status=status, error=error, **values)
        return True

    if not in_session(write):
        return "lost"
    log.info("experiment %s: %s%s", experiment_id, status, f" ({error})" if error else "")
    return status
