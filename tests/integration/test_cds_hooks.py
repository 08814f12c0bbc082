"""CDS Hooks through a running server over real HTTP (cds-hooks.md §2–§10): discovery, patient-view and the
order hooks on an OMD patient, errors, idempotency, feedback, CORS and the production lock."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.bootstrap import Container
from service.cdshooks.cache import ResponseCache
from service.cdshooks.fetch import HttpFhirFetcher
from service.cdshooks.hooks import CdsHooks
from service.cdshooks.prefetch import Resource
from service.config import Settings
from service.domain.catalogue import CODE_DISPLAY
from tests.conformance.test_cds_hooks_payloads import assert_no_empty, assert_valid_response
from tests.server import running_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oligo-breast.json"
JSON = {"Content-Type": "application/json"}
PV, ORDERS = "/cds-services/oligocds-patient-view", "/cds-services/oligocds-orders"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
KEYS = {
    "Patient",
    "Condition",
    "Observation",
    "Procedure",
    "ServiceRequest",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationStatement",
    "BodyStructure",
    "RiskAssessment",
}


@pytest.fixture(scope="module")
def client(settings: Settings, container: Container) -> Iterator[httpx.Client]:
    with running_server(settings, container) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


# --- building requests --------------------------------------------------------------------------------


def omd_prefetch(extra: list[Resource] | None = None) -> dict[str, Any]:
    """The example OMD patient as a client would prefetch it."""
    resources = [e["resource"] for e in json.loads(EXAMPLE.read_text(encoding="utf-8"))["entry"]] + (extra or [])
    return prefetch_of(resources)


def prefetch_of(resources: list[Resource]) -> dict[str, Any]:
    """Resources as a client prefetches them: Patient by id, one searchset Bundle per other type."""
    prefetch: dict[str, Any] = {}
    for r in resources:
        if r["resourceType"] == "Patient":
            prefetch["Patient"] = r
        else:
            page = prefetch.setdefault(r["resourceType"], {"resourceType": "Bundle", "type": "searchset", "entry": []})
            page["entry"].append({"fullUrl": f"https://ehr.example/fhir/{r['resourceType']}/{r['id']}", "resource": r})
    return prefetch


def crcl(value: float) -> Resource:
    return {
        "resourceType": "Observation",
        "id": "crcl-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "35591-7"}]},
        "subject": {"reference": "Patient/example-1"},
        "effectiveDateTime": datetime.now(UTC).date().isoformat(),
        "valueQuantity": {"value": value, "unit": "mL/min", "system": "http://unitsofmeasure.org", "code": "mL/min"},
    }


def draft(rid: str, rxnorm: str, display: str, status: str = "draft") -> Resource:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": display}]},
        "subject": {"reference": "Patient/example-1"},
    }


ZA = draft("za-draft", "77655", "zoledronic acid")
AMOXICILLIN = draft("amox-1", "723", "amoxicillin")


def hook_request(hook: str, prefetch: dict[str, Any], orders: list[Resource] | None = None, **context: Any) -> Any:
    ctx: dict[str, Any] = {"userId": "Practitioner/p1", "patientId": "example-1", **context}
    if orders is not None:
        ctx["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": o} for o in orders],
        }
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx, "prefetch": prefetch}


def post(client: httpx.Client, path: str, body: Any, status: int = 200) -> Any:
    response = client.post(path, content=json.dumps(body), headers=JSON)
    assert response.status_code == status, response.text
    return response.json()


def cards(client: httpx.Client, path: str, body: Any) -> list[dict[str, Any]]:
    return assert_valid_response(post(client, path, body))


def outcome(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    return str(body["issue"][0]["diagnostics"])


def code_of(card: dict[str, Any]) -> str:
    return str(card["source"]["topic"]["code"])


def about_orders(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recommendation cards of an order hook, without the summary card that lists the open inputs."""
    return [c for c in got if code_of(c) != "oligometastatic-assessment"]


# --- discovery ----------------------------------------------------------------------------------------


