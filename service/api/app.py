"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import cds, errors, metrics, observe, routes
from service.bootstrap import Container, bootstrap
from service.config import Settings
from service.reload import RuleReloader


def create_app(settings: Settings, container: Container | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        app.state.container = container or bootstrap(settings)
        reloader = RuleReloader(
            app.state.container,
            on_result=lambda result: app.state.metrics.reloads.labels(result=result).inc(),
            interval_s=settings.rules_reload_seconds,
        )
        app.state.reloader = reloader
        if settings.rules_reload_seconds > 0:
            reloader.start()
        try:
            yield
        finally:
            reloader.stop()
            if owned:
                app.state.container.close()

    app = FastAPI(title="OligoCDS", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics.Metrics()
    errors.install(app)
    app.add_middleware(observe.Observe, metrics=app.state.metrics)
    app.include_router(routes.router)
    app.include_router(cds.router)
    cds.install(app, settings)
    return app
