"""The FastAPI application factory. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from service import __version__
from service.api import cds, errors, metrics, observe, routes, state
from service.bootstrap import Container, bootstrap
from service.config import Settings
from service.reload import RuleReloader
from service.writeback import CarePlanWriter

if TYPE_CHECKING:
    from service.stream.runtime import StreamRuntime


def create_app(settings: Settings, container: Container | None = None, worker_only: bool = False) -> FastAPI:
    """The API (`oligocds serve`), or with `worker_only` the Kafka worker with health and metrics routes only
    (`oligocds worker`). Either runs the worker when OLIGOCDS_KAFKA_BOOTSTRAP is set."""

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
        writer = _writer(app, settings)
        after_commit = writer.write if writer else None
        stream = await _start_stream(app, settings, after_commit)
        ingest = state.HttpIngest(app.state.container, stream.publish if stream else None, after_commit)
        app.state.ingest = ingest
        try:
            yield
        finally:
            if stream is not None:
                await stream.stop()
            ingest.close()
            if not worker_only:
                app.state.cds.close()  # pending writes of issued cards, before the store closes
            if writer is not None:
                await writer.close()
            reloader.stop()
            if owned:
                app.state.container.close()

    app = FastAPI(title="OligoCDS", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics.Metrics()
    app.state.stream = None
    errors.install(app)
    app.add_middleware(observe.Observe, metrics=app.state.metrics)
    app.include_router(routes.health)
    if not worker_only:
        app.include_router(routes.router)
        app.include_router(state.router)
        app.include_router(cds.router)
        cds.install(app, settings)
    return app


def _writer(app: FastAPI, settings: Settings) -> CarePlanWriter | None:
    if not settings.fhir_writeback_url:
        return None
    counter = app.state.metrics.writeback
    return CarePlanWriter(
        settings.fhir_writeback_url,
        settings.canonical_base,
        on_result=lambda result: counter.labels(result=result).inc(),
    )


async def _start_stream(app: FastAPI, settings: Settings, after_commit: state.Publish | None) -> StreamRuntime | None:
    if not settings.kafka_bootstrap:
        return None
    from service.stream.metrics import StreamMetrics
    from service.stream.runtime import StreamRuntime

    container: Container = app.state.container
    metrics = StreamMetrics(app.state.metrics.registry)
    stream = StreamRuntime(settings, container.store, container.ingestor, metrics, after_commit)
    await stream.start()
    app.state.stream = stream
    return stream