def test_discovery_is_generated_from_the_declarations(client: httpx.Client) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.json()["services"]
    assert_no_empty(response.json())
    assert [(s["id"], s["hook"]) for s in services] == [
        ("oligocds-patient-view", "patient-view"),
        ("oligocds-orders", "order-select"),
        ("oligocds-orders", "order-sign"),
    ]
    rules = client.get("/rules").json()
    for service in services:
        assert service["title"] and service["description"] and "usageRequirements" not in service
        assert set(service["prefetch"]) == KEYS
        assert service["prefetch"]["Patient"] == "Patient/{{context.patientId}}"
        assert service["prefetch"]["BodyStructure"] == "BodyStructure?patient={{context.patientId}}"
        ruleset = service["extension"]["org.oligocds.ruleset"]
        assert ruleset == {"name": rules["name"], "version": rules["version"], "digest": rules["digest"]}
    slash = client.get("/cds-services/")  # answered as is, not redirected
    assert slash.status_code == 200 and slash.json() == response.json()


# --- patient-view ---------------------------------------------------------------------------------------


def test_omd_patient_gets_summary_card_first_with_a_care_plan(client: httpx.Client) -> None:
    got = cards(client, PV, hook_request("patient-view", omd_prefetch()))
    summary = got[0]
    assert summary["source"]["label"].startswith("OligoCDS OMD-01")
    assert summary["summary"].startswith("Oligometastatic disease")
    (suggestion,) = summary["suggestions"]
    assert suggestion["label"] == "Create draft care plan" and summary["selectionBehavior"] == "at-most-one"
    (action,) = suggestion["actions"]
    assert action["type"] == "create" and action["resource"]["resourceType"] == "CarePlan"
    assert action["resource"]["status"] == "draft" and action["resource"]["subject"]["reference"] == "Patient/example-1"
    rank = {"critical": 0, "warning": 1, "info": 2}
    indicators = [rank[c["indicator"]] for c in got[1:]]
    assert indicators == sorted(indicators) and "mdt-review" in {code_of(c) for c in got}


def test_card_topics_are_codings_with_the_codes_own_display(client: httpx.Client) -> None:
    """cds-hooks.md §6 (R115): `source.topic` is a Coding {local system, recommendation code, display}; a Coding's
    display is the code's, the same for every patient, not the card's patient-specific summary."""
    got = cards(client, PV, hook_request("patient-view", omd_prefetch([crcl(45)])))
    for card in got[1:]:
        topic = card["source"]["topic"]
        assert topic["display"] == CODE_DISPLAY[topic["code"]] != card["summary"]
    assert got[0]["source"]["topic"]["code"] == "oligometastatic-assessment"


def test_patient_id_bare_or_prefixed_gives_the_same_cards(client: httpx.Client) -> None:
    bare = cards(client, PV, hook_request("patient-view", omd_prefetch()))
    prefixed = cards(client, PV, hook_request("patient-view", omd_prefetch(), patientId="Patient/example-1"))
    assert bare == prefixed


def test_card_uuids_are_stable_across_calls(client: httpx.Client) -> None:
    first = cards(client, PV, hook_request("patient-view", omd_prefetch()))
    second = cards(client, PV, hook_request("patient-view", omd_prefetch()))
    assert [c["uuid"] for c in first] == [c["uuid"] for c in second]


def test_prefetch_value_kinds(client: httpx.Client) -> None:
    prefetch = omd_prefetch()
    wrapped = {k: {"response": {"status": "200 OK"}, "resource": v} for k, v in prefetch.items()}
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    plain = cards(client, PV, hook_request("patient-view", prefetch))
    assert cards(client, PV, hook_request("patient-view", wrapped)) == plain  # Bundle-entry wrappers unwrapped
    extra = {**prefetch, "item1": {"resourceType": "Patient", "id": "someone-else"}, "patientToGreet": None}
    assert cards(client, PV, hook_request("patient-view", extra)) == plain  # undeclared keys ignored
    # A failed non-required key leaves its facts unknown: still 200 (ECOG, counts… come from Observation).
    without_obs = cards(client, PV, hook_request("patient-view", {**prefetch, "Observation": failed}))
    assert without_obs and without_obs != plain
    response = client.post(PV, json=hook_request("patient-view", {**prefetch, "Condition": failed}))
    assert "Condition" in outcome(response, 412)
    # the same failure reported inside a search result (search.mode outcome) is a failed query too (R52)
    in_bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": failed, "search": {"mode": "outcome"}}],
    }
    response = client.post(PV, json=hook_request("patient-view", {**prefetch, "Condition": in_bundle}))
    assert "Condition" in outcome(response, 412)


