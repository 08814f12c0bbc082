"""The public CDS Hooks payloads of ../shared/conformance/cds-hooks/, sent over HTTP as an outside client sends
them (cds-hooks.md §12), and the response validator every CDS Hooks test uses.

Expected answers: 400 without `context.patientId` (core-service-request-28; R-rows of §3), 412 when the
Patient or Condition key is absent, failed or paginated and no FHIR fallback can fill it (§5, R54), else 200
with cards valid per cds-hooks.md §1/§6 and the FSH invariants cds-resp-1…6."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.bootstrap import Container
from service.cdshooks.fetch import HttpFhirFetcher
from service.cdshooks.prefetch import Resource
from service.config import Settings
from tests.conftest import shared_dir
from tests.server import running_server

PAYLOADS = shared_dir() / "conformance" / "cds-hooks"
JSON = {"Content-Type": "application/json"}
SERVICE_OF_HOOK = {
    "patient-view": "oligocds-patient-view",
    "order-select": "oligocds-orders",
    "order-sign": "oligocds-orders",
}
INDICATORS = {"info", "warning", "critical"}
ACTION_TYPES = {"create", "update", "delete"}

# --------------------------------------------------------------------------------------------------------
# The response validator (cds-hooks.md §1, §6; CDS Hooks 2.0 Card; FSH invariants cds-resp-1…6)


def assert_no_empty(value: Any, where: str = "$") -> None:
    """R3: no element is null or empty ("", [], {}); `{"cards": []}` is checked by the caller."""
    assert value is not None and value != "" and value != [] and value != {}, f"{where}: null or empty"
    if isinstance(value, dict):
        for key, item in value.items():
            assert_no_empty(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_no_empty(item, f"{where}[{i}]")


def _absolute(url: Any) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "http://"))


def _coding(coding: Any, where: str, display: bool = False) -> None:
    assert isinstance(coding, dict), where
    assert isinstance(coding.get("system"), str) and isinstance(coding.get("code"), str), f"{where}: system+code"
    if display:
        assert isinstance(coding.get("display"), str), f"{where}: display required (cds-resp-4, R219)"


def _action(action: Any, where: str) -> None:
    assert action.get("type") in ACTION_TYPES, f"{where}.type"
    assert isinstance(action.get("description"), str) and action["description"], f"{where}: cds-resp-5"
    if action["type"] == "delete":
        assert isinstance(action.get("resourceId"), str | list), f"{where}: delete needs resourceId (cds-resp-2)"
        assert "resource" not in action, f"{where}: delete carries no resource (cds-resp-2)"
    else:
        assert isinstance(action.get("resource"), dict), f"{where}: {action['type']} needs a resource (R131)"
        assert isinstance(action["resource"].get("resourceType"), str), f"{where}.resource.resourceType"


def _suggestions(card: dict[str, Any], where: str) -> None:
    suggestions = card.get("suggestions")
    if suggestions is None:
        return
    assert card.get("selectionBehavior") in ("at-most-one", "any"), f"{where}: cds-resp-6"
    if card["selectionBehavior"] == "at-most-one":
        assert sum(1 for s in suggestions if s.get("isRecommended")) <= 1, f"{where}: cds-resp-1"
    for i, suggestion in enumerate(suggestions):
        assert isinstance(suggestion.get("label"), str), f"{where}.suggestions[{i}].label"
        for j, action in enumerate(suggestion.get("actions", [])):
            _action(action, f"{where}.suggestions[{i}].actions[{j}]")


def _links(card: dict[str, Any], where: str) -> None:
    for i, link in enumerate(card.get("links", [])):
        at = f"{where}.links[{i}]"
        assert isinstance(link.get("label"), str) and _absolute(link.get("url")), at
        assert link.get("type") in ("absolute", "smart"), f"{at}.type"
        assert "appContext" not in link or link["type"] == "smart", f"{at}: cds-resp-3"


def assert_valid_card(card: Any, where: str = "card", ours: bool = True) -> None:
    """A CDS Hooks 2.0 card; `ours` adds what OligoCDS promises beyond the spec (uuid, topic, ruleset)."""
    assert isinstance(card, dict), where
    assert_no_empty(card, where)
    summary = card.get("summary")
    assert isinstance(summary, str) and len(summary) < 140, f"{where}.summary: required, < 140 characters (R83)"
    assert card.get("indicator") in INDICATORS, f"{where}.indicator: {card.get('indicator')!r} (R87, R88)"
    source = card.get("source")
    assert isinstance(source, dict) and isinstance(source.get("label"), str), f"{where}.source.label (R90)"
    for key in ("url", "icon"):
        assert key not in source or _absolute(source[key]), f"{where}.source.{key}: absolute URL"
    if "topic" in source:
        _coding(source["topic"], f"{where}.source.topic")
    for i, reason in enumerate(card.get("overrideReasons", [])):
        _coding(reason, f"{where}.overrideReasons[{i}]", display=True)
    _suggestions(card, where)
    _links(card, where)
    if ours:
        assert isinstance(card.get("uuid"), str) and uuid.UUID(card["uuid"]), f"{where}.uuid"
        assert source["label"].startswith("OligoCDS ") and "topic" in source, f"{where}.source"
        assert "org.oligocds.ruleset" in card.get("extension", {}), f"{where}.extension"
        assert card["indicator"] != "critical" or card.get("overrideReasons"), f"{where}: critical needs reasons"


def assert_valid_response(body: Any, ours: bool = True) -> list[dict[str, Any]]:
    """`{"cards": [...]}` and nothing else (no systemActions in this version); returns the cards."""
    assert isinstance(body, dict) and set(body) == {"cards"}, f"response members: {list(body)}"
    assert isinstance(body["cards"], list)
    for i, card in enumerate(body["cards"]):
        assert_valid_card(card, f"cards[{i}]", ours)
    if ours:
        assert len({c["uuid"] for c in body["cards"]}) == len(body["cards"]), "card uuids repeat"
    return list(body["cards"])


def test_validator_accepts_the_reference_cards() -> None:
    valid = json.loads((PAYLOADS / "inferno-crd-test-kit" / "spec__fixtures__valid_cards.json").read_text())
    for i, card in enumerate(valid):
        assert_valid_card(card, f"valid_cards[{i}]", ours=False)
    assert_valid_response(
        json.loads((PAYLOADS / "spec-extracted" / "core-service-response-19.json").read_text()), False
    )


def test_validator_rejects_what_2_0_forbids() -> None:
    ballot = json.loads((PAYLOADS / "spec-extracted" / "core-service-response-20.json").read_text())
    with pytest.raises(AssertionError, match="indicator"):  # 3.0 ballot example without indicator
        assert_valid_response(ballot, ours=False)
    with pytest.raises(AssertionError, match="response members"):  # systemActions
        assert_valid_response(json.loads((PAYLOADS / "spec-extracted" / "core-service-response-18.json").read_text()))
    delete = {"type": "delete", "description": "x", "resourceId": "MedicationRequest/1", "resource": {"a": 1}}
    card = {"summary": "s", "indicator": "info", "source": {"label": "l"}, "suggestions": [{"label": "x"}]}
    for bad, invariant in (
        ({**card, "selectionBehavior": "any", "suggestions": [{"label": "d", "actions": [delete]}]}, "cds-resp-2"),
        (card, "cds-resp-6"),
        (
            {
                **card,
                "selectionBehavior": "any",
                "links": [{"label": "l", "url": "https://a", "type": "absolute", "appContext": "x"}],
            },
            "cds-resp-3",
        ),
        ({**card, "selectionBehavior": "any", "overrideReasons": [{"system": "s", "code": "c"}]}, "cds-resp-4"),
    ):
        with pytest.raises(AssertionError, match=invariant):
            assert_valid_card(bad, ours=False)
    two = [{"label": "a", "isRecommended": True}, {"label": "b", "isRecommended": True}]
    with pytest.raises(AssertionError, match="cds-resp-1"):
        assert_valid_card({**card, "suggestions": two, "selectionBehavior": "at-most-one"}, ours=False)
    with pytest.raises(AssertionError, match="null or empty"):
        assert_valid_card({**card, "detail": ""}, ours=False)


# --------------------------------------------------------------------------------------------------------
# Sending the payloads


@pytest.fixture(scope="module")
def client(settings: Settings, container: Container) -> Iterator[httpx.Client]:
    with running_server(settings, container) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture(autouse=True)
def fetch_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The FHIR fallback as a no-op recording the queries it is asked for: the payloads name real servers."""
    calls: list[dict[str, str]] = []

    async def fetch(self: HttpFhirFetcher, server: str, authorization: Any, queries: Any) -> dict[str, list[Resource]]:
        calls.append(dict(queries))
        return {}

    monkeypatch.setattr(HttpFhirFetcher, "fetch", fetch)
    return calls


