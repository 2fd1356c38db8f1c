"""Run a group of compatible experiments as one stacked training (`ml.group.train_group`).

Each member is claimed, fenced, checkpointed and finished exactly as a single run is (see
worker/runner.py): the group is only how the arithmetic is done. A member that another attempt
took over, or that is cancelled, stops alone; the others go on. The epochs of every member are
buffered and written together, a few times a second, in one transaction of three statements
(`GroupRun.flush`), so a group of 25 costs the database less than one run does.
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

FLUSH_SECONDS = 0.25  # buffered epochs are written at least this often (the SSE stream polls every 0.5 s)


def epoch_row(experiment_id: str, result: EpochResult) -> dict[str, Any]:
    """One epoch's metrics row for `metrics_repo.add_epochs` (as `runner.write_epoch` stores it)."""
    return {
        "experiment_id": experiment_id,
        "epoch": result.epoch,
        "train_loss": finite(result.train_loss),
        "val_loss": finite(result.val_loss),
        "metrics": clean(result.metrics),
        "seconds": result.seconds,
    }


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
        self.gave_up = False  # every allowed attempt died: claim_run ended it


class GroupRun:
    """The callbacks `train_group` calls, for claimed members (indexed as passed to it).

    Epochs are buffered and written every FLUSH_SECONDS (and before a checkpoint, a terminal
    status or a failure), every member's in one transaction of three statements: the fence and
    heartbeat of all members (`hold_many`), their progress (one executemany), and one INSERT of
    the buffered epoch rows. Written per epoch and per member (~75 statements and a commit per
    epoch for 25 members), a 200-epoch sweep of small networks spent half its time there.
    A crash loses at most the buffered epochs, which come after the last checkpoint (a
    checkpoint flushes first) and are trained and written again by the resumed run."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members
        self.pending: list[tuple[int, EpochResult]] = []
        self._last_poll = 0.0
        self._last_flush = time.monotonic()
        self._stop: set[int] = set()

    def on_epoch(self, i: int, result: EpochResult) -> None:
        self.pending.append((i, result))

    def on_epoch_end(self, _epoch: int) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered epochs of every member in one transaction."""
        self._last_flush = time.monotonic()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        by_member: dict[int, list[EpochResult]] = {}
        for i, result in pending:
            by_member.setdefault(i, []).append(result)
        best = {i: self.members[i].best for i in by_member}
        for i, results in by_member.items():
            for result in results:
                latest = epoch_metrics(result)
                if is_better(latest, best[i]):
                    best[i] = latest
        tries = 0

        def write(session: Any) -> set[int]:
            nonlocal tries
            tries += 1
            metrics_repo.relax_durability(session)
            live = {i: self.members[i] for i in by_member if not self.members[i].lost}
            # Fenced: the rows of the members still held stay locked until the commit.
            held = runs_repo.hold_many(session, {m.experiment_id: m.attempt for m in live.values()})
            progress, rows = [], []
            for i, m in live.items():
                if m.experiment_id not in held:
                    continue
                results = by_member[i]
                if tries > 1:  # the commit of a lost try may have landed: write these epochs again
                    metrics_repo.delete_after(session, m.experiment_id, results[0].epoch - 1)
                latest = epoch_metrics(results[-1])
                served = served_of(keeps_best(m.spec), latest, best[i])
                progress.append(runs_repo.Progress(m.experiment_id, results[-1].epoch, latest, best[i], served))
                rows += [epoch_row(m.experiment_id, r) for r in results]
            runs_repo.record_progress_many(session, progress)
            metrics_repo.add_epochs(session, rows)
            return {i for i, m in live.items() if m.experiment_id not in held}

        lost = in_session(write)
        for i in best:
            self.members[i].best = best[i]
            self.members[i].lost |= i in lost

    def cancelled(self) -> set[int]:
        """Members to stop now: cancelled by a user, or taken over by another attempt."""
        now = time.monotonic()
        if now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now
            live = {i: m for i, m in enumerate(self.members) if not (m.done or m.lost)}
            held = {m.experiment_id: m.attempt for m in live.values()}
            control = in_session(lambda session: runs_repo.poll_control_many(session, held))
            for i, m in live.items():
                cancel, ours = control[m.experiment_id]
                m.lost = not ours
                if cancel or not ours:
                    self._stop.add(i)
        self._stop |= {i for i, m in enumerate(self.members) if m.lost}
        return self._stop

    def on_checkpoint(self, i: int, blob: bytes, epoch: int) -> None:
        self.flush()  # a checkpoint is never ahead of the stored epochs (a resumed run starts there)
        m = self.members[i]
        if m.lost:
            return

        def put(session: Any) -> bool:
            if not runs_repo.touch(session, m.experiment_id, m.attempt):
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
        best = clean(result.best) if result.best else m.best
        finish(
            m.experiment_id,
            m.attempt,
            status=result.status,
            error=result.error,
            device=result.device,
            train_seconds=result.train_seconds,
            epochs_done=result.epochs_done,
            best=best,
            served=clean(result.served) if result.artifact is not None else None,
            artifact=result.artifact,
        )


def _claim(experiment_id: str, worker: str, takeover: bool) -> Member | None:
    def claim_it(session: Any) -> Member | None:
        claim = claim_run(session, experiment_id, worker=worker, takeover=takeover)
        if claim is None:
            return None
        row = experiments_repo.get(session, experiment_id)
        assert row is not None
        member = Member(experiment_id, claim.attempt, row.spec, row.param_count)
        if claim.gave_up:
            member.gave_up = True
        elif row.cancel_requested:
            member.done = True
        elif claim.resumed:
            member.resume_from, member.best = resume_point(session, experiment_id, claim.attempt)
        return member

    member = in_session(claim_it)
    if member is None:
        return None
    if member.gave_up:
        gave_up(experiment_id, member.attempt)
        return None
    if member.done:
        finish(experiment_id, member.attempt, status="cancelled")
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
            **thread_settings(settings),
        )
    except Exception as exc:
        if over_time_limit(exc):
            return _fail_unfinished(run, time_limit_error(settings))
        log.exception("group %s failed", ids)
        return _fail_unfinished(run, f"{type(exc).__name__}: {exc}")
    return {m.experiment_id: ("lost" if m.lost else "done") for m in members}


def _fail_unfinished(run: GroupRun, error: str) -> dict[str, str]:
    run.flush()
    out = {}
    for m in run.members:
        if not m.done and not m.lost:
            out[m.experiment_id] = finish(m.experiment_id, m.attempt, status="failed", error=error)
    return out
