"""Prometheus metrics of the service, served by `GET /metrics` (api/routes/observability.py).

Each API process has a registry of its own:
- read at scrape time (`ServiceCollector`): experiments by status (one GROUP BY), the Celery
  queues' depth (Redis LLEN), and a histogram of the duration of every stored epoch (bucket
  counts summed by the database in one scan, so it covers every worker and every API process);
- observed in this process: prediction latency (around the prediction service call) and HTTP
  request latency by method, route template and status (`RequestMetricsMiddleware`);
- the process's own CPU, memory and garbage collection (prometheus_client's collectors).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.services.health import redis_client_url
from core.broker import QUEUES
from core.repositories import stats
from core.tables import EXPERIMENT_STATUSES

log = logging.getLogger("labtrain.api.metrics")

# Epochs last from milliseconds (small MLPs) to minutes (CNNs on CPU).
EPOCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# kombu's Redis transport keeps a queue's messages of priority 3, 6 and 9 in lists of their own.
_PRIORITY_SEP = "\x06\x16"
_PRIORITIES = (3, 6, 9)
REDIS_TIMEOUT_SECONDS = 1.0


def queue_depths(broker_url: str) -> dict[str, int]:
    """queue → messages waiting in Redis (not those a worker holds unacknowledged)."""
    client = Redis.from_url(
        redis_client_url(broker_url), socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
            for priority in _PRIORITIES:
                pipe.llen(f"{queue}{_PRIORITY_SEP}{priority}")
        lengths = pipe.execute()
    finally:
        client.close()
    per_queue = 1 + len(_PRIORITIES)
    return {queue: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(QUEUES)}


class ServiceCollector(Collector):
    """The service-wide gauges, read from the database and Redis at each scrape. A dependency
    that does not answer drops its metrics from that scrape and sets `labtrain_dependency_up` 0."""

    def __init__(self, factory: sessionmaker[Session], broker_url: str) -> None:
        self.factory = factory
        self.broker_url = broker_url

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "labtrain_dependency_up", "1 if the dependency answered during this scrape, else 0", labels=["dependency"]
        )
        try:
            with self.factory() as session:
                counts = stats.experiments_by_status(session)
                epochs = stats.epoch_seconds(session, EPOCH_BUCKETS)
        except Exception as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            experiments = GaugeMetricFamily(
                "labtrain_experiments", "Experiments by status, every owner", labels=["status"]
            )
            for status in EXPERIMENT_STATUSES:
                experiments.add_metric([status], counts.get(status, 0))
            yield experiments
            yield HistogramMetricFamily(
                "labtrain_epoch_seconds",
                "Training time of every stored epoch (of every experiment), from the database",
                buckets=[
                    *((repr(b), n) for b, n in zip(epochs.bounds, epochs.buckets, strict=True)),
                    ("+Inf", epochs.count),
                ],
                sum_value=epochs.total,
            )
        try:
            depths = queue_depths(self.broker_url)
        except Exception as exc:
            log.warning("metrics: Redis did not answer: %s", exc)
            up.add_metric(["redis"], 0)
        else:
            up.add_metric(["redis"], 1)
            depth = GaugeMetricFamily(
                "labtrain_queue_depth",
                "Tasks waiting in the Celery queue (not yet taken by a worker)",
                labels=["queue"],
            )
            for queue, n in depths.items():
                depth.add_metric([queue], n)
            yield depth
        yield up


@dataclass(frozen=True)
class Metrics:
    """One API process's registry and the histograms it observes itself."""

    registry: CollectorRegistry
    prediction_seconds: Histogram
    http_request_seconds: Histogram


def build_metrics(factory: sessionmaker[Session], broker_url: str) -> Metrics:
    registry = CollectorRegistry()  # no auto_describe: registering must not query the database or Redis
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(ServiceCollector(factory, broker_url))
    prediction = Histogram(
        "labtrain_prediction_seconds",
        "Time to answer a prediction request in this API process (model loading included, failures too)",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    http = Histogram(
        "labtrain_http_request_seconds",
        "HTTP requests to this API process until the response ended, by route template and status",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return Metrics(registry=registry, prediction_seconds=prediction, http_request_seconds=http)


class RequestMetricsMiddleware:
    """Observes each HTTP request's duration under its route template (`/experiments/{experiment_id}`),
    so the label set stays small; a path that matches no route is `unmatched`."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI) -> Metrics:
    """The registry on `app.state.metrics`, and the request middleware. Call from the app factory
    after `app.state.sessionmaker` and `app.state.settings` are set."""
    metrics = build_metrics(app.state.sessionmaker, app.state.settings.resolved_redis_url)
    app.state.metrics = metrics
    app.add_middleware(RequestMetricsMiddleware, histogram=metrics.http_request_seconds)
    return metrics


async def get_metrics(request: Request) -> Metrics:
    # async: an attribute read runs on the event loop; a sync dependency costs a threadpool hop
    return request.app.state.metrics


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
