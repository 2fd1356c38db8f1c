"""Run one experiment: claim its row, resume from its checkpoint if it has one, train through
`ml.train`, write every epoch, and end with exactly one terminal status.

Every database write is its own short unit of work (the worker never holds a transaction open
while training), retried with backoff while the database is unreachable (`core.db.in_session`),
and every write after the claim is fenced by the claimed `attempt`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from core.artifact_store import ArtifactStore, ArtifactUnavailable
from core.db import in_session, reset_connections
from core.repositories import artifacts
from core.repositories import experiments as experiments_repo
from core.repositories import metrics as metrics_repo
from core.settings import Settings, get_settings
from core.tables import utcnow
from ml.ranking import is_better
from ml.results import EpochResult, TrainResult

log = logging.getLogger("labtrain.worker")

CANCEL_POLL_SECONDS = 0.3  # at most this often a should_stop() reads the cancel flag
SMALL_MODEL_PARAMS = 200_000  # below this one thread is fastest (the work per op is tiny)
SMALL_CONV_PARAMS = 1_000_000  # the same for convolutional networks (ml.train.default_threads)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe metrics: non-finite numbers become null."""
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in metrics.items()}


def epoch_metrics(row: EpochResult | dict[str, Any]) -> dict[str, Any]:
    """The validation metrics of one epoch as stored in latest/best: val_loss, the task's metrics, epoch."""
    if isinstance(row, EpochResult):
        return _clean({"epoch": row.epoch, "val_loss": row.val_loss, **row.metrics})
    return _clean(row)


def keeps_best(spec: dict[str, Any]) -> bool:
    """The spec's `keep` (absent from specs stored before it existed: the default, as training reads it)."""
    return spec.get("keep", "best") == "best"


def served_of(keep_best: bool, latest: dict[str, Any] | None, best: dict[str, Any] | None) -> dict[str, Any] | None:
    """What `metrics.served` says while a run trains: the epoch whose weights it keeps so far."""
    return best if keep_best else latest


def _has_conv(spec: dict[str, Any]) -> bool:
    models = [spec.get("model") or {}, *((spec.get("model") or {}).get("heads") or {}).values()]
    return any((m or {}).get("type") == "cnn" for m in models)


