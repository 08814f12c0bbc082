"""Structured JSON logs with a request id, and no PHI: log lines carry ids of our own making, routes (templates,
never raw paths), statuses and timings — never names, birth dates, identifiers, resource contents or tokens."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        for key in ("route", "method", "status", "ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("oligocds")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


access = logging.getLogger("oligocds.access")


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def with_request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id", "")
        rid = rid if rid.replace("-", "").isalnum() and len(rid) <= 64 else uuid.uuid4().hex
        token = request_id.set(rid)
        start = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            request_id.reset(token)
        response.headers["X-Request-Id"] = rid
        route = getattr(request.scope.get("route"), "path", "unmatched")
        extra = {
            "route": route,
            "method": request.method,
            "status": response.status_code,
            "ms": round((time.perf_counter() - start) * 1000, 2),
        }
        token = request_id.set(rid)
        access.info("request", extra=extra)
        request_id.reset(token)
        return response