def _requests() -> list[Path]:
    found = []
    for path in sorted(PAYLOADS.glob("*/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "hook" in data:
            found.append(path)
    return found


REQUESTS = _requests()


def _usable(value: Any) -> bool:
    """What §5 accepts for a key without a fallback: null, a resource, a one-page Bundle (wrapped or not)."""
    if isinstance(value, dict) and "resourceType" not in value and "resource" in value:
        value = value["resource"]
    if value is None:
        return True
    if not isinstance(value, dict) or value.get("resourceType") in (None, "OperationOutcome"):
        return False
    return not any(link.get("relation") == "next" for link in value.get("link", []))


def expected_status(request: dict[str, Any]) -> int:
    if "patientId" not in request["context"]:
        return 400
    prefetch = request.get("prefetch") or {}
    return 200 if all(k in prefetch and _usable(prefetch[k]) for k in ("Patient", "Condition")) else 412


def _send(client: httpx.Client, request: dict[str, Any]) -> httpx.Response:
    return client.post(f"/cds-services/{SERVICE_OF_HOOK[request['hook']]}", content=json.dumps(request), headers=JSON)


def _check(response: httpx.Response, expected: int) -> list[dict[str, Any]]:
    assert response.status_code == expected, response.text
    if expected != 200:
        body = response.json()
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"], body
        return []
    return assert_valid_response(response.json())


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_request_payload_as_sent(client: httpx.Client, path: Path) -> None:
    request = json.loads(path.read_text(encoding="utf-8"))
    response = client.post(f"/cds-services/{SERVICE_OF_HOOK[request['hook']]}", content=path.read_bytes(), headers=JSON)
    cards = _check(response, expected_status(request))
    assert cards == []  # none of the public patients has a metastatic cancer


def test_the_expectations_cover_each_outcome() -> None:
    statuses = [expected_status(json.loads(p.read_text(encoding="utf-8"))) for p in REQUESTS]
    assert statuses.count(400) == 1 and statuses.count(412) >= 2 and statuses.count(200) >= 8


def test_missing_condition_key_is_412_naming_it(client: httpx.Client, fetch_spy: list[dict[str, str]]) -> None:
    path = PAYLOADS / "ahrq-cql-services" / "fixtures__hooks-patients__R4__missing_prefetch_keys_invocation.json"
    response = client.post("/cds-services/oligocds-patient-view", content=path.read_bytes(), headers=JSON)
    assert response.status_code == 412
    assert "Condition" in response.json()["issue"][0]["diagnostics"]
    assert "Patient" not in response.json()["issue"][0]["diagnostics"]
    # fhirServer is given: the fallback is asked for the absent keys only, never for null/present.
    assert len(fetch_spy) == 1 and "Condition" in fetch_spy[0] and "Observation" not in fetch_spy[0]
    assert fetch_spy[0]["Condition"] == "Condition?patient=1288992"


def test_null_prefetch_values_mean_no_data_and_no_fetch(client: httpx.Client, fetch_spy: list[dict[str, str]]) -> None:
    path = PAYLOADS / "ahrq-cql-services" / "fixtures__hooks-patients__R4__null_prefetch_values_invocation.json"
    response = client.post("/cds-services/oligocds-patient-view", content=path.read_bytes(), headers=JSON)
    assert response.status_code == 200 and response.json() == {"cards": []}
    assert all(not set(call) & {"Patient", "Condition", "Observation"} for call in fetch_spy), fetch_spy


def test_request_without_patient_id_is_400(client: httpx.Client) -> None:
    path = PAYLOADS / "spec-extracted" / "core-service-request-28.json"
    response = client.post("/cds-services/oligocds-patient-view", content=path.read_bytes(), headers=JSON)
    assert response.status_code == 400
    assert response.json()["issue"][0]["diagnostics"] == "context.patientId: missing"


# --- cqf-ruler: item1… keys renamed to the type they wrap (cds-hooks.md §12), so the wrappers are read ----


def _renamed(request: dict[str, Any]) -> dict[str, Any]:
    prefetch: dict[str, Any] = {}
    for value in (request.get("prefetch") or {}).values():
        resource = value.get("resource") if isinstance(value, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType"):
            prefetch[resource["resourceType"]] = value  # still wrapped: the service unwraps
    return {**request, "prefetch": prefetch}


CQF = sorted((PAYLOADS / "cqf-ruler").glob("*.json"))


@pytest.mark.parametrize("path", CQF, ids=lambda p: p.name)
def test_cqf_ruler_wrapped_prefetch(client: httpx.Client, path: Path) -> None:
    request = _renamed(json.loads(path.read_text(encoding="utf-8")))
    assert _check(_send(client, request), expected_status(request)) == []


def test_cqf_ruler_exclusion_patient_is_read_through_the_wrappers(client: httpx.Client) -> None:
    request = _renamed(json.loads((PAYLOADS / "cqf-ruler" / "request-ExclusionPatient.json").read_text()))
    assert {"Patient", "Condition"} <= set(request["prefetch"])
    assert _check(_send(client, request), 200) == []  # Patient/-prefixed patientId, hookInstance "test"


# --- order hooks with data: the real draftOrders, with Patient and an empty (null) Condition key ----------


def _with_patient(request: dict[str, Any]) -> dict[str, Any]:
    patient_id = request["context"]["patientId"].removeprefix("Patient/")
    prefetch = {**_renamed(request)["prefetch"], "Condition": None}
    prefetch.setdefault("Patient", {"resourceType": "Patient", "id": patient_id})
    return {**request, "prefetch": prefetch}


ORDER_REQUESTS = [p for p in REQUESTS if json.loads(p.read_text(encoding="utf-8"))["hook"] != "patient-view"]


@pytest.mark.parametrize("path", ORDER_REQUESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_order_requests_with_data(client: httpx.Client, path: Path) -> None:
    request = _with_patient(json.loads(path.read_text(encoding="utf-8")))
    # Opioids, amoxicillin, diets: no card concerns them; invalid ids (non-ASCII, > 64) are skipped, not a 4xx.
    assert _check(_send(client, request), 200) == []


CONTEXTS = sorted((PAYLOADS / "spec-extracted").glob("order-s*-context-*.json"))


@pytest.mark.parametrize("path", CONTEXTS, ids=lambda p: p.name)
def test_hook_library_contexts(client: httpx.Client, path: Path) -> None:
    context = json.loads(path.read_text(encoding="utf-8"))["context"]
    hook = "order-select" if path.name.startswith("order-select") else "order-sign"
    request = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    request["prefetch"] = {"Patient": {"resourceType": "Patient", "id": context["patientId"]}, "Condition": None}
    # order-select-context-2 selects a DSTU2 MedicationOrder: ignored, never a 400.
    assert _check(_send(client, request), 200) == []


def test_paginated_condition_prefetch_needs_the_fallback(client: httpx.Client) -> None:
    spec = json.loads((PAYLOADS / "spec-extracted" / "core-service-request-3.json").read_text(encoding="utf-8"))
    paged = {**spec["prefetch"]["orders"]}  # a searchset page with a `next` link
    request = {**spec, "prefetch": {"Patient": {"resourceType": "Patient", "id": "1288992"}, "Condition": paged}}
    assert _check(_send(client, request), 412) == []


# --------------------------------------------------------------------------------------------------------
# Feedback bodies


FEEDBACK = [
    PAYLOADS / "ahrq-cql-services" / "fixtures__hooks-feedback__feedbackFor2.json",
    PAYLOADS / "ahrq-cql-services" / "examples__hooks__R4__feedback.json",
    *(PAYLOADS / "spec-extracted" / f"core-feedback-{n}.json" for n in (21, 22, 23)),
]


def _summary(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/cds-services/oligocds-orders/feedback/summary")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("path", FEEDBACK, ids=lambda p: p.name)
def test_feedback_payloads_are_stored_once(client: httpx.Client, path: Path) -> None:
    items = json.loads(path.read_text(encoding="utf-8"))["feedback"]
    before = _summary(client)["unmatched"]
    first = client.post("/cds-services/oligocds-orders/feedback", content=path.read_bytes(), headers=JSON)
    assert first.status_code == 200, first.text
    after = _summary(client)["unmatched"]
    # These cards were never issued by us: counted as unmatched; a body already sent adds nothing.
    assert sum(after.values()) - sum(before.values()) <= len(items)
    again = client.post("/cds-services/oligocds-orders/feedback", content=path.read_bytes(), headers=JSON)
    assert again.status_code == 200 and _summary(client)["unmatched"] == after


def test_feedback_reporting_one_card_twice_keeps_both(client: httpx.Client) -> None:
    path = PAYLOADS / "ahrq-cql-services" / "examples__hooks__R4__feedback.json"
    items = json.loads(path.read_text(encoding="utf-8"))["feedback"]
    assert items[0]["card"] == items[1]["card"] and items[0]["outcome"] != items[1]["outcome"]
    client.post("/cds-services/oligocds-patient-view/feedback", content=path.read_bytes(), headers=JSON)
    client.post("/cds-services/oligocds-patient-view/feedback", content=path.read_bytes(), headers=JSON)
    unmatched = client.get("/cds-services/oligocds-patient-view/feedback/summary").json()["unmatched"]
    assert unmatched["accepted"] >= 1 and unmatched["overridden"] >= 1