def test_no_cancer_no_cards(client: httpx.Client) -> None:
    patient = {"resourceType": "Patient", "id": "example-1"}
    assert post(client, PV, hook_request("patient-view", {"Patient": patient, "Condition": None})) == {"cards": []}
    assert post(client, PV, hook_request("patient-view", {"Patient": None, "Condition": None})) == {"cards": []}


# --- order hooks ----------------------------------------------------------------------------------------


def test_order_sign_zoledronic_acid_at_crcl_25_is_critical_with_removal(client: httpx.Client) -> None:
    request = hook_request("order-sign", omd_prefetch([crcl(25)]), orders=[ZA, AMOXICILLIN])
    every = cards(client, ORDERS, request)
    # no calcium result: BMA-02's hypercalcaemia check and BMA-04 cannot decide for the drafted zoledronic acid, so
    # the summary card comes first and lists the open inputs (cds-hooks.md §6)
    assert code_of(every[0]) == "oligometastatic-assessment" and "ca_corrected_mg_dl (BMA-02" in every[0]["detail"]
    got = about_orders(every)
    assert got[0]["indicator"] == "critical" and code_of(got[0]) == "zoledronic-acid-not-recommended"
    card = got[0]
    assert card["extension"]["org.oligocds.draftOrders"] == ["MedicationRequest/za-draft"]
    assert "MedicationRequest/za-draft" in card["detail"]
    (suggestion,) = card["suggestions"]
    assert suggestion["label"] == "Remove draft order" and card["selectionBehavior"] == "at-most-one"
    assert uuid.UUID(suggestion["uuid"]) and suggestion["isRecommended"] is True
    (action,) = suggestion["actions"]
    assert action == {
        "type": "delete",
        "description": action["description"],
        "resourceId": "MedicationRequest/za-draft",
    }
    assert card["overrideReasons"]
    # Only cards about the ordered drugs; no OMD summary, nothing about the antibiotic.
    assert all(c["source"]["label"].split()[1].startswith(("BMA-", "RA223")) for c in got)
    assert all("amox-1" not in json.dumps(c["extension"]["org.oligocds.draftOrders"]) for c in got)


def test_order_select_uses_only_the_selected_orders(client: httpx.Client) -> None:
    prefetch = omd_prefetch([crcl(25)])
    selected_amox = hook_request("order-select", prefetch, [ZA, AMOXICILLIN], selections=["MedicationRequest/amox-1"])
    assert cards(client, ORDERS, selected_amox) == []
    selected_za = hook_request("order-select", prefetch, [ZA, AMOXICILLIN], selections=["MedicationRequest/za-draft"])
    got = about_orders(cards(client, ORDERS, selected_za))
    assert code_of(got[0]) == "zoledronic-acid-not-recommended" and got[0]["indicator"] == "critical"


def test_signed_status_in_draft_orders_still_counts_as_a_draft(client: httpx.Client) -> None:
    active = draft("za-draft", "77655", "zoledronic acid", status="active")
    got = about_orders(cards(client, ORDERS, hook_request("order-sign", omd_prefetch([crcl(25)]), orders=[active])))
    assert got[0]["indicator"] == "critical" and got[0]["suggestions"][0]["actions"][0]["type"] == "delete"


def test_draft_order_replaces_the_prefetched_copy(client: httpx.Client) -> None:
    prefetched = draft("za-draft", "77655", "zoledronic acid", status="active")
    prefetched["authoredOn"] = "2026-01-01"
    got = about_orders(
        cards(client, ORDERS, hook_request("order-sign", omd_prefetch([crcl(25), prefetched]), orders=[ZA]))
    )
    assert "data-conflict" not in {code_of(c) for c in got} and got[0]["indicator"] == "critical"


