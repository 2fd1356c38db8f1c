"""Run a group of compatible experiments as one stacked training (`ml.group.train_group`).

Each member is claimed, fenced, checkpointed and finished exactly as a single run is (see
worker/runner.py): the group is only how the arithmetic is done. A member that another attempt
took over, or that is cancelled, stops alone; the others go on. One epoch of every member is
written in one transaction, so a group of 25 costs the database about what one run does.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from core.artifact_store import ArtifactStore
from core.db import in_session
from core.repositories import experiments as experiments_repo
from core.repositories import metrics as metrics_repo
from core.settings import get_settings
from core.tables import utcnow
from ml.results import EpochResult, TrainResult
from worker.runner import (
    CANCEL_POLL_SECONDS,
    _clean,
    _finish,
    _resume_point,
    choose_threads,
    epoch_metrics,
    is_better,
    write_epoch,
)

log = logging.getLogger("labtrain.worker")


class Member:
    def __init__(self, experiment_id: str, attempt: int, spec: dict[str, Any], param_count: int) -> None:
        self.experiment_id = experiment_id
        self.attempt = attempt
        self.spec = spec
        self.param_count = param_count
        self.best: dict[str, Any] | None = None
        self.resume_from: bytes | None = None
        self.lost = False
        self.done = False


class GroupRun:
    """The callbacks `train_group` calls, for claimed members (indexed as passed to it)."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members
        self.pending: list[tuple[int, EpochResult]] = []
        self._last_poll = 0.0
        self._stop: set[int] = set()

    def on_epoch(self, i: int, result: EpochResult) -> None:
        self.pending.append((i, result))

    def on_epoch_end(self, _epoch: int) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the buffered epochs of every member in one transaction."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        best = {i: self.members[i].best for i, _ in pending}
        for i, result in pending:
            latest = epoch_metrics(result)
            if is_better(latest, best[i]):
                best[i] = latest
        tries = 0

        def write(session: Any) -> set[int]:
            nonlocal tries
            tries += 1
            metrics_repo.relax_durability(session)
            lost: set[int] = set()
            for i, result in pending:
                m = self.members[i]
                if m.lost or i in lost:
                    continue
                if not experiments_repo.touch(session, m.experiment_id, m.attempt):
                    lost.add(i)
                    continue
                if tries > 1:  # the commit of a lost try may have landed: write this epoch again
                    metrics_repo.delete_after(session, m.experiment_id, result.epoch - 1)
                write_epoch(session, m.experiment_id, m.attempt, result, epoch_metrics(result), best[i])
            return lost

        lost = in_session(write)
        for i in best:
            self.members[i].best = best[i]
            self.members[i].lost |= i in lost

    def cancelled(self) -> set[int]:
        """Members to stop now: cancelled by a user, or taken over by another attempt."""
        now = time.monotonic()
        if now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now

            def poll(session: Any) -> dict[int, tuple[bool, bool]]:
                return {
                    i: experiments_repo.poll_control(session, m.experiment_id, m.attempt)
                    for i, m in enumerate(self.members)
                    if not (m.done or m.lost)
                }

            for i, (cancel, ours) in in_session(poll).items():
                self.members[i].lost = not ours
                if cancel or not ours:
                    self._stop.add(i)
        self._stop |= {i for i, m in enumerate(self.members) if m.lost}
        return self._stop

    def on_checkpoint(self, i: int, blob: bytes, epoch: int) -> None:
        m = self.members[i]
        if m.lost:
            return

        def put(session: Any) -> bool:
            if not experiments_repo.touch(session, m.experiment_id, m.attempt):
                return False
            ArtifactStore.from_settings(get_settings()).put(session, m.experiment_id, "checkpoint", blob, epoch=epoch)
            return True

        m.lost = not in_session(put)

    def on_finish(self, i: int, result: TrainResult) -> None:
        self.flush()  # its last epoch lands before its terminal status
        m = self.members[i]
        m.done = True
        if m.lost:
            log.warning("experiment %s: attempt %d was taken over; its result is dropped", m.experiment_id, m.attempt)
            return
        best = _clean(result.best) if result.best else m.best
        _finish(
            m.experiment_id,
            m.attempt,
            status=result.status,
            error=result.error,
            device=result.device,
            train_seconds=result.train_seconds,
            epochs_done=result.epochs_done,
            best=best,
            artifact=result.artifact,
        )


