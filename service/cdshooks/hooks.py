"""The CDS Hooks use case: discovery, service call and feedback (cds-hooks.md §2–§7), without HTTP.

A call is read and checked (400/404), its prefetch turned into one collection Bundle (412 when Patient or
Condition cannot be had), evaluated, and answered with the cards of the result (all of them on patient-view,
those about the draft orders on the order hooks)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from service.cdshooks import orders, wire
from service.cdshooks.cache import ResponseCache
from service.cdshooks.errors import CdsError
from service.cdshooks.feedback import (
    Feedback,
    FeedbackStore,
    IssuedCards,
    MemoryIssuedCards,
    summary,
)
from service.cdshooks.prefetch import NoFetcher, Prefetched, PrefetchFetcher, queries, read_prefetch
from service.cdshooks.services import REQUIRED_KEYS, CdsService, declared, discovery
from service.fhir.parse import FHIR_ID, BundleError
from service.fhir.util import has_id

log = logging.getLogger("oligocds.cdshooks")

Resource = dict[str, Any]
Evaluate = Callable[[Any, date | None], list[dict[str, Any]]]
_CONTEXTS: Mapping[str, type[wire.PatientViewContextJson]] = {
    "patient-view": wire.PatientViewContextJson,
    "order-select": wire.OrderSelectContextJson,
    "order-sign": wire.OrderSignContextJson,
}


@dataclass(slots=True)
class CdsState:
    """What outlives one call: feedback (shared by replicas), response cache, issued cards, the FHIR fallback."""

    feedback: FeedbackStore
    cache: ResponseCache = field(default_factory=ResponseCache)
    issued: IssuedCards = field(default_factory=MemoryIssuedCards)
    fetcher: PrefetchFetcher = field(default_factory=NoFetcher)
    # the patient's stored state (POST /ingest, Kafka) when it arrived at or after the given time, else None
    stored: Callable[[str, float], list[Resource] | None] | None = None
    stored_max_age_s: float = 0.0

    def close(self) -> None:
        """At app shutdown: finish the pending writes of issued cards."""
        self.issued.close()


@dataclass(frozen=True, slots=True)
class HookCall:
    service: CdsService
    patient: str  # "Patient/<id>"
    request: wire.HookRequestJson
    context: wire.PatientViewContextJson

    @property
    def patient_id(self) -> str:
        return self.patient.removeprefix("Patient/")


@dataclass(frozen=True, slots=True)
class CdsHooks:
    evaluate: Evaluate
    state: CdsState
    https_only: bool = True  # production: a token goes to an https fhirServer only

    def discovery(self, ruleset: Mapping[str, str]) -> dict[str, Any]:
        return discovery(dict(ruleset))

    async def call(self, service_id: str, body: bytes) -> bytes:
        """The JSON response to a service call: `{"cards": [...]}` (rendered once; a repeat gets the same bytes)."""
        call = self._read_call(service_id, body)
        key = self.state.cache.key(service_id, call.request.hookInstance, body)
        cached = self.state.cache.get(key)
        if cached is not None:
            return cached
        prefetched = await self._prefetch(call)
        # CPU-bound under the GIL: evaluated on the event loop, first come first served (see docs/performance.md)
        cards = self._cards(call, prefetched)
        response = {"cards": [prune(c) for c in cards]}
        self.state.issued.record(call.patient, response["cards"], service_id)  # written in the background
        rendered = orjson.dumps(response)
        self.state.cache.put(key, rendered)
        log.info(
            "cds %s %s hookInstance=%s cards=%d", service_id, call.service.hook, call.request.hookInstance, len(cards)
        )
        return rendered

    def feedback(self, service_id: str, body: bytes) -> int:
        """Store the feedback items (idempotent), each with the card it is about when one of the replicas issued
        it; return how many were new. Blocks on the feedback store and the issued cards (database I/O)."""
        self._services(service_id)
        items = [_feedback(i) for i in wire.read(wire.FeedbackJson, wire.load(body)).feedback]
        return self.state.feedback.add(service_id, [(i, self.state.issued.find(i.card)) for i in items])

    def feedback_summary(self, service_id: str) -> dict[str, Any]:
        """Counts per rule and code (blocks on the feedback store)."""
        self._services(service_id)
        return {"service": service_id, **summary(self.state.feedback.counts(service_id))}

    # --- reading the call ------------------------------------------------------------------------------
    def _services(self, service_id: str) -> tuple[CdsService, ...]:
        services = declared(service_id)
        if not services:
            raise CdsError(404, "not-found", f"no CDS service '{service_id}'")
        return services

    def _read_call(self, service_id: str, body: bytes) -> HookCall:
        services = self._services(service_id)
        request = wire.read(wire.HookRequestJson, wire.load(body))
        service = next((s for s in services if s.hook == request.hook), None)
        if service is None:
            served = ", ".join(s.hook for s in services)
            raise CdsError(400, "not-supported", f"hook: '{request.hook}' is not served by {service_id} ({served})")
        server = request.fhirServer or ""
        if self.https_only and request.fhirAuthorization is not None and not server.startswith("https://"):
            raise CdsError(400, "security", "fhirServer: must be https when fhirAuthorization is sent")
        context = wire.read(_CONTEXTS[service.hook], request.context, "context")
        patient = context.patientId.removeprefix("Patient/")
        if not FHIR_ID.fullmatch(patient):  # it goes into FHIR query URLs: only a valid FHIR id
            raise CdsError(400, "invalid", "context.patientId: not a FHIR id ([A-Za-z0-9-.]{1,64})")
        return HookCall(service, f"Patient/{patient}", request, context)

    # --- data ------------------------------------------------------------------------------------------
    async def _prefetch(self, call: HookCall) -> Prefetched:
        keys = call.service.prefetch
        got = read_prefetch(call.request.prefetch, keys)
        if self.state.stored is not None and self.state.stored_max_age_s > 0:
            # cds-hooks.md §11.8: the call is evaluated over the patient's fresh stored state (from /ingest or
            # Kafka), the request's own resources winning on equal type and id; it also stands in for absent keys
            # (no FHIR query, no 412)
            since = time.time() - self.state.stored_max_age_s
            stored = await asyncio.to_thread(self.state.stored, call.patient, since)
            if stored:
                got = _over_stored(got, stored)
        server = call.request.fhirServer
        token = call.request.fhirAuthorization
        # R61: each call to the FHIR server presents the client's access token; without one, nothing is queried
        if got.missing and server and token is not None:
            wanted = queries(keys, got.missing, call.patient_id)
            fetched = await self.state.fetcher.fetch(server, token, wanted)
            got = Prefetched({**got.resources, **fetched}, tuple(k for k in got.missing if k not in fetched))
        unobtainable = [k for k in REQUIRED_KEYS if k in got.missing]
        if unobtainable:
            how = (
                "the FHIR server fallback could not obtain them"
                if server and token is not None
                else "no fhirServer and fhirAuthorization to query (cds-hooks.md §5)"
            )
            raise CdsError(
                412, "incomplete", f"prefetch {', '.join(unobtainable)}: absent, failed or incomplete, and {how}"
            )
        return got

    def _cards(self, call: HookCall, prefetched: Prefetched) -> list[dict[str, Any]]:
        chosen_orders = self._selected(call)
        # a draft that names another patient is not this call's (§4: the context patient's orders): not checked,
        # and no card may offer to change it
        sent = [r for r in chosen_orders if orders.for_patient(r, call.patient)]
        foreign = [r for r in chosen_orders if not orders.for_patient(r, call.patient)]
        resources = [r for rs in prefetched.resources.values() for r in rs]
        held = (r.get("id") for r in resources if r.get("resourceType") == "MedicationRequest")
        drafts = orders.as_drafts(sent, call.patient, (i for i in held if isinstance(i, str)))
        result = self._result(call, bundle(resources, drafts))
        if result is None:
            return []
        if not call.service.orders:
            return list(result["cards"])
        readable = orders.readable(drafts, sent)
        mine = [(card, orders.concerned(card, readable)) for card in result["cards"]]
        chosen = [orders.for_orders(card, about) for card, about in mine if about]
        # the summary card (its detail lists the open issues, cds-hooks.md §6) when an input that a rule about the
        # drafted drugs needs is missing, stale or conflicting, or a draft could not be read: the order cannot be
        # fully checked, and the person signing it must know
        summary = next((c for c in result["cards"] if orders.is_summary(c)), None)
        if summary is not None and (
            foreign or orders.open_for(result["issues"], readable, len(drafts) - len(readable))
        ):
            chosen.insert(0, orders.with_unreadable(summary, result["issues"], foreign))
        return chosen

    def _selected(self, call: HookCall) -> list[Resource]:
        """The draft orders the hook is about, as the client sent them (order-select: only `selections`)."""
        context = call.context
        if not isinstance(context, wire.OrderSignContextJson):
            return []
        selections = context.selections if isinstance(context, wire.OrderSelectContextJson) else None
        return orders.selected_requests(context.draftOrders, selections)

    def _result(self, call: HookCall, data: dict[str, Any]) -> dict[str, Any] | None:
        if not data["entry"]:
            return None  # every key `null`: nothing known about the patient
        try:
            results = self.evaluate(data, None)
        except BundleError as exc:
            raise CdsError(412, "incomplete", f"prefetch data unusable: {exc.diagnostics}") from None
        return next((r for r in results if r["patient"] == call.patient), None)


def bundle(resources: Sequence[Resource], drafts: Sequence[Resource]) -> dict[str, Any]:
    """One collection Bundle; a draft order replaces a prefetched copy with the same type and id."""
    chosen: dict[str, Resource] = {}
    for n, resource in enumerate([*resources, *drafts]):
        chosen[f"{resource.get('resourceType')}/{resource['id']}" if has_id(resource) else f"#{n}"] = resource
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in chosen.values()]}


def prune(value: Any) -> Any:
    """No null or empty element anywhere (cds-hooks.md §1, R3)."""
    if isinstance(value, dict):
        return _pruned_dict(value)
    if isinstance(value, list):
        return _pruned_list(value)
    return value


# One pass per container, leaves tested without a call: a response holds some 600 elements per card set.
def _pruned_dict(value: dict[Any, Any]) -> dict[Any, Any]:
    out = {}
    for k, v in value.items():
        if isinstance(v, dict):
            v = _pruned_dict(v)
        elif isinstance(v, list):
            v = _pruned_list(v)
        if v is not None and v != "" and v != [] and v != {}:
            out[k] = v
    return out


def _pruned_list(value: list[Any]) -> list[Any]:
    out = []
    for v in value:
        if isinstance(v, dict):
            v = _pruned_dict(v)
        elif isinstance(v, list):
            v = _pruned_list(v)
        if v is not None and v != "" and v != [] and v != {}:
            out.append(v)
    return out


def _feedback(item: wire.FeedbackItemJson) -> Feedback:
    reason = item.overrideReason.reason if item.overrideReason else None
    return Feedback(
        card=item.card,
        outcome=item.outcome,
        outcome_timestamp=item.outcomeTimestamp,
        reason=(reason.system, reason.code) if reason else None,
        accepted_suggestions=tuple(s.id for s in item.acceptedSuggestions or ()),
        user_comment=item.overrideReason.userComment if item.overrideReason else None,
    )


def _over_stored(got: Prefetched, stored: Sequence[Resource]) -> Prefetched:
    """The prefetched resources over the patient's stored ones: a stored resource of the same type and id as a
    prefetched one is left out; every key counts as obtained."""
    sent = {(r.get("resourceType"), r.get("id")) for rs in got.resources.values() for r in rs}
    kept = [r for r in stored if (r.get("resourceType"), r.get("id")) not in sent]
    return Prefetched({**got.resources, STORED_KEY: kept}, ())


STORED_KEY = "oligocds-stored-state"  # not a prefetch key: the stored resources the call adds
