"""The FHIR-server fallback over HTTP (cds-hooks.md §5, §10, §11.4): absent prefetch keys queried on `fhirServer`.

Contract of `HttpFhirFetcher.fetch`:
- one `GET {fhirServer}/{query}` per key, all keys at once, with `Accept: application/fhir+json` and, when the
  call has `fhirAuthorization.access_token`, `Authorization: Bearer <token>`;
- a searchset's `next` links are followed, one page after the other, only while they stay under `fhirServer`
  (they carry the token) and within the same deadline;
- each HTTP request may take `request_timeout_ms` (250 ms, cds-hooks.md §10); the whole call ends by
  `deadline_ms` (`OLIGOCDS_FHIR_TIMEOUT_MS`) whatever the server does: keys still open then are abandoned;
- a key is obtained only when every page of it arrived as a 2xx FHIR JSON answer of the expected kind; a timeout,
  transport error, non-2xx status (redirects are not followed), non-JSON body, OperationOutcome, unexpected
  resource type or a `next` link leaving `fhirServer` leaves it out: the caller treats it as absent (412 for the
  required keys, `unknown` facts for the others);
- each left-out key is logged as key and reason only (no URL, patient id or token) and passed to `on_degraded`;
- the token is used for this call's requests only: never logged, stored or sent anywhere else.

A prefetch Bundle that arrived with a `next` link counts as absent (`prefetch.read_prefetch`), so its key is
queried here from the template: the whole result within the budget, or nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import orjson

from service.cdshooks.prefetch import Resource

log = logging.getLogger("oligocds.cdshooks.fetch")

MAX_PAGES = 50  # per key; a server that pages on for longer is broken (or the budget is gone long before)
Degraded = Callable[[str, str], None]  # (key, reason); a metrics hook: must not raise


class KeyFailed(Exception):
    """One key could not be obtained; `reason` is short and safe to log (no URL, id or token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpFhirFetcher:
    """The `PrefetchFetcher` of the service: parallel GETs on the client's FHIR server under a hard deadline."""

    def __init__(
        self,
        deadline_ms: int = 400,
        request_timeout_ms: int = 250,
        on_degraded: Degraded | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._deadline_s = deadline_ms / 1000
        self._request_timeout_s = request_timeout_ms / 1000
        self._on_degraded = on_degraded
        self._transport = transport  # tests only
        self._ssl = httpx.create_ssl_context()  # built once: loading the CA bundle takes longer than a request

    async def fetch(
        self, server: str, authorization: Mapping[str, Any] | None, queries: Mapping[str, str]
    ) -> dict[str, list[Resource]]:
        """The resources of each query (key -> relative URL) obtained by the deadline; failed keys left out."""
        if not queries:
            return {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        base = server.rstrip("/") + "/"
        async with self._client(authorization) as client:
            tasks = {key: asyncio.create_task(self._key(client, base, query)) for key, query in queries.items()}
            try:
                await asyncio.wait(tasks.values(), timeout=max(0.0, deadline - loop.time()))
            finally:  # also when the call itself is cancelled: no request outlives it
                await _cancel(tasks.values())
        return self._collect(tasks)

    def _client(self, authorization: Mapping[str, Any] | None) -> httpx.AsyncClient:
        headers = {"Accept": "application/fhir+json"}
        token = (authorization or {}).get("access_token")
        if isinstance(token, str) and token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(
            headers=headers,
            timeout=self._request_timeout_s,
            verify=self._ssl,
            follow_redirects=False,
            transport=self._transport,
        )

    def _collect(self, tasks: Mapping[str, asyncio.Task[list[Resource]]]) -> dict[str, list[Resource]]:
        """Results of the keys that finished; the others (failed or cut by the deadline) are reported."""
        got: dict[str, list[Resource]] = {}
        for key, task in tasks.items():
            if task.cancelled():
                self._degraded(key, "deadline")
            elif isinstance(exc := task.exception(), KeyFailed):
                self._degraded(key, exc.reason)
            elif exc is not None:
                self._degraded(key, type(exc).__name__)
            else:
                got[key] = task.result()
        return got

    def _degraded(self, key: str, reason: str) -> None:
        log.warning("FHIR fallback: prefetch key %s not obtained (%s)", key, reason)
        if self._on_degraded is not None:
            self._on_degraded(key, reason)

    async def _key(self, client: httpx.AsyncClient, base: str, query: str) -> list[Resource]:
        """All resources of one query: the read resource, or every page of the searchset."""
        path = query.lstrip("/").split("?", 1)[0]
        body = await self._get(client, base + query.lstrip("/"))
        if "?" not in query and path.count("/") == 1:  # a read: Patient/<id>
            if body.get("resourceType") != path.split("/", 1)[0]:
                raise KeyFailed("unexpected resourceType")
            return [body]
        return await self._pages(client, base, body)

    async def _pages(self, client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> list[Resource]:
        resources: list[Resource] = []
        for _ in range(MAX_PAGES):
            if body.get("resourceType") != "Bundle":
                raise KeyFailed("search answer is not a Bundle")
            resources += page_resources(body)
            link = next_link(body, base)
            if link is None:
                return resources
            body = await self._get(client, link)
        raise KeyFailed("too many pages")

    async def _get(self, client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        """One FHIR JSON answer within the per-request timeout; anything else raises `KeyFailed`."""
        try:
            async with asyncio.timeout(self._request_timeout_s):
                response = await client.get(url)
        except (TimeoutError, httpx.TimeoutException):
            raise KeyFailed("timeout") from None
        except httpx.HTTPError as exc:
            raise KeyFailed(type(exc).__name__) from None
        if not response.is_success:
            raise KeyFailed(f"HTTP {response.status_code}")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise KeyFailed("not JSON") from None
        if not isinstance(body, dict):
            raise KeyFailed("not a FHIR resource")
        if body.get("resourceType") == "OperationOutcome":
            raise KeyFailed("OperationOutcome")
        return body


async def _cancel(tasks: Iterable[asyncio.Task[list[Resource]]]) -> None:
    """Cancel the unfinished tasks and wait until they have stopped."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def page_resources(bundle: Mapping[str, Any]) -> list[Resource]:
    """The resources of one searchset page, without `search.mode = outcome` entries and OperationOutcomes."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise KeyFailed("malformed Bundle")
    found: list[Resource] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        mode = (entry.get("search") or {}).get("mode") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and mode != "outcome" and resource.get("resourceType") != "OperationOutcome":
            found.append(resource)
    return found


def next_link(bundle: Mapping[str, Any], base: str) -> str | None:
    """The absolute `next` URL of a page, None on the last page; `KeyFailed` if it leaves the server `base`.

    A relative link is read against `base`. The link must keep scheme, host and port and stay at or under the
    base path (HAPI's `{base}?_getpages=…` included): the token goes with it."""
    links = bundle.get("link") or []
    if not isinstance(links, list):
        raise KeyFailed("malformed Bundle")
    found = next((x.get("url") for x in links if isinstance(x, dict) and x.get("relation") == "next"), None)
    if found is None:
        return None
    if not isinstance(found, str) or not found:
        raise KeyFailed("malformed next link")
    root = httpx.URL(base)
    url = root.join(found)
    same_origin = (url.scheme, url.host, url.port) == (root.scheme, root.host, root.port)
    if not same_origin or not (url.path == root.path.rstrip("/") or url.path.startswith(root.path)):
        raise KeyFailed("next link outside fhirServer")
    return str(url)
