"""The Starlette application: routes, JSON errors, and the worker's life in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from gateway.http.routes import routes
from gateway.http.edge import Edge
from gateway.http.errors import ApiError, handle_api_error, handle_http_exception
from gateway.jobs.metrics import WorkerCollector
from gateway.jobs.worker import Worker


def create_app(worker: Worker) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: handle_api_error, HTTPException: handle_http_exception},
        middleware=[Middleware(Edge, routes=routes, metrics=worker.metrics, api_key=worker.settings.api_key)],
    )
    app.state.worker = worker
    worker.metrics.registry.register(WorkerCollector(
        engines=lambda: worker.pool.engines, jobs_by_status=worker.jobs_by_status,
        in_use=lambda: worker.admission.in_use, total=worker.admission.total,
        running_progress=worker.running_progress))
    return app
