"""Order-sign / order-select safety checks through a running server (cds-hooks.md §4, §6): each scenario with
and without the data that triggers it — hypocalcaemia before denosumab (BMA-04), radium-223 with visceral
metastases (RA223), zoledronic acid after a creatinine rise (BMA-03)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from service.bootstrap import Container
from service.cdshooks.prefetch import Resource
from service.config import Settings
from tests.conformance.test_cds_hooks_payloads import assert_valid_response
from tests.conftest import FIXTURES
from tests.integration.test_cds_hooks import (
    ORDERS,
    ZA,
    code_of,
    crcl,
    draft,
    hook_request,
    omd_prefetch,
    post,
    prefetch_of,
)
from tests.server import running_server

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
FIXTURE_DAY = date(2026, 11, 26)  # the as-of date the fixture bundles were written for
RA_FIXTURE = "tx-ra223-ordered-visceral-contraindicated"
RA_PATIENT = "tx-ra-liver"
RA_DRAFT = "tx-ra-liver-medreq-radium-223-15"
RA_LIVER = "tx-ra-liver-met-liver-6"
DMAB = draft("dmab-draft", "993449", "denosumab")


@pytest.fixture(scope="module")
def client(settings: Settings, container: Container) -> Iterator[httpx.Client]:
    with running_server(settings, container) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


# --- building data ------------------------------------------------------------------------------------


def today() -> date:
    return datetime.now(UTC).date()


def lab(rid: str, loinc: str, value: float, unit: str, day: date | None = None, patient: str = "example-1") -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": (day or today()).isoformat(),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def calcium(value: float) -> list[Resource]:
    """Total calcium with a normal albumin (4.0 g/dL), so corrected calcium = total calcium."""
    return [lab("ca-1", "17861-6", value, "mg/dL"), lab("alb-1", "1751-7", 4.0, "g/dL")]


def creatinine_history(now: float) -> list[Resource]:
    """SCr 1.0 mg/dL five days before a completed zoledronic acid order (the baseline), `now` mg/dL two days ago."""
    given = today() - timedelta(days=180)
    earlier = draft("za-earlier", "77655", "zoledronic acid", status="completed")
    earlier["authoredOn"] = given.isoformat()
    return [
        earlier,
        lab("scr-baseline", "2160-0", 1.0, "mg/dL", given - timedelta(days=5)),
        lab("scr-now", "2160-0", now, "mg/dL", today() - timedelta(days=2)),
        crcl(70),
    ]


def _shift(value: Any, days: timedelta) -> Any:
    """Every date of a fixture moved by `days` (the fixtures are written for FIXTURE_DAY)."""
    if isinstance(value, dict):
        return {k: _shift(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, days) for v in value]
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return (date.fromisoformat(value) + days).isoformat()
    return value


def radium_case(visceral: bool) -> tuple[dict[str, Any], Resource]:
    """The castration-resistant prostate cancer fixture: its prefetch (without the draft) and the radium-223 draft.
    Without `visceral`, the liver metastasis is gone and the counts are normal (ANC 3.0, platelets 200, Hb 13)."""
    bundle = json.loads((FIXTURES / RA_FIXTURE / "bundle.json").read_text(encoding="utf-8"))
    resources = _shift([e["resource"] for e in bundle["entry"]], today() - FIXTURE_DAY)
    (order,) = [r for r in resources if r["id"] == RA_DRAFT]
    assert order["medicationCodeableConcept"] == {"text": "radium Ra 223 dichloride"}
    liver = next(r for r in resources if r["id"] == RA_LIVER)
    assert liver["code"]["coding"][0]["code"] == "94381002"
    castration = next(r for r in resources if r["id"].startswith(f"{RA_PATIENT}-castration-status"))
    assert castration["valueCodeableConcept"]["coding"][0]["code"] == "resistant"
    kept = [r for r in resources if r["id"] != RA_DRAFT and (visceral or r["id"] != RA_LIVER)]
    if not visceral:
        normal = {"751-8": 3.0, "777-3": 200, "718-7": 13.0}
        kept = copy.deepcopy(kept)
        for r in kept:
            code = r.get("code", {}).get("coding", [{}])[0].get("code") if r["resourceType"] == "Observation" else None
            if code in normal:
                r["valueQuantity"]["value"] = normal[code]
    return prefetch_of(kept), order


def order_cards(client: httpx.Client, hook: str, prefetch: dict[str, Any], order: Resource, **context: Any) -> Any:
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{order['id']}"]
    return assert_valid_response(post(client, ORDERS, hook_request(hook, prefetch, orders=[order], **context)))


def only(got: list[dict[str, Any]], code: str) -> dict[str, Any]:
    (card,) = [c for c in got if code_of(c) == code]
    return card


def assert_removal(card: dict[str, Any], reference: str) -> None:
    removals = [s for s in card["suggestions"] if s["label"] == "Remove draft order"]
    (suggestion,) = removals
    assert card["selectionBehavior"] == "at-most-one"
    assert sum(1 for s in card["suggestions"] if s.get("isRecommended")) <= 1  # cds-resp-1
    assert suggestion["actions"] == [
        {"type": "delete", "description": suggestion["actions"][0]["description"], "resourceId": reference}
    ]
    assert reference in suggestion["actions"][0]["description"]


HOOKS = pytest.mark.parametrize("hook", ["order-sign", "order-select"])


# --- (a) denosumab with low calcium (BMA-04) --------------------------------------------------------------


@HOOKS
def test_denosumab_with_low_calcium_asks_to_correct_it_first(client: httpx.Client, hook: str) -> None:
    got = order_cards(client, hook, omd_prefetch(calcium(7.9)), DMAB)
    card = only(got, "correct-hypocalcaemia")
    assert card["indicator"] == "critical" and card["overrideReasons"]
    assert card["extension"]["org.oligocds.draftOrders"] == ["MedicationRequest/dmab-draft"]
    assert "denosumab (`MedicationRequest/dmab-draft`)" in card["detail"]
    # after the summary card (CrCl is open here), the critical card first (cds-hooks.md §6 order)
    assert next(c for c in got if "org.oligocds.explanation" in c["extension"]) is card


def test_low_calcium_flag_alone_is_enough(client: httpx.Client) -> None:
    flagged = lab("ca-1", "17861-6", 8.6, "mg/dL")
    flagged["interpretation"] = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "L"}]}
    ]
    got = order_cards(client, "order-sign", omd_prefetch([flagged]), DMAB)
    assert only(got, "correct-hypocalcaemia")["indicator"] == "critical"


@HOOKS
def test_denosumab_without_low_calcium_has_no_hypocalcaemia_card(client: httpx.Client, hook: str) -> None:
    for prefetch in (omd_prefetch(), omd_prefetch(calcium(9.4))):
        got = order_cards(client, hook, prefetch, DMAB)
        assert "correct-hypocalcaemia" not in {code_of(c) for c in got}


# --- (b) radium-223 with a visceral metastasis (RA223) -----------------------------------------------------


@HOOKS
def test_radium_223_with_a_liver_metastasis_is_contraindicated(client: httpx.Client, hook: str) -> None:
    prefetch, order = radium_case(visceral=True)
    got = order_cards(client, hook, prefetch, order, patientId=RA_PATIENT)
    card = only(got, "radium-223-contraindicated")
    assert card["indicator"] == "critical" and got[0] is card
    reference = f"MedicationRequest/{RA_DRAFT}"
    assert card["extension"]["org.oligocds.draftOrders"] == [reference]
    assert f"radium Ra 223 dichloride (`{reference}`)" in card["detail"]
    assert_removal(card, reference)


@HOOKS
def test_radium_223_bone_only_with_normal_counts_is_not_contraindicated(client: httpx.Client, hook: str) -> None:
    prefetch, order = radium_case(visceral=False)
    got = order_cards(client, hook, prefetch, order, patientId=RA_PATIENT)
    codes = {code_of(c) for c in got}
    assert "radium-223-contraindicated" not in codes and "radium-223-consider" in codes
    assert not any(s["label"] == "Remove draft order" for c in got for s in c.get("suggestions", []))


# --- (c) zoledronic acid after a creatinine rise (BMA-03) --------------------------------------------------


@HOOKS
def test_zoledronic_acid_after_a_creatinine_rise_is_withheld(client: httpx.Client, hook: str) -> None:
    got = order_cards(client, hook, omd_prefetch(creatinine_history(1.6)), ZA)
    card = only(got, "withhold-zoledronic-acid")
    assert card["indicator"] == "critical" and card["overrideReasons"]
    assert re.search(r"from 1(\.0)? to 1\.6 mg/dL", card["summary"]), card["summary"]
    assert card["extension"]["org.oligocds.draftOrders"] == ["MedicationRequest/za-draft"]
    assert_removal(card, "MedicationRequest/za-draft")


@HOOKS
def test_zoledronic_acid_with_a_stable_creatinine_is_not_withheld(client: httpx.Client, hook: str) -> None:
    got = order_cards(client, hook, omd_prefetch(creatinine_history(1.1)), ZA)
    assert "withhold-zoledronic-acid" not in {code_of(c) for c in got}


# --- (d) zoledronic acid at a reduced CrCl (BMA-02): "Reduce the dose" as an `update` --------------------------


def za_with_dose(mg: float | None) -> Resource:
    order = copy.deepcopy(ZA)
    if mg is not None:
        quantity = {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}
        text = f"{mg:g} mg IV over 15 min"  # the dose in the text too, as order entry writes it
        order["dosageInstruction"] = [{"text": text, "doseAndRate": [{"doseQuantity": quantity}]}]
    return order


@HOOKS
@pytest.mark.parametrize(("clearance", "labelled"), [(55, 3.5), (45, 3.3), (35, 3.0)])
def test_zoledronic_acid_at_reduced_crcl_suggests_the_labelled_dose(
    client: httpx.Client, hook: str, clearance: float, labelled: float
) -> None:
    order = za_with_dose(4.0)
    got = order_cards(client, hook, omd_prefetch([crcl(clearance)]), order)
    card = only(got, "zoledronic-acid-dose-reduction")
    (suggestion,) = [s for s in card["suggestions"] if s["actions"][0]["type"] == "update"]
    assert card["selectionBehavior"] == "at-most-one"
    assert suggestion["label"] == f"Reduce the dose to {labelled:.1f} mg"
    (action,) = suggestion["actions"]
    updated = action["resource"]
    assert action["description"] and "MedicationRequest/za-draft" in action["description"]
    # R132: the whole resource as the client sent it, only the dose changed (quantity and instruction text).
    assert updated == za_with_dose(labelled)
    assert updated["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == labelled


@HOOKS
def test_no_update_without_a_dose_in_mg_or_at_normal_crcl(client: httpx.Client, hook: str) -> None:
    undosed = only(
        order_cards(client, hook, omd_prefetch([crcl(45)]), za_with_dose(None)), "zoledronic-acid-dose-reduction"
    )
    assert not [s for s in undosed.get("suggestions", []) if s["actions"][0]["type"] == "update"]
    normal = order_cards(client, hook, omd_prefetch([crcl(75)]), za_with_dose(4.0))
    assert "zoledronic-acid-dose-reduction" not in {code_of(c) for c in normal}


def test_a_draft_without_id_gets_its_card_but_no_action_naming_it(client: httpx.Client) -> None:
    """An order-sign draft without an id cannot be named in a delete or update action (R134/R135): the card still
    warns, without a suggestion that would point at "MedicationRequest/None"."""
    order = za_with_dose(4.0)
    del order["id"]
    got = order_cards(client, "order-sign", omd_prefetch([crcl(45)]), order)
    card = only(got, "zoledronic-acid-dose-reduction")
    actions = [a for s in card.get("suggestions", []) for a in s["actions"] if a["type"] in ("delete", "update")]
    assert actions == [] and "None" not in card["detail"]