def _claim(experiment_id: str, worker: str, takeover: bool) -> Member | None:
    settings = get_settings()

    def claim_it(session: Any) -> Member | None:
        stale_before = utcnow() - timedelta(seconds=settings.heartbeat_stale_seconds)
        claim = experiments_repo.claim(
            session, experiment_id, worker=worker, stale_before=stale_before, takeover=takeover
        )
        if claim is None:
            return None
        row = experiments_repo.get(session, experiment_id)
        assert row is not None
        member = Member(experiment_id, claim.attempt, row.spec, row.param_count)
        if row.cancel_requested:
            member.done = True
        elif claim.resumed:
            member.resume_from, member.best = _resume_point(session, experiment_id, claim.attempt)
        return member

    member = in_session(claim_it)
    if member is None:
        return None
    if member.done:
        _finish(experiment_id, member.attempt, status="cancelled")
        return None
    return member


def run_group(experiment_ids: list[str], *, worker: str, takeover: bool = False) -> dict[str, str]:
    """Claim what can be claimed of `experiment_ids` and train it together; members resumed from
    checkpoints of different epochs train as separate groups. Returns what happened to each."""
    from ml.train import checkpoint_epoch

    outcome = dict.fromkeys(experiment_ids, "skipped")
    claimed = [m for m in (_claim(i, worker, takeover) for i in experiment_ids) if m is not None]
    by_epoch: dict[int, list[Member]] = {}
    for m in claimed:
        by_epoch.setdefault(checkpoint_epoch(m.resume_from) if m.resume_from else 0, []).append(m)
    for members in by_epoch.values():
        outcome.update(_train(members))
    return outcome


def _train(members: list[Member]) -> dict[str, str]:
    from ml.group import train_group
    from ml.spec import ExperimentSpec
    from worker.datasets import upload_of

    settings = get_settings()
    ids = [m.experiment_id for m in members]
    log.info("group of %d on one stack: %s", len(members), ", ".join(ids))
    run = GroupRun(members)
    try:
        specs = [ExperimentSpec.model_validate(m.spec) for m in members]
        device = settings.device if specs[0].device == "auto" else specs[0].device
        resume = {i: m.resume_from for i, m in enumerate(members) if m.resume_from is not None}
        train_group(
            specs,
            dataset=upload_of(members[0].experiment_id),
            device=device,
            on_epoch=run.on_epoch,
            on_epoch_end=run.on_epoch_end,
            cancelled=run.cancelled,
            on_checkpoint=run.on_checkpoint,
            on_finish=run.on_finish,
            checkpoint_seconds=settings.checkpoint_seconds,
            resume_from=resume or None,
            threads=choose_threads(members[0].spec, members[0].param_count * len(members), settings),
        )
    except SoftTimeLimitExceeded:
        error = f"the run took longer than the limit of {settings.max_run_seconds} s (LABTRAIN_MAX_RUN_SECONDS)"
        return _fail_unfinished(run, error)
    except Exception as exc:
        log.exception("group %s failed", ids)
        return _fail_unfinished(run, f"{type(exc).__name__}: {exc}")
    return {m.experiment_id: ("lost" if m.lost else "done") for m in members}


def _fail_unfinished(run: GroupRun, error: str) -> dict[str, str]:
    run.flush()
    out = {}
    for m in run.members:
        if not m.done and not m.lost:
            out[m.experiment_id] = _finish(m.experiment_id, m.attempt, status="failed", error=error)
    return out
