"""Live progress as Server-Sent Events, read from the database (the truth) about twice a second.

Experiment stream (the contract the `labtrain watch` client reads):
- `event: epoch`, `id: <epoch>`, data {"epoch", "train_loss", "val_loss", the metrics of
  `/metrics` (val_accuracy | val_rmse | per target), "seconds"}: every stored epoch once, in order;
- `event: status`, `id: <epochs_done>`, data {"status", "epochs_done", "epochs", "error"}: on
  connect, then whenever the status changes; a terminal status is the last event.
On connect, the epochs after Last-Event-ID (absent: 0) come first, then the current status. A
poll reads the status before the epochs, and the worker commits an epoch row together with
`epochs_done`, so every epoch of a run is sent before its terminal status. A status event's id
is never below the last epoch sent, so resuming from any received id neither repeats nor skips.

Sweep stream: event ids are the sweep's progress (the members' epochs done plus 1 for each
running and 2 for each ended member), never decreasing within a stream.
- `event: experiment`, data {"experiment_id", "name", "status", "epochs_done", "epochs", "error",
  "metrics"} (latest validation metrics): each member's state on connect, then whenever a
  member's status or epochs_done changes;
- `event: status`, data {"status", "counts", "size", "epochs_done", "epochs"}: on connect, then
  whenever it changes; the stream ends after the sweep is finished or cancelled with no member
  left queued or running.
Member events are states, not increments, so resuming a sweep stream (any Last-Event-ID) sends
every member's current state again, then the changes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import InvalidLastEventId, excerpt
from api.schemas import epoch_row
from api.services.sweeps import sweep_status
from core.repositories import events as repo
from core.repositories import experiments as experiments_repo
from core.tables import TERMINAL_STATUSES, Sweep

POLL_SECONDS = 0.5
PING_SECONDS = 15.0
STATUS_RANK = {"queued": 0, "running": 1}  # an ended member counts 2
STATUS_RANK_ENDED = 2

Event = dict[str, Any]  # {"event", "id", "data"}: what EventSourceResponse sends


def parse_last_event_id(value: str | None, *, last: int | None = None) -> int:
    """The event id a client has seen (0 when it sent none): 400 for anything but an integer
    from 0 to `last`, the highest id the stream can send (an experiment's epochs; None: only the
    form is checked, before the lookup), before the stream starts. A larger id would be echoed
    back as if it had happened, and one past the database's integer range would abort the
    stream after its 200."""
    if value is None or value.strip() == "":
        return 0
    text = value.strip()
    digits = text.isascii() and text.isdigit()
    n = -1 if not digits else int(text) if len(text) <= 20 else 10**20  # past any run, never parsed whole
    if n < 0 or (last is not None and n > last):
        raise InvalidLastEventId(
            f"Last-Event-ID {excerpt(value, 40)!r} is not an event id of this stream: send the integer `id:` of the "
            f"last event received, from 0 to {'its last' if last is None else f'{last:,}'} (or no header to start "
            "from the first event)"
        )
    return n


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)


# -- one experiment ----------------------------------------------------------------------------


def _experiment_poll(factory: Callable[[], Session], experiment_id: str, after: int) -> tuple[Any, list[Any]]:
    """(state, epochs numbered above `after`), the state read first (see the module docstring)."""
    with factory() as session:
        state = repo.experiment_state(session, experiment_id)
        rows = [epoch_row(r) for r in repo.epochs_after(session, experiment_id, after)] if state else []
        return state, rows


async def experiment_events(
    factory: Callable[[], Session], experiment_id: str, *, epochs: int, after: int
) -> AsyncIterator[Event]:
    """The experiment's stream from epoch `after` on; `epochs` is the spec's training epochs."""
    last_epoch, sent_status = after, None
    while True:
        state, rows = await run_in_threadpool(_experiment_poll, factory, experiment_id, last_epoch)
        if state is None:  # the experiment is gone
            return
        for row in rows:
            last_epoch = row["epoch"]
            yield {"event": "epoch", "id": str(last_epoch), "data": _json(row)}
        if state.status != sent_status:
            sent_status = state.status
            # An epoch committed between the two reads of the poll is done too: the id and the data agree.
            done = max(last_epoch, state.epochs_done)
            data = {"status": state.status, "epochs_done": done, "epochs": epochs, "error": state.error}
            yield {"event": "status", "id": str(done), "data": _json(data)}
            if state.status in TERMINAL_STATUSES:
                return
        await anyio.sleep(POLL_SECONDS)


# -- a sweep -----------------------------------------------------------------------------------


def _sweep_poll(factory: Callable[[], Session], sweep_id: str) -> tuple[str | None, list[repo.MemberState]]:
    with factory() as session:
        stored = repo.sweep_status(session, sweep_id)
        return stored, repo.member_states(session, sweep_id) if stored is not None else []


def sweep_last_id(epochs: dict[str, int], size: int) -> int:
    """The highest id a sweep's stream can send: every member trained and ended."""
    return sum(epochs.values()) + STATUS_RANK_ENDED * size


def sweep_epochs(session: Session, sweep_id: str) -> dict[str, int]:
    """Each member's training epochs, from its spec (read once per stream)."""
    return {e.id: int(e.spec.get("epochs", 0)) for e in experiments_repo.list_in_sweep(session, sweep_id)}


async def sweep_events(
    factory: Callable[[], Session], sweep_id: str, *, epochs: dict[str, int], size: int
) -> AsyncIterator[Event]:
    """The sweep's stream: every member's state, then changes, until the sweep has ended."""
    sent: dict[str, tuple[str, int]] = {}
    sent_status: dict[str, Any] | None = None
    last_id = 0
    while True:
        stored, members = await run_in_threadpool(_sweep_poll, factory, sweep_id)
        if stored is None:
            return
        progress = sum(m.epochs_done + STATUS_RANK.get(m.status, STATUS_RANK_ENDED) for m in members)
        last_id = max(last_id, progress)
        counts: dict[str, int] = {}
        for m in members:
            counts[m.status] = counts.get(m.status, 0) + 1
            if sent.get(m.experiment_id) == (m.status, m.epochs_done):
                continue
            sent[m.experiment_id] = (m.status, m.epochs_done)
            data = {
                "experiment_id": m.experiment_id,
                "name": m.name,
                "status": m.status,
                "epochs_done": m.epochs_done,
                "epochs": epochs.get(m.experiment_id, 0),
                "error": m.error,
                "metrics": m.latest,
            }
            yield {"event": "experiment", "id": str(last_id), "data": _json(data)}
        status = {
            "status": sweep_status(Sweep(id=sweep_id, status=stored), counts),  # a transient row: never added
            "counts": counts,
            "size": size,
            "epochs_done": sum(m.epochs_done for m in members),
            "epochs": sum(epochs.values()),
        }
        if status != sent_status:
            sent_status = status
            yield {"event": "status", "id": str(last_id), "data": _json(status)}
        if status["status"] != "running" and not counts.get("queued") and not counts.get("running"):
            return
        await anyio.sleep(POLL_SECONDS)
