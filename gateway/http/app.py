"""The Starlette application: routes, JSON errors, and the worker's life in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from gateway.http.edge import Edge
from gateway.http.errors import EXCEPTION_HANDLERS
from gateway.http.routes import routes
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
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(Edge, routes=routes, metrics=worker.metrics, api_key=worker.settings.api_key)],
    )
    app.state.worker = worker
    return app
