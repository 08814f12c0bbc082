"""CarePlan write-back to a FHIR server (`OLIGOCDS_FHIR_WRITEBACK_URL`), after the results are committed.

One conditional update per changed result: `PUT {base}/CarePlan?identifier=<system>|<patient key>` with the
draft CarePlan carrying that identifier, so each patient has exactly one OligoCDS proposal on the server, replaced
in place when the proposal changes. The CarePlan's own content-derived `id` is left out (the server keeps the id
of the resource it found). Transport errors, 429 and 5xx are retried with exponential backoff; other 4xx are not.
Writes run in the background after the commit; a failure is logged (a patient-free reason only) and counted, and
never blocks or undoes the stream or the HTTP response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from service.ingest import Change

log = logging.getLogger("oligocds.writeback")
FHIR_JSON = "application/fhir+json"


class CarePlanWriter:
    def __init__(
        self,
        base_url: str,
        canonical_base: str,
        on_result: Callable[[str], None] = lambda _: None,
        attempts: int = 4,
        backoff_s: float = 0.2,
        timeout_s: float = 5.0,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.system = f"{canonical_base}/careplan-subject"
        self._on_result = on_result
        self._attempts = attempts
        self._backoff = backoff_s
        self._client = httpx.AsyncClient(timeout=timeout_s, headers={"accept": FHIR_JSON})
        self._pending: set[asyncio.Task[None]] = set()

    def resource(self, change: Change) -> dict[str, Any]:
        """The CarePlan as written: the result's plan, its id dropped, the patient's stable identifier added."""
        plan = {k: v for k, v in orjson.loads(change.body)["carePlan"].items() if k != "id"}
        plan["identifier"] = [{"system": self.system, "value": change.patient}]
        return plan

    async def write(self, changes: Sequence[Change]) -> None:
        """Start the writes in the background and return at once: a slow FHIR server never holds up an HTTP
        response or the Kafka worker. `close()` waits for writes still running."""
        for change in changes:
            task = asyncio.create_task(self._write_one(change))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _write_one(self, change: Change) -> None:
        url = f"{self.base}/CarePlan?identifier={quote(self.system, safe='')}|{quote(change.patient, safe='')}"
        body = orjson.dumps(self.resource(change))
        for attempt in range(self._attempts):
            outcome = await self._put(url, body)
            if outcome in ("ok", "rejected"):
                self._on_result(outcome)
                if outcome == "rejected":
                    log.warning("CarePlan write-back rejected by the FHIR server")
                return
            await asyncio.sleep(self._backoff * 2**attempt)
        self._on_result("failed")
        log.warning("CarePlan write-back failed after %d attempts (%s)", self._attempts, outcome)

    async def _put(self, url: str, body: bytes) -> str:
        try:
            response = await self._client.put(url, content=body, headers={"content-type": FHIR_JSON})
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if response.is_success:
            return "ok"
        if response.status_code == 429 or response.status_code >= 500:
            return f"HTTP {response.status_code}"
        return "rejected"

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout_s)
        for task in list(self._pending):
            task.cancel()
        await self._client.aclose()
