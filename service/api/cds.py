"""CDS Hooks routes (cds-hooks.md §2–§9): discovery, service call, feedback; CORS for browser clients.

Thin: each route reads the body and delegates to `service.cdshooks.hooks.CdsHooks`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from service.api.auth import AuthError, AuthSettings, JwtVerifier, KeysNotHeld, StoreReplay
from service.api.body import read_json_body
from service.api.errors import outcome, outcome_response
from service.api.json import fhir_json, json_response
from service.bootstrap import Container
from service.cdshooks.cache import ResponseCache
from service.cdshooks.errors import CdsError
from service.cdshooks.feedback import StoreFeedback, StoreIssuedCards, summary
from service.cdshooks.fetch import HttpFhirFetcher
from service.cdshooks.hooks import CdsHooks, CdsState
from service.cdshooks.services import SERVICES
from service.config import Settings
from service.store import Store, StoreError

log = logging.getLogger("oligocds.cds")


class NotAuthorized(Exception):
    """Any JWT failure: 401 with the same minimal body for every cause (cds-hooks.md §8)."""


async def authorize(request: Request) -> None:
    """The one call site of the client-JWT check for every CDS Hooks route (not the CORS preflight).

    Production without a configured issuer allow-list and public URL refuses every call; development accepts
    calls without a JWT (cds-hooks.md §8). The reason of a refusal is logged, never the token."""
    verifier: JwtVerifier | None = request.app.state.jwt
    if verifier is None:
        raise NotAuthorized
    header = request.headers.get("authorization")
    last: AuthError | None = None
    for aud in audiences(request):
        try:
            await _verify(verifier, header, aud)
            return
        except AuthError as exc:
            last = exc
    log.info("CDS Hooks call refused: %s", last.reason if last else "no audience")
    raise NotAuthorized


async def _verify(verifier: JwtVerifier, header: str | None, aud: str) -> None:
    """Checks 1–7 on the event loop when the issuer's keys are held (the common case: a worker-thread hop costs
    more CPU than it saves and makes the loop and the thread fight over the GIL under load); all of them in a
    worker thread when a JWKS must be loaded first (network). Check 8, the replay store, is a database shared by
    replicas (`OLIGOCDS_STORE_URL`): always in a worker thread, never blocking the loop."""
    try:
        claims = verifier.verify(header, aud, offline=True, replay_check=False)
    except KeysNotHeld:
        await run_in_threadpool(verifier.verify, header, aud)
        return
    if claims is not None:
        await run_in_threadpool(verifier.check_replay, claims)


class OutcomeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered by an OperationOutcome (cds-hooks.md §10:
    every non-2xx answer but 401 carries one) instead of plain text; the CORS headers stay as Starlette sets them."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = outcome_response(response.status_code, "forbidden", bytes(response.body).decode())
        for name in ("vary", "access-control-allow-methods", "access-control-max-age"):
            if name in response.headers:
                refused.headers[name] = response.headers[name]
        return refused


def feedback_rows(state: CdsState) -> Iterator[tuple[str, str, str, str, int]]:
    """(service, rule, code, outcome, count) for the metrics, from the feedback store's own summary (shared by
    replicas: every replica exports the same totals). None when the store is unavailable: the rest of the scrape
    still works."""
    try:
        summaries = {s: summary(state.feedback.counts(s)) for s in dict.fromkeys(s.id for s in SERVICES)}
    except StoreError as exc:
        log.warning("feedback metrics unavailable: %s", type(exc).__name__)
        return
    for service, counted in summaries.items():
        for row in counted["rules"]:
            for result in ("accepted", "overridden"):
                yield service, row["rule"], row["code"], result, row[result]


def audiences(request: Request) -> list[str]:
    """Accepted `aud` values: the URL called; for feedback also the service URL (the spec gives no example)."""
    called = audience(request)
    if called.endswith("/feedback"):
        return [called, called.removesuffix("/feedback")]
    return [called]


def audience(request: Request) -> str:
    """The URL called, built from the configured public base URL, not from the Host header (§8 check 5)."""
    settings: Settings = request.app.state.settings
    return (settings.public_base_url or str(request.base_url)).rstrip("/") + request.url.path


router = APIRouter(prefix="/cds-services", dependencies=[Depends(authorize)])


def _hooks(request: Request) -> CdsHooks:
    container: Container = request.app.state.container
    settings: Settings = request.app.state.settings
    return CdsHooks(container.evaluator.evaluate_json, request.app.state.cds, https_only=settings.env != "development")


async def _body(request: Request) -> bytes:
    return await read_json_body(request, request.app.state.settings.max_body_bytes)


@router.get("")
@router.get("/", include_in_schema=False)  # the same answer with a trailing slash (no redirect a client may not follow)
async def discovery(request: Request) -> Response:
    """CDS Services discovery, generated from the service declarations."""
    rs = request.app.state.container.current_runner().ruleset
    return json_response(_hooks(request).discovery({"name": rs.name, "version": rs.version, "digest": rs.digest}))


@router.post("/{service_id}")
async def call(service_id: str, request: Request) -> Response:
    """Call a CDS service: cards for the hook's context and prefetch."""
    return Response(await _hooks(request).call(service_id, await _body(request)), media_type="application/json")


