"""The FastAPI application factory: `uvicorn --factory api.app:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.body_limit import install_body_limit
from api.deps import DB_SESSIONS
from api.docs import install_docs
from api.errors import install_error_handlers
from api.json_guard import install_json_guard
from api.model_cache import ModelCache
from api.observability import install_metrics
from api.openapi import document_error_envelope, operation_id
from api.request_rules import install_request_rules, reject_unknown_query
from api.routes import datasets, events, experiments, health, observability, plots, predictions, sweeps, ui, webhooks
from core.artifact_store import ArtifactStore
from core.broker import build_celery
from core.db import create_db_engine, session_factory
from core.logging import configure_logging
from core.settings import Settings, get_settings

DESCRIPTION = """Train PyTorch models from validated experiment specs.

`POST /experiments` with a spec (the example is the lab report's model22) answers 202 with the
experiment, `queued`; a worker trains it; `GET /experiments/{id}` and `/metrics` follow it.
Errors are `{"error": "...", "detail": "..."}`; a 422 adds `errors`, one item per field path."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (default: the environment's LABTRAIN_ variables)."""
    settings = settings or get_settings()
    # Room for every request session (DB_SESSIONS, see api/deps.py) and as many short ones again.
    engine = create_db_engine(settings.resolved_database_url, pool_size=DB_SESSIONS, max_overflow=DB_SESSIONS)
    celery = build_celery(settings, "labtrain-api")
    key_owners = settings.api_key_owners()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()
        celery.close()

    app = FastAPI(
        title="labtrain",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves them offline, behind the key rule
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(reject_unknown_query)],  # every route: unknown query parameters are a 422
        generate_unique_id_function=operation_id,  # `create_experiment`, not `create_experiment_experiments_post`
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = session_factory(engine)
    app.state.celery = celery
    app.state.key_owners = key_owners
    app.state.model_cache = ModelCache(settings.model_cache_size)
    app.state.artifact_store = ArtifactStore.from_settings(settings)
    install_error_handlers(app)
    app.include_router(experiments.router)
    app.include_router(predictions.router)
    app.include_router(sweeps.router)
    app.include_router(plots.router)
    app.include_router(events.router)
    app.include_router(datasets.router)
    app.include_router(health.router)
    app.include_router(observability.router)
    app.include_router(webhooks.router)
    app.include_router(ui.router)  # the dashboard's static files (public: they carry no data)
    install_docs(app)
    install_json_guard(app)  # inside the body limit, which counts what it reads
    install_request_rules(app)  # HEAD as GET, no NUL in the path or the query
    install_body_limit(app, settings)
    install_metrics(app)  # added last: the outermost middleware, so it times the 413s too
    document_error_envelope(app)
    configure_logging(settings.log_level, settings.log_format, uvicorn=True)
    return app
