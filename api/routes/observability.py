"""Prometheus metrics of the service (the registry is built in api/observability.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from api.deps import OwnerDep
from api.observability import MetricsDep

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format 0.0.4: `labtrain_experiments{status}`, "
            "`labtrain_queue_depth{queue}`, `labtrain_epoch_seconds` (histogram), "
            "`labtrain_prediction_seconds` (histogram), "
            "`labtrain_http_request_seconds{method,route,status}`, `labtrain_dependency_up{dependency}`, process_*",
        },
        401: {"description": "a valid API key is required (`Unauthorized`)"},
    },
)
def read_service_metrics(metrics: MetricsDep, _owner: OwnerDep) -> PlainTextResponse:
    """Prometheus metrics: experiments by status, queue depth, epoch durations, prediction and request latency."""
    return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
