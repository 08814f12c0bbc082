"""Stateful routes: `POST /ingest` (the same path as a Kafka message) and `GET /patients/{id}/evaluation`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.api.body import read_json_body
from service.api.errors import ApiError
from service.api.json import json_response
from service.bootstrap import Container
from service.ingest import Change, Decoded, Ingested, decode, ingest_message
from service.store.base import OpenTransaction

router = APIRouter()
Publish = Callable[[list[Change]], Awaitable[None]]


class HttpIngest:
    """Merge, evaluate, publish, then commit: the store transaction stays open until Kafka acknowledged the
    results, so a failed publish leaves the store unchanged and the client's retry publishes again."""

    def __init__(self, container: Container, publish: Publish | None, after_commit: Publish | None = None) -> None:
        self._container = container
        self._publish = publish
        self._after_commit = after_commit
        # One thread owns each open transaction from begin to commit (the SQLite store's lock is thread-owned).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="oligocds-ingest")

    async def __call__(self, body: bytes) -> Ingested:
        loop = asyncio.get_running_loop()
        decoded = decode(body)
        transaction, ingested = await loop.run_in_executor(self._thread, self._prepare, decoded)
        try:
            if self._publish is not None:
                await self._publish(ingested.changes)
        except BaseException as exc:
            await loop.run_in_executor(self._thread, transaction.rollback, exc)
            raise
        await loop.run_in_executor(self._thread, transaction.commit)
        if self._after_commit is not None and ingested.changes:
            await self._after_commit(ingested.changes)
        return ingested

    def _prepare(self, decoded: Decoded) -> tuple[OpenTransaction, Ingested]:
        transaction = OpenTransaction(self._container.store)
        try:
            day = datetime.now(UTC).date()
            return transaction, ingest_message(self._container.ingestor, transaction.tx, decoded, day)
        except BaseException as exc:
            transaction.rollback(exc)
            raise

    def close(self) -> None:
        self._thread.shutdown(wait=True)


@router.post("/ingest")
async def ingest(request: Request) -> Response:
    """Merge a FHIR Bundle into the stored patient state and re-evaluate; publish results that changed."""
    body = await read_json_body(request, request.app.state.settings.max_body_bytes)
    start = time.perf_counter()
    ingested = await request.app.state.ingest(body)
    request.app.state.metrics.record_results(ingested.results, time.perf_counter() - start)
    return json_response({"results": ingested.results})


@router.get("/patients/{patient_id}/evaluation")
async def patient_evaluation(request: Request, patient_id: str) -> Response:
    """The latest stored result of a patient (from `POST /ingest` or the Kafka worker)."""
    container: Container = request.app.state.container
    stored = await asyncio.to_thread(container.store.result, f"Patient/{patient_id}")
    if stored is None:
        raise ApiError(404, "not-found", f"no stored evaluation for Patient/{patient_id}")
    return Response(stored.body, media_type="application/json")