def test_invalid_draft_order_is_skipped(client: httpx.Client) -> None:
    broken = {**ZA, "id": "za draft with spaces"}
    got = cards(client, ORDERS, hook_request("order-sign", omd_prefetch([crcl(25)]), orders=[broken]))
    # not checked, and the person signing must know: only the summary card, listing the invalid-value issue; no
    # card names or removes the unreadable order
    (summary,) = got
    assert code_of(summary) == "oligometastatic-assessment"
    assert "Draft orders not checked" in summary["detail"] and "za draft with spaces" in summary["detail"]


def test_a_draft_for_another_patient_is_not_checked_nor_offered_for_removal(client: httpx.Client) -> None:
    """cds-hooks.md §4: draftOrders are the context patient's orders. One that names another patient is not
    evaluated for this patient and no card offers to delete it; the summary card says it was not checked."""
    other = {**ZA, "subject": {"reference": "Patient/someone-else"}}
    got = cards(client, ORDERS, hook_request("order-sign", omd_prefetch([crcl(25)]), orders=[other]))
    assert [code_of(c) for c in got] == ["oligometastatic-assessment"]
    assert "MedicationRequest/za-draft: for Patient/someone-else" in got[0]["detail"]


def test_order_hooks_send_the_summary_card_only_when_an_input_for_the_drafted_drug_is_open(
    client: httpx.Client,
) -> None:
    """cds-hooks.md §6: one summary card listing the open inputs, plus the relevant recommendation cards. On an
    order hook it comes only when the drafted drug cannot be fully checked: here CrCl (BMA-02) is missing, so a
    zoledronic acid order gets it; with CrCl and calcium known it does not."""
    missing = cards(client, ORDERS, hook_request("order-sign", omd_prefetch(), orders=[ZA]))
    assert code_of(missing[0]) == "oligometastatic-assessment" and "crcl (BMA-02" in missing[0]["detail"]
    labs = [crcl(75)]
    for rid, loinc, value, unit in (
        ("ca-1", "17861-6", 9.4, "mg/dL"),
        ("alb-1", "1751-7", 4.0, "g/dL"),
        ("scr-1", "2160-0", 0.9, "mg/dL"),
    ):
        labs.append(
            {
                **crcl(0),
                "id": rid,
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            }
        )
    complete = cards(client, ORDERS, hook_request("order-sign", omd_prefetch(labs), orders=[ZA]))
    assert "oligometastatic-assessment" not in {code_of(c) for c in complete}
    # an order of no drug the rules concern gets nothing, whatever is open
    assert cards(client, ORDERS, hook_request("order-sign", omd_prefetch(), orders=[AMOXICILLIN])) == []


def test_order_without_subject_is_the_context_patients(client: httpx.Client) -> None:
    bare = {k: v for k, v in ZA.items() if k != "subject"}
    got = about_orders(cards(client, ORDERS, hook_request("order-sign", omd_prefetch([crcl(25)]), orders=[bare])))
    assert got[0]["indicator"] == "critical"


def test_double_antiresorptive_offers_removal_of_either_draft(client: httpx.Client) -> None:
    denosumab = draft("dmab-draft", "993449", "denosumab")
    got = cards(client, ORDERS, hook_request("order-sign", omd_prefetch(), orders=[ZA, denosumab]))
    (double,) = [c for c in got if code_of(c) == "double-antiresorptive"]
    removed = {s["actions"][0]["resourceId"] for s in double["suggestions"]}
    assert removed == {"MedicationRequest/za-draft", "MedicationRequest/dmab-draft"}
    assert not any(s["isRecommended"] for s in double["suggestions"])


def test_a_draft_without_id_never_takes_over_an_order_of_the_record(client: httpx.Client) -> None:
    """A draft without an id is named `draft-<n>` for the evaluation; when the patient's record holds a
    MedicationRequest with that id (an active denosumab), the draft gets another name instead of replacing it, so
    BMA-06 still sees both drugs (clinical-rules §6.6; contract.md: nothing is lost)."""
    active = draft("draft-1", "993449", "denosumab", status="active")
    za = {k: v for k, v in ZA.items() if k != "id"}
    got = cards(client, ORDERS, hook_request("order-sign", omd_prefetch([active]), orders=[za]))
    assert "double-antiresorptive" in {code_of(c) for c in got}


# --- errors ---------------------------------------------------------------------------------------------