@router.post("/{service_id}/feedback")
async def feedback(service_id: str, request: Request) -> Response:
    """Feedback on the cards of a service (stored once per identical item; the store is a database)."""
    await run_in_threadpool(_hooks(request).feedback, service_id, await _body(request))
    return Response(status_code=200)


@router.get("/{service_id}/feedback/summary")
async def feedback_summary(service_id: str, request: Request) -> Response:
    """Feedback counts per rule and recommendation code."""
    return json_response(await run_in_threadpool(_hooks(request).feedback_summary, service_id))


def install(app: FastAPI, settings: Settings) -> None:
    """CORS (§9: `*` only in development), the per-app CDS state, and the CDS error answers."""
    listed = [o.strip() for o in (settings.cors_origins or "").split(",") if o.strip()]
    app.add_middleware(
        OutcomeCORSMiddleware,
        allow_origins=["*"] if settings.env == "development" else listed,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization"],
        allow_credentials=False,
    )
    degraded = app.state.metrics.fhir_fallback_degraded
    fetcher = HttpFhirFetcher(
        deadline_ms=settings.fhir_timeout_ms,
        on_degraded=lambda key, reason: degraded.labels(key=key, reason=reason).inc(),
    )

    # feedback, issued cards and replay stores: the container's state store (set by the lifespan, opened on first use)
    def store() -> Store:
        return app.state.container.store  # type: ignore[no-any-return]

    cache = ResponseCache(
        ttl_s=settings.cds_idempotency_seconds, max_bytes=int(settings.cds_idempotency_max_mb * 1024 * 1024)
    )

    def stored(patient: str, since: float) -> list[dict[str, Any]] | None:
        with store().transaction() as tx:
            return tx.fresh_resources(patient, since)

    app.state.cds = CdsState(
        StoreFeedback(store),
        cache=cache,
        issued=StoreIssuedCards(store),
        fetcher=fetcher,
        stored=stored,
        stored_max_age_s=settings.cds_stored_state_max_age_s,
    )
    app.state.metrics.watch_feedback(lambda: feedback_rows(app.state.cds))
    try:
        replay = StoreReplay(lambda: app.state.container.store)
        app.state.jwt = JwtVerifier(AuthSettings.from_settings(settings), replay=replay)
    except ValueError as exc:  # production without an issuer allow-list or public URL
        log.warning("CDS Hooks JWT verification is not configured (%s): CDS Hooks calls are refused", exc)
        app.state.jwt = None

    @app.exception_handler(CdsError)
    async def _cds_error(_: Request, exc: CdsError) -> Response:
        return outcome_response(exc.status, exc.code, exc.diagnostics)

    @app.exception_handler(NotAuthorized)
    async def _unauthorized(_: Request, exc: NotAuthorized) -> Response:
        response = fhir_json(outcome("security", None), 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
