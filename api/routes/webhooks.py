"""Webhooks: the owner's signing secret, and the deliveries of an experiment or a sweep with
every try of each (core/webhooks.py sends them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.deps import OwnerDep, SettingsDep, UowDep
from api.services import webhooks as service
from core.tables import WebhookAttempt, WebhookDelivery
from core.webhooks import SIGNATURE_HEADER

router = APIRouter(tags=["webhooks"])

Id = Annotated[str, Path(min_length=1, max_length=64)]


class WebhookSecretRead(BaseModel):
    owner: str
    secret: str = Field(description="the HMAC-SHA256 key of this owner's webhook signatures")
    header: str = SIGNATURE_HEADER
    scheme: str = Field(
        "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>", description="how the header is built"
    )


class WebhookAttemptRead(BaseModel):
    number: int
    status_code: int | None = Field(description="the receiver's answer; null when there was none (see error)")
    error: str | None
    duration_seconds: float
    created_at: datetime

    @classmethod
    def from_row(cls, row: WebhookAttempt) -> WebhookAttemptRead:
        return cls(
            number=row.number,
            status_code=row.status_code,
            error=row.error,
            duration_seconds=row.duration_seconds,
            created_at=row.created_at,
        )


class WebhookDeliveryRead(BaseModel):
    id: str = Field(description="also the event's `id`: a receiver drops an id it has seen")
    event: str
    url: str
    status: str = Field(description="pending | delivered | failed")
    payload: dict[str, Any]
    attempts: list[WebhookAttemptRead]
    next_attempt_at: datetime | None = Field(description="while pending")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: WebhookDelivery, attempts: list[WebhookAttempt]) -> WebhookDeliveryRead:
        return cls(
            id=row.id,
            event=row.event,
            url=row.url,
            status=row.status,
            payload=row.payload,
            attempts=[WebhookAttemptRead.from_row(a) for a in attempts],
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryRead]


@router.get("/webhooks/secret")
def read_webhook_secret(uow: UowDep, settings: SettingsDep, owner: OwnerDep) -> WebhookSecretRead:
    """Your webhook signing secret: verify `X-Labtrain-Signature` with it (see the README)."""
    return WebhookSecretRead(owner=owner, secret=service.read_secret(uow.session, settings, owner))


@router.get(
    "/experiments/{experiment_id}/deliveries",
    responses={404: {"description": "no such experiment (`ExperimentNotFound`)"}},
)
def list_experiment_deliveries(uow: UowDep, owner: OwnerDep, experiment_id: Id) -> WebhookDeliveryPage:
    """The webhook deliveries of an experiment, oldest first, each with every try."""
    rows = service.experiment_deliveries(uow.session, owner, experiment_id)
    return WebhookDeliveryPage(items=[WebhookDeliveryRead.from_row(d, a) for d, a in rows])


@router.get(
    "/sweeps/{sweep_id}/deliveries",
    responses={404: {"description": "no such sweep (`SweepNotFound`)"}},
)
def list_sweep_deliveries(uow: UowDep, owner: OwnerDep, sweep_id: Id) -> WebhookDeliveryPage:
    """The webhook deliveries of a sweep (its `finished` event), each with every try."""
    rows = service.sweep_deliveries(uow.session, owner, sweep_id)
    return WebhookDeliveryPage(items=[WebhookDeliveryRead.from_row(d, a) for d, a in rows])