def test_request_errors(client: httpx.Client) -> None:
    good = hook_request("patient-view", omd_prefetch())
    assert "no CDS service" in outcome(client.post("/cds-services/nope", json=good), 404)
    assert "order-sign" in outcome(client.post(PV, json={**good, "hook": "order-sign"}), 400)
    assert "hookInstance" in outcome(client.post(PV, json={k: v for k, v in good.items() if k != "hookInstance"}), 400)
    assert "context" in outcome(client.post(PV, json={k: v for k, v in good.items() if k != "context"}), 400)
    no_user = {**good, "context": {"patientId": "example-1"}}
    assert outcome(client.post(PV, json=no_user), 400) == "context.userId: missing"
    token = {"access_token": "secret-token", "token_type": "Bearer", "expires_in": 300, "scope": "x", "subject": "s"}
    diagnostics = outcome(client.post(PV, json={**good, "fhirAuthorization": token}), 400)
    assert "fhirServer" in diagnostics and "secret-token" not in diagnostics
    sign = hook_request("order-sign", omd_prefetch())
    assert "draftOrders" in outcome(client.post(ORDERS, json=sign), 400)
    assert "malformed JSON" in outcome(client.post(PV, content=b"{", headers=JSON), 400)
    assert outcome(client.post(PV, content=b"{}", headers={"Content-Type": "text/plain"}), 415)
    assert outcome(client.post(PV, content=b"[]", headers=JSON), 400) == "body: expected a JSON object"


def test_unknown_extension_keys_are_ignored(client: httpx.Client) -> None:
    request = hook_request("patient-view", omd_prefetch())
    extended = {**request, "extension": {"com.example.timestamp": "2017-11-27T22:13:25Z"}, "unknownMember": 1}
    assert cards(client, PV, extended) == cards(client, PV, request)