def choose_threads(spec: dict[str, Any], param_count: int, settings: Settings) -> int:
    """Torch threads for one training process: 1 for small networks (under 200k parameters, or
    1M with convolutions: a step is overhead, not arithmetic, and the other workers on this host
    want their core; measured: the report's CNN ran 10-50x slower in `labtrain up --workers 2`
    with two threads per worker on two cores), else this host's cores shared among the worker's
    processes."""
    if settings.torch_threads:
        return settings.torch_threads
    if param_count < (SMALL_CONV_PARAMS if _has_conv(spec) else SMALL_MODEL_PARAMS):
        return 1
    return max(1, (os.cpu_count() or 1) // settings.worker_concurrency)


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


def write_epoch(
    session: Any,
    experiment_id: str,
    attempt: int,
    result: EpochResult,
    latest: dict[str, Any],
    best: Any,
    served: dict[str, Any] | None,
) -> None:
    """One epoch's metrics row and the experiment's progress (the caller has checked the fence)."""
    metrics_repo.add_epoch(
        session,
        experiment_id,
        epoch=result.epoch,
        train_loss=_finite(result.train_loss),
        val_loss=_finite(result.val_loss),
        metrics=_clean(result.metrics),
        seconds=result.seconds,
    )
    experiments_repo.record_progress(
        session, experiment_id, attempt, epochs_done=result.epoch, latest=latest, best=best, served=served
    )


class Run:
    """The callbacks `ml.train.train` calls, bound to one claimed attempt."""

    def __init__(self, experiment_id: str, attempt: int, best: dict[str, Any] | None, keep_best: bool) -> None:
        self.experiment_id = experiment_id
        self.attempt = attempt
        self.best = best
        self.keep_best = keep_best
        self.lost = False  # another attempt took the experiment over: write nothing more
        self.cancelled = False
        self._last_poll = 0.0

    def on_epoch(self, result: EpochResult) -> None:
        if self.lost:
            return
        latest = epoch_metrics(result)
        if is_better(latest, self.best):
            self.best = latest
        tries = 0

        def write(session: Any) -> bool:
            nonlocal tries
            tries += 1
            metrics_repo.relax_durability(session)
            if not experiments_repo.touch(session, self.experiment_id, self.attempt):
                return False
            if tries > 1:  # the commit of a lost try may have landed: write this epoch again
                metrics_repo.delete_after(session, self.experiment_id, result.epoch - 1)
            served = served_of(self.keep_best, latest, self.best)
            write_epoch(session, self.experiment_id, self.attempt, result, latest, self.best, served)
            return True

        self.lost = not in_session(write)

    def should_stop(self) -> bool:
        if self.lost or self.cancelled:
            return True
        now = time.monotonic()
        if now - self._last_poll < CANCEL_POLL_SECONDS:
            return False
        self._last_poll = now
        cancel, ours = in_session(lambda s: experiments_repo.poll_control(s, self.experiment_id, self.attempt))
        self.lost = not ours
        self.cancelled = cancel
        return self.lost or self.cancelled

    def on_checkpoint(self, blob: bytes, epoch: int) -> None:
        if self.lost:
            return

        def put(session: Any) -> bool:
            if not experiments_repo.touch(session, self.experiment_id, self.attempt):
                return False
            store = ArtifactStore.from_settings(get_settings())
            store.put(session, self.experiment_id, "checkpoint", blob, epoch=epoch)
            return True

        self.lost = not in_session(put)


def claim_run(session: Any, experiment_id: str, *, worker: str, takeover: bool) -> experiments_repo.Claim | None:
    """The claim of single and group runs: a queued experiment, or a running one whose run is
    lost (stale heartbeat, or `takeover`: its message came back because its process died). A run
    whose every allowed attempt died is ended here instead (`claim.gave_up`), its checkpoint
    dropped: a run that kills its process (out of memory, a crash in a library) is not delivered
    forever."""
    settings = get_settings()
    stale_before = utcnow() - timedelta(seconds=settings.heartbeat_stale_seconds)
    claim = experiments_repo.claim(
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


def _resume_point(session: Any, experiment_id: str, attempt: int) -> tuple[bytes | None, dict[str, Any] | None]:
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
    experiments_repo.record_progress(
        session, experiment_id, attempt, epochs_done=done, latest=latest, best=best, served=served
    )
    return blob, best


def run_experiment(experiment_id: str, *, worker: str, takeover: bool = False) -> str:
    """Claim and train `experiment_id`; returns "skipped" when there was nothing to claim, else
    the terminal status this run wrote ("lost" if another attempt took it over)."""
    settings = get_settings()

    def claim_it(session: Any) -> tuple[Any, ...] | None:
        claim = claim_run(session, experiment_id, worker=worker, takeover=takeover)
        if claim is None:
            return None
        if claim.gave_up:
            return (claim.attempt,)
        row = experiments_repo.get(session, experiment_id)
        assert row is not None
        resume_from, best = _resume_point(session, experiment_id, claim.attempt) if claim.resumed else (None, None)
        return claim.attempt, claim.resumed, row.spec, row.param_count, row.cancel_requested, resume_from, best

    claimed = in_session(claim_it)
    if claimed is None:
        log.info("experiment %s: nothing to claim (already taken, finished or unknown)", experiment_id)
        return "skipped"
    if len(claimed) == 1:
        return gave_up(experiment_id, claimed[0])
    attempt, resumed, spec_payload, param_count, cancel, resume_from, best = claimed
    log.info("experiment %s: attempt %d on %s%s", experiment_id, attempt, worker, " (resumed)" if resumed else "")

    if cancel:  # cancelled while its previous worker was dying
        return _finish(experiment_id, attempt, status="cancelled")

    from ml.spec import ExperimentSpec
    from ml.train import train
    from worker.datasets import upload_of

    run = Run(experiment_id, attempt, best, keeps_best(spec_payload))
    try:
        spec = ExperimentSpec.model_validate(spec_payload)
        device = settings.device if spec.device == "auto" else spec.device
        result: TrainResult = train(
            spec,
            dataset=upload_of(experiment_id),
            device=device,
            on_epoch=run.on_epoch,
            should_stop=run.should_stop,
            on_checkpoint=run.on_checkpoint,
            checkpoint_seconds=settings.checkpoint_seconds,
            resume_from=resume_from,
            threads=choose_threads(spec_payload, param_count, settings),
        )
    except Exception as exc:
        if over_time_limit(exc):
            return _finish(experiment_id, attempt, status="failed", error=time_limit_error(settings))
        log.exception("experiment %s failed", experiment_id)
        return _finish(experiment_id, attempt, status="failed", error=f"{type(exc).__name__}: {exc}")

    if run.lost:
        log.warning("experiment %s: attempt %d was taken over; its result is dropped", experiment_id, attempt)
        return "lost"
    best = _clean(result.best) if result.best else run.best
    return _finish(
        experiment_id,
        attempt,
        status=result.status,
        error=result.error,
        device=result.device,
        train_seconds=result.train_seconds,
        epochs_done=result.epochs_done,
        best=best,
        served=_clean(result.served) if result.artifact is not None else None,
        artifact=result.artifact,
    )


def _finish(
    experiment_id: str,
    attempt: int,
    *,
    status: str,
    error: str | None = None,
    artifact: bytes | None = None,
    **values: Any,
) -> str:
    def write(session: Any) -> bool:
        if not experiments_repo.touch(session, experiment_id, attempt):
            return False
        store = ArtifactStore.from_settings(get_settings())
        if artifact is not None:
            store.put(session, experiment_id, "model", artifact, epoch=values.get("epochs_done"))
        store.remove(session, experiment_id, "checkpoint")  # a finished run never resumes
        experiments_repo.finish(session, experiment_id, attempt, status=status, error=error, **values)
        return True

    if not in_session(write):
        return "lost"
    log.info("experiment %s: %s%s", experiment_id, status, f" ({error})" if error else "")
    return status
