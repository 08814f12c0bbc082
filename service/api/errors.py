"""Errors as FHIR OperationOutcome responses (contract.md §6)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from service.api.json import fhir_json
from service.fhir.parse import BundleError
from service.ingest import PublishError
from service.store.base import StoreError


class ApiError(Exception):
    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics = status, code, diagnostics


def outcome(code: str, diagnostics: str | None, severity: str = "error") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(status: int, code: str, diagnostics: str | None) -> Response:
    return fhir_json(outcome(code, diagnostics), status)


_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return outcome_response(exc.status, exc.code, exc.diagnostics)

    @app.exception_handler(BundleError)
    async def _bundle_error(_: Request, exc: BundleError) -> Response:
        return outcome_response(exc.status, exc.code, exc.diagnostics)

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> Response:
        # The state store is down or refused: nothing was committed; the client may retry.
        return outcome_response(503, "transient", f"patient state store unavailable ({type(exc).__name__})")

    @app.exception_handler(PublishError)
    async def _publish_error(_: Request, exc: PublishError) -> Response:
        return outcome_response(503, "transient", "the Kafka output topic is unavailable; nothing was stored, retry")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return outcome_response(400, "invalid", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        return outcome_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "processing"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        return outcome_response(500, "exception", f"internal error ({type(exc).__name__})")