# --- hookInstance idempotency ----------------------------------------------------------------------------


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The patient of every CDS call that was evaluated (not answered from the cache)."""
    seen: list[str] = []
    original = CdsHooks._cards

    def counting(self: CdsHooks, call: Any, prefetched: Any) -> list[dict[str, Any]]:
        seen.append(call.patient)
        return original(self, call, prefetched)

    monkeypatch.setattr(CdsHooks, "_cards", counting)
    return seen


def test_same_hook_instance_and_body_is_answered_from_the_cache(client: httpx.Client, evaluations: list[str]) -> None:
    request = hook_request("patient-view", omd_prefetch())
    first = post(client, PV, request)
    assert post(client, PV, request) == first and len(evaluations) == 1
    # Same hookInstance, other body (another patient): evaluated again, not the cached answer.
    other = copy.deepcopy(request)
    other["prefetch"]["Condition"] = None
    assert post(client, PV, other) != first and len(evaluations) == 2


def test_idempotency_off_by_setting_evaluates_every_call(
    settings: Settings, container: Container, evaluations: list[str]
) -> None:
    off = settings.model_copy(update={"cds_idempotency_seconds": 0})
    request = hook_request("patient-view", omd_prefetch())
    with running_server(off, container) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert post(c, PV, request) == post(c, PV, request)  # the same answer, computed twice
    assert len(evaluations) == 2


def test_response_cache_expires() -> None:
    now = [0.0]
    cache = ResponseCache(ttl_s=300, clock=lambda: now[0])
    key = cache.key("oligocds-patient-view", "h1", b"{}")
    cache.put(key, b'{"cards":[]}')
    assert cache.get(key) == b'{"cards":[]}' and cache.get(cache.key("oligocds-patient-view", "h1", b"{ }")) is None
    now[0] = 301
    assert cache.get(key) is None


def test_response_cache_keeps_at_most_its_byte_budget_oldest_out_first() -> None:
    response = orjson.dumps({"cards": [{"summary": "x" * 1000}]})
    size = len(response)
    cache = ResponseCache(ttl_s=300, max_bytes=3 * size)
    keys = [cache.key("oligocds-patient-view", f"h{i}", b"{}") for i in range(5)]
    for key in keys:
        cache.put(key, response)
    assert cache.size_bytes == 3 * size and len(cache) == 3
    assert [cache.get(k) is not None for k in keys] == [False, False, True, True, True]
    cache.put(keys[4], response)  # stored again: counted once
    assert cache.size_bytes == 3 * size
    cache.put(cache.key("oligocds-patient-view", "big", b"{}"), orjson.dumps({"cards": [{"summary": "x" * 4 * size}]}))
    assert len(cache) == 3, "a response larger than the whole budget is not kept (and evicts nothing)"


def test_response_cache_off_keeps_nothing() -> None:
    cache = ResponseCache(ttl_s=0)
    key = cache.key("oligocds-patient-view", "h1", b"{}")
    cache.put(key, b'{"cards":[]}')
    assert cache.get(key) is None and len(cache) == 0


# --- FHIR fallback port ------------------------------------------------------------------------------------


def test_a_fetcher_fills_absent_keys(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, str]] = []

    async def fetch(self: Any, server: str, authorization: Any, queries: Any) -> dict[str, list[Resource]]:
        asked.append(dict(queries))
        return {"Condition": []}

    monkeypatch.setattr(HttpFhirFetcher, "fetch", fetch)
    request = hook_request("patient-view", {"Patient": {"resourceType": "Patient", "id": "example-1"}})
    assert "no fhirServer" in outcome(client.post(PV, json=request), 412)
    assert asked == []
    # R61: the FHIR server is only called with the client's access token: fhirServer alone is not queried
    assert "no fhirServer and fhirAuthorization" in outcome(
        client.post(PV, json={**request, "fhirServer": "https://ehr.example/fhir"}), 412
    )
    assert asked == []
    token = {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "s"}
    with_token = {**request, "fhirServer": "https://ehr.example/fhir", "fhirAuthorization": token}
    assert post(client, PV, with_token) == {"cards": []}
    assert asked[0]["Condition"] == "Condition?patient=example-1" and "Patient" not in asked[0]


# --- feedback -------------------------------------------------------------------------------------------


def feedback_item(card: str, outcome: str, when: str = "2026-11-26T10:00:00Z", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"card": card, "outcome": outcome, "outcomeTimestamp": when, **extra}
    if outcome == "accepted" and "acceptedSuggestions" not in extra:
        item["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
    return item


def test_feedback_is_counted_per_rule_and_code(client: httpx.Client) -> None:
    got = cards(client, PV, hook_request("patient-view", omd_prefetch([crcl(25)])))
    summary_card, mdt = got[0], next(c for c in got if code_of(c) == "mdt-review")
    reason = {"reason": {"system": "http://oligocds.org/fhir/CodeSystem/oligocds", "code": "already-addressed"}}
    items = [
        feedback_item(summary_card["uuid"], "accepted"),
        feedback_item(mdt["uuid"], "overridden", overrideReason=reason),
        feedback_item(mdt["uuid"], "overridden", "2026-11-26T12:00:00+01:00", overrideReason={"userComment": "done"}),
        feedback_item(str(uuid.uuid4()), "overridden"),
    ]
    before = client.get(f"{PV}/feedback/summary").json()
    for _ in range(2):  # the second post is a replay: nothing changes
        assert client.post(f"{PV}/feedback", json={"feedback": items}).status_code == 200
    after = client.get(f"{PV}/feedback/summary").json()
    assert_no_empty(after)
    rows = {(r["rule"], r["code"]): r for r in after["rules"]}
    assert rows[("OMD-01", "oligometastatic-assessment")]["accepted"] >= 1
    mdt_row = rows[("MDT-01", "mdt-review")]
    assert mdt_row["overridden"] == 2 and mdt_row["overrideReasons"] == {
        "http://oligocds.org/fhir/CodeSystem/oligocds|already-addressed": 1
    }
    assert after["unmatched"]["overridden"] == before["unmatched"]["overridden"] + 1
    metrics = client.get("/metrics").text  # the same counts, exported for Prometheus
    labels = 'code="mdt-review",outcome="overridden",rule="MDT-01",service="oligocds-patient-view"'
    line = f"oligocds_cds_feedback_total{{{labels}}}"
    assert f"{line} 2.0" in metrics


def test_same_instant_in_another_zone_is_the_same_item(client: httpx.Client) -> None:
    card = str(uuid.uuid4())
    client.post(f"{ORDERS}/feedback", json={"feedback": [feedback_item(card, "overridden", "2026-11-26T10:00:00Z")]})
    before = client.get(f"{ORDERS}/feedback/summary").json()["unmatched"]
    same = feedback_item(card, "overridden", "2026-11-26T11:00:00+01:00")
    assert client.post(f"{ORDERS}/feedback", json={"feedback": [same]}).status_code == 200
    assert client.get(f"{ORDERS}/feedback/summary").json()["unmatched"] == before


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-11-26T10:00:00Z"}, "outcome"),  # cds-fb-1
        ({"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:00:00Z"}, "cds-fb-2"),
        (feedback_item("c", "overridden", overrideReason={}), "cds-fb-3"),
        (feedback_item("c", "overridden", overrideReason={"reason": {"code": "x"}}), "system"),
        ({"outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}, "card: missing"),
        (feedback_item("c", "overridden", "2026-11-26T10:00:00"), "time zone"),
        (feedback_item("c", "overridden", "yesterday"), "ISO 8601"),
    ],
)
def test_malformed_feedback_is_400(client: httpx.Client, item: dict[str, Any], expected: str) -> None:
    assert expected in outcome(client.post(f"{PV}/feedback", json={"feedback": [item]}), 400)


def test_feedback_errors(client: httpx.Client) -> None:
    assert "feedback" in outcome(client.post(f"{PV}/feedback", json={"feedback": []}), 400)
    assert "feedback: missing" in outcome(client.post(f"{PV}/feedback", json={}), 400)
    item = feedback_item("c", "overridden")
    assert outcome(client.post("/cds-services/nope/feedback", json={"feedback": [item]}), 404)
    assert outcome(client.get("/cds-services/nope/feedback/summary"), 404)


# --- CORS and the production lock ------------------------------------------------------------------------


PREFLIGHT = {
    "Origin": "https://ehr.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,authorization",
}


def test_preflight_in_development_allows_any_origin(client: httpx.Client) -> None:
    for path in ("/cds-services", PV, f"{PV}/feedback"):
        response = client.options(path, headers=PREFLIGHT)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert {"GET", "POST", "OPTIONS"} <= set(response.headers["access-control-allow-methods"].split(", "))
        assert "Authorization" in response.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in response.headers
    discovery = client.get("/cds-services", headers={"Origin": "https://ehr.example"})
    assert discovery.headers["access-control-allow-origin"] == "*"


def test_production_uses_the_origin_allowlist_and_refuses_calls_without_jwt(
    settings: Settings, container: Container
) -> None:
    production = settings.model_copy(
        update={"env": "production", "cors_origins": "https://ehr.example, https://b.example"}
    )
    with running_server(production, container) as url, httpx.Client(base_url=url, timeout=30) as c:
        allowed = c.options(PV, headers=PREFLIGHT)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://ehr.example"
        other = c.options(PV, headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        for response in (c.get("/cds-services"), c.post(PV, json=hook_request("patient-view", omd_prefetch()))):
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "security"}],
            }


def test_a_patient_id_that_is_not_a_fhir_id_is_refused(client: httpx.Client) -> None:
    request = hook_request("patient-view", {"Patient": {"resourceType": "Patient", "id": "example-1"}})
    request["context"]["patientId"] = "1&_include=*"
    assert "patientId" in outcome(client.post(PV, json=request), 400)


def _latency_count(metrics: str, service: str) -> float:
    line = next(
        (x for x in metrics.splitlines() if x.startswith(f'oligocds_cds_service_seconds_count{{service="{service}"}}')),
        None,
    )
    return float(line.split()[1]) if line else 0.0


def test_latency_is_measured_per_service_id(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    post(client, PV, hook_request("patient-view", omd_prefetch()))
    post(client, PV, hook_request("patient-view", omd_prefetch()))
    post(client, ORDERS, hook_request("order-sign", omd_prefetch(), orders=[ZA]))
    client.post("/cds-services/no-such-service", content=b"{}", headers=JSON)
    after = client.get("/metrics").text
    grew = {
        s: _latency_count(after, s) - _latency_count(before, s)
        for s in ("oligocds-patient-view", "oligocds-orders", "unknown")
    }
    assert grew == {"oligocds-patient-view": 2.0, "oligocds-orders": 1.0, "unknown": 1.0}
