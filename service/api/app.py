"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import errors, routes
from service.bootstrap import Container, bootstrap
from service.config import Settings


def create_app(settings: Settings, container: Container | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        app.state.container = container or bootstrap(settings)
        try:
            yield
        finally:
            if owned:
                app.state.container.close()

    app = FastAPI(title="OligoCDS", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    app.include_router(routes.router)
    return app
