"""Run one experiment: claim its row, resume from its checkpoint if it has one, train through
`ml.train`, write every epoch, and end with exactly one terminal status.

Every database write is its own short unit of work (the worker never holds a transaction open
while training), retried with backoff while the database is unreachable (`core.db.in_session`),
and every write after the claim is fenced by the claimed `attempt`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from core.artifact_store import ArtifactStore
from core.db import in_session
from core.repositories import experiments as experiments_repo
from core.repositories import metrics as metrics_repo
from core.repositories import runs as runs_repo
from core.settings import get_settings
from ml.ranking import is_better
from ml.results import EpochResult, TrainResult
from worker.steps import (
    CANCEL_POLL_SECONDS,
    claim_run,
    clean,
    epoch_metrics,
    finish,
    finite,
    gave_up,
    keeps_best,
    over_time_limit,
    resume_point,
    served_of,
    thread_settings,
    time_limit_error,
)

log = logging.getLogger("labtrain.worker")


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
        train_loss=finite(result.train_loss),
        val_loss=finite(result.val_loss),
        metrics=clean(result.metrics),
        seconds=result.seconds,
    )
    runs_repo.record_progress(
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
            if not runs_repo.touch(session, self.experiment_id, self.attempt):
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
        cancel, ours = in_session(lambda s: runs_repo.poll_control(s, self.experiment_id, self.attempt))
        self.lost = not ours
        self.cancelled = cancel
        return self.lost or self.cancelled

    def on_checkpoint(self, blob: bytes, epoch: int) -> None:
        if self.lost:
            return

        def put(session: Any) -> bool:
            if not runs_repo.touch(session, self.experiment_id, self.attempt):
                return False
            store = ArtifactStore.from_settings(get_settings())
            store.put(session, self.experiment_id, "checkpoint", blob, epoch=epoch)
            return True

        self.lost = not in_session(put)


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
        resume_from, best = resume_point(session, experiment_id, claim.attempt) if claim.resumed else (None, None)
        return claim.attempt, claim.resumed, row.spec, row.param_count, row.cancel_requested, resume_from, best

    claimed = in_session(claim_it)
    if claimed is None:
        log.info("experiment %s: nothing to claim (already taken, finished or unknown)", experiment_id)
        return "skipped"
    if len(claimed) == 1:
        return gave_up(experiment_id, claimed[0])
    attempt, resumed, spec_payload, _params, cancel, resume_from, best = claimed
    log.info("experiment %s: attempt %d on %s%s", experiment_id, attempt, worker, " (resumed)" if resumed else "")

    if cancel:  # cancelled while its previous worker was dying
        return finish(experiment_id, attempt, status="cancelled")

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
            **thread_settings(settings),
        )
    except Exception as exc:
        if over_time_limit(exc):
            return finish(experiment_id, attempt, status="failed", error=time_limit_error(settings))
        log.exception("experiment %s failed", experiment_id)
        return finish(experiment_id, attempt, status="failed", error=f"{type(exc).__name__}: {exc}")

    if run.lost:
        log.warning("experiment %s: attempt %d was taken over; its result is dropped", experiment_id, attempt)
        return "lost"
    best = clean(result.best) if result.best else run.best
    return finish(
        experiment_id,
        attempt,
        status=result.status,
        error=result.error,
        device=result.device,
        train_seconds=result.train_seconds,
        epochs_done=result.epochs_done,
        best=best,
        served=clean(result.served) if result.artifact is not None else None,
        artifact=result.artifact,
    )
