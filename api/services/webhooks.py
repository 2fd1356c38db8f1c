"""Webhook use cases: the destination check of a submitted `notify` (a 422 naming the field),
the owner's signing secret, and the deliveries of an experiment or a sweep."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from api.errors import ExperimentNotFound, SweepNotFound
from core import webhooks
from core.repositories import experiments as experiments_repo
from core.repositories import sweeps as sweeps_repo
from core.repositories import webhooks as repo
from core.settings import Settings
from core.tables import WebhookAttempt, WebhookDelivery
from ml.spec import SpecInvalid

Deliveries = list[tuple[WebhookDelivery, list[WebhookAttempt]]]


def check_destinations(urls: Iterable[tuple[tuple[str, ...], str]], settings: Settings) -> None:
    """Refuse (422, each item naming its `...notify.url`) the URLs that may not receive webhooks."""
    errors = []
    seen: set[str] = set()
    for loc, url in urls:
        if url in seen:
            continue
        seen.add(url)
        try:
            webhooks.check_url(url, settings)
        except webhooks.DestinationRefused as exc:
            errors.append({"loc": [*loc], "msg": f"webhook destination refused: {exc}", "type": "webhook_refused"})
    if errors:
        raise SpecInvalid(errors)


def read_secret(session: Session, settings: Settings, owner: str) -> str:
    return webhooks.owner_secret(session, settings, owner)


def experiment_deliveries(session: Session, owner: str, experiment_id: str) -> Deliveries:
    if experiments_repo.get(session, experiment_id, owner) is None:
        raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
    return repo.list_deliveries(session, experiment_id=experiment_id)


def sweep_deliveries(session: Session, owner: str, sweep_id: str) -> Deliveries:
    if sweeps_repo.get(session, sweep_id, owner) is None:
        raise SweepNotFound(f"no sweep with id {sweep_id!r}")
    return repo.list_deliveries(session, sweep_id=sweep_id)
