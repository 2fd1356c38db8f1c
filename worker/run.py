"""How to start a worker process: the command line shared by `labtrain up`, `labtrain worker`
and the integration tests."""

from __future__ import annotations

import sys
import uuid

from core.settings import get_settings


def default_queues() -> list[str]:
    """A CUDA worker (LABTRAIN_DEVICE=cuda) serves the gpu queue first, then cpu work; others cpu."""
    return ["gpu", "cpu"] if get_settings().device == "cuda" else ["cpu"]


def worker_argv(queues: list[str] | None = None, concurrency: int = 1, hostname: str | None = None) -> list[str]:
    """The command that starts one Celery worker with `concurrency` training processes."""
    queues = queues or default_queues()
    unknown = sorted(set(queues) - {"cpu", "gpu"})
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(unknown)}: use cpu and/or gpu")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--hostname",
        hostname or f"labtrain-{uuid.uuid4().hex[:8]}@%h",
        "--loglevel",
        get_settings().log_level.upper(),
        "--without-gossip",
        "--without-mingle",
    ]
