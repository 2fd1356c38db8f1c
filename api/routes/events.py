"""Live progress as Server-Sent Events (text/event-stream); the event contract is in
api/services/events.py and README.md ("Plots and live progress")."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse

from api.deps import OwnerDep, UowDep
from api.routes.experiments import ERRORS, ExperimentId
from api.routes.sweeps import SweepId
from api.services import events as service
from api.services.experiments import get_experiment
from api.services.sweeps import get_sweep

router = APIRouter(tags=["events"])

LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", description="the `id:` of the last event received: the stream resumes after it"),
]
STREAM: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the event stream; it ends after a terminal status"},
    400: {"description": "Last-Event-ID is not an integer from 0 to the stream's last id (`InvalidLastEventId`)"},
}


@router.get("/experiments/{experiment_id}/events", response_class=EventSourceResponse, responses={**ERRORS, **STREAM})
def stream_experiment_events(
    request: Request, uow: UowDep, owner: OwnerDep, experiment_id: ExperimentId, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """Follow an experiment: `epoch` events (id: the epoch) and `status` events (id: epochs_done),
    the missed epochs first when resuming with Last-Event-ID; ends after a terminal status."""
    service.parse_last_event_id(last_event_id)  # its form first, its range once the run is known
    experiment = get_experiment(uow.session, owner, experiment_id)
    epochs = int(experiment.spec.get("epochs", 0))
    after = service.parse_last_event_id(last_event_id, last=epochs)
    events = service.experiment_events(request.app.state.sessionmaker, experiment.id, epochs=epochs, after=after)
    return EventSourceResponse(events, ping=service.PING_SECONDS)


@router.get("/sweeps/{sweep_id}/events", response_class=EventSourceResponse, responses={
    404: {"description": "no such sweep (`SweepNotFound`)"}, **STREAM})  # fmt: skip
def stream_sweep_events(
    request: Request, uow: UowDep, owner: OwnerDep, sweep_id: SweepId, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """Follow a sweep: an `experiment` event per member (its status, epochs_done, latest metrics) on
    connect and whenever it changes, and `status` events with the sweep's counts; ends once the
    sweep is finished or cancelled and no member is left running. Member events are states, so a
    reconnect (any Last-Event-ID) gets every member's current state again; ids never decrease."""
    service.parse_last_event_id(last_event_id)
    sweep = get_sweep(uow.session, owner, sweep_id)
    epochs = service.sweep_epochs(uow.session, sweep.id)
    size = len(sweep.spec.get("members", []))
    service.parse_last_event_id(last_event_id, last=service.sweep_last_id(epochs, size))
    events = service.sweep_events(request.app.state.sessionmaker, sweep.id, epochs=epochs, size=size)
    return EventSourceResponse(events, ping=service.PING_SECONDS)
