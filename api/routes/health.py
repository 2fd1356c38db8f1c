"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import OwnerDep
from api.errors import NotReady
from api.schemas import ReadinessRead
from api.services.health import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health() -> dict[str, str]:
    """Liveness: the process answers (no I/O)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency failed; `checks` says which"}})
def read_readiness(request: Request, _owner: OwnerDep) -> ReadinessRead:
    """Readiness: the database, Redis, and at least one worker answer."""
    state = request.app.state
    ok, checks = readiness(state.sessionmaker, state.celery, state.settings.resolved_redis_url)
    if not ok:
        failed = ", ".join(name for name, value in checks.items() if value.startswith("failed"))
        raise NotReady(f"not ready: {failed}", checks=checks)
    return ReadinessRead(status="ready", checks=checks)
