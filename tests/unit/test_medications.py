"""Medications → drug classes (fhir-mapping.md §4.8): the RxNorm table against the conformance payloads, and
the time rules of current_meds / draft_orders / classes on a day."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from service.fhir.medications import (
    ALL_CLASSES,
    ENDOCRINE_CLASSES,
    SYSTEMIC_CLASSES,
    MedicationUse,
    active_classes,
    classes_between,
    classes_ever,
    classes_on,
    classify,
    classify_detailed,
    medication_uses,
    ordered_classes,
    systemic_classes,
)
from service.fhir.util import RXNORM
from tests.conftest import shared_dir

MCODE = shared_dir() / "conformance" / "mcode"
APP = MCODE / "clinical-trial-matching-app"
SERVICE = MCODE / "clinical-trial-matching-service"
FSH = MCODE / "hl7-fhir-mCODE-ig-stu4-fsh"
DAY = date(2024, 3, 15)


def _resources(path: Path) -> list[dict[str, Any]]:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    return [e["resource"] for e in bundle.get("entry", [])]


def _by_code(path: Path) -> dict[str, MedicationUse]:
    """Conformance uses keyed by their RxNorm code."""
    uses = {u.resource: u for u in medication_uses(_resources(path))}
    keyed: dict[str, MedicationUse] = {}
    for r in _resources(path):
        if r["resourceType"].startswith("Medication"):
            code = r["medicationCodeableConcept"]["coding"][0]["code"]
            keyed[code] = uses[f"{r['resourceType']}/{r['id']}"]
    return keyed


def _rx(code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": RXNORM, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


LEUPROLIDE = _rx("1163443")
LETROZOLE = _rx("1163195")
ZOLEDRONIC = _rx("1156253")
PACLITAXEL = _rx("583214")


def _request(id_: str, status: str, concept: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": id_,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": concept,
        **extra,
    }


def _admin(id_: str, status: str, concept: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": id_,
        "status": status,
        "medicationCodeableConcept": concept,
        **extra,
    }


def _statement(id_: str, status: str, concept: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": id_,
        "status": status,
        "medicationCodeableConcept": concept,
        **extra,
    }


def _bounds(start: date, end: date | None = None) -> list[dict[str, Any]]:
    period = {"start": start.isoformat(), **({"end": end.isoformat()} if end else {})}
    return [{"timing": {"repeat": {"boundsPeriod": period}}}]


# --- the table against real data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "ingredient", "classes"),
    [
        ("1163443", "42375", {"adt", "ofs"}),  # leuprolide Injetable Product (ovarian suppression)
        ("1156671", "282357", {"serm"}),  # fulvestrant Injectable Product
        ("1946828", "1946825", {"cdk46i"}),  # abemaciclib Oral Product
        ("1873980", "1873916", {"cdk46i"}),  # ribociclib Oral Product
    ],
)
def test_trial_matching_patient01_codes_classify(code: str, ingredient: str, classes: set[str]) -> None:
    use = _by_code(APP / "TrialMatching_Patient01.json")[code]
    assert (use.ingredient, use.matched_by) == (ingredient, "code")
    assert use.classes == classes


@pytest.mark.parametrize(
    ("code", "ingredient", "classes"),
    [
        ("1156253", "77655", {"bisphosphonate"}),  # zoledronic acid Injetable Product
        ("1163788", "258494", {"ai"}),  # exemestane
        ("1157702", "84857", {"ai"}),  # anastrozole
        ("1163195", "72965", {"ai"}),  # letrozole
        ("1601377", "1601374", {"cdk46i"}),  # palbociclib
        ("1156671", "282357", {"serm"}),  # fulvestrant
        ("1158877", "194000", {"chemo"}),  # capecitabine
        ("1164214", "10324", {"serm"}),  # tamoxifen
        ("1946827", "1946825", {"cdk46i"}),  # abemaciclib
        ("1156710", "12574", {"chemo"}),  # gemcitabine
        ("2169297", "2169285", {"other_targeted"}),  # alpelisib
    ],
)
def test_trial_matching_patient02_codes_classify(code: str, ingredient: str, classes: set[str]) -> None:
    use = _by_code(APP / "TrialMatching_Patient02.json")[code]
    assert (use.ingredient, use.matched_by) == (ingredient, "code")
    assert use.classes == classes


def test_service_examples_classify() -> None:
    paclitaxel = _by_code(SERVICE / "patient_data.json")["583214"]
    eom = _by_code(SERVICE / "eom_patient_1.json")
    assert (paclitaxel.ingredient, paclitaxel.classes) == ("56946", frozenset({"chemo"}))
    assert eom["1946827"].classes == {"cdk46i"}
    assert eom["2169297"].classes == {"other_targeted"}


FSH_EXPECTED = {
    "349472": {"egfr_tki"},  # gefitinib 250 MG Oral Tablet
    "309311": {"chemo"},  # cisplatin 1 MG/ML Injectable Solution
    "3639": {"chemo"},  # DOXOrubicin
    "3002": {"chemo"},  # cyclophosphamide
    "56946": {"chemo"},  # PACLitaxel
    "1790099": {"chemo"},  # 10 ML doxorubicin hydrochloride 2 MG/ML Injection
    "84857": {"ai"},  # anastrozole
    "1727455": {"alk_tki"},
    "1921217": {"alk_tki"},
    "1535457": {"alk_tki"},
    "1148495": {"alk_tki"},
    "2103164": {"alk_tki"},
}


def test_every_rxnorm_code_in_the_ig_examples_is_in_the_table() -> None:
    texts = [path.read_text(encoding="utf-8") for path in FSH.glob("*.fsh")]
    found = {code for text in texts for code in re.findall(r"RXN#(\d+)", text)}
    assert found == set(FSH_EXPECTED)
    for code, classes in FSH_EXPECTED.items():
        assert classify_detailed(_rx(code)).classes == classes, code
        assert classify_detailed(_rx(code)).matched_by == "code"


def test_every_rxnorm_code_in_the_json_examples_is_classified_by_code() -> None:
    for path in MCODE.rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        for code in re.findall(r'umls/rxnorm",\s*"code":\s*"(\d+)"', text):
            result = classify_detailed(_rx(code))
            assert result.matched_by == "code" and result.classes, (path.name, code)


def test_table_is_consistent() -> None:
    raw = json.loads((files("service.fhir") / "data" / "rxnorm_classes.json").read_text(encoding="utf-8"))
    ingredients = raw["ingredients"]
    assert "RxNav" in raw["_meta"]["verification"]
    for rxcui, entry in ingredients.items():
        assert rxcui.isdigit() and entry["classes"] and set(entry["classes"]) <= ALL_CLASSES, rxcui
    for code, product in raw["products"].items():
        assert code not in ingredients
        assert product["ingredients"] and set(product["ingredients"]) <= set(ingredients), code
        assert set(product.get("classes", [])) <= ALL_CLASSES
    assert set(raw["names"].values()) <= set(ingredients)
    assert all(name == name.lower() for name in [*raw["names"], *raw["unkeyed_names"]])


def test_lhrh_agonists_carry_adt_and_ofs_but_antagonists_only_adt() -> None:
    for code in ("42375", "50610", "38782"):  # leuprolide, goserelin, triptorelin
        assert classify(_rx(code))[1] == {"adt", "ofs"}
    assert classify(_rx("475230"))[1] == {"adt"}  # degarelix


def test_combination_products_name_no_single_ingredient() -> None:
    ingredient, classes = classify(_rx("1923054"))  # Kisqali Femara Co-Pack
    assert ingredient is None
    assert classes == {"cdk46i", "ai"}


def test_non_cancer_products_of_cancer_ingredients_are_not_systemic() -> None:
    assert classify(_rx("105583"))[1] == set()  # Fluorouracil 50 MG/ML Topical Cream
    assert classify(_rx("977440"))[1] == set()  # Zortress (transplant everolimus)
    assert classify(_rx("845512"))[1] == {"other_targeted"}  # Afinitor


# --- text/display fallback ----------------------------------------------------------------------------------


def test_text_only_concept_is_classified_by_name() -> None:
    result = classify_detailed({"text": "Zoladex 3.6 MG Implant"})
    assert (result.ingredient, result.matched_by) == ("50610", "name")
    assert result.classes == {"adt", "ofs"}


def test_unknown_code_falls_back_to_its_display() -> None:
    result = classify_detailed(_rx("999999999", "Letrozole 2.5 MG Oral Tablet"))
    assert (result.ingredient, result.classes, result.matched_by) == ("72965", frozenset({"ai"}), "name")


def test_a_known_code_wins_over_its_display() -> None:
    result = classify_detailed(_rx("1156253", "letrozole"))
    assert (result.ingredient, result.matched_by) == ("77655", "code")


def test_name_without_rxcui_gives_classes_but_no_ingredient() -> None:
    radium = frozenset({"radium223"})
    assert classify({"text": "Xofigo (radium Ra 223 dichloride) injection"}) == (None, radium)


def test_longest_name_wins() -> None:
    assert classify({"text": "ado-trastuzumab emtansine 100 MG"}) == ("1371041", frozenset({"anti_her2"}))


def test_name_fallback_is_conservative() -> None:
    assert classify_detailed({"text": "atorvastatin calcium 20 MG Oral Tablet"}).matched_by == "none"
    assert classify({"text": "fluorouracil 5 % Topical Cream"}) == ("4492", frozenset())
    assert classify({"text": "calcium carbonate 500 MG / cholecalciferol 400 UNT Oral Tablet"}) == (
        None,
        frozenset({"calcium", "vitamin_d"}),
    )


def test_unclassified_drugs_are_kept() -> None:
    [use] = medication_uses([_request("x", "active", {"text": "metformin 500 MG Oral Tablet"})])
    assert (use.classes, use.ingredient, use.matched_by) == (frozenset(), None, "none")


def test_medication_reference_to_contained_or_bundled_medication() -> None:
    contained = _request("c", "active", {})
    del contained["medicationCodeableConcept"]
    contained["contained"] = [{"resourceType": "Medication", "id": "m1", "code": LEUPROLIDE}]
    contained["medicationReference"] = {"reference": "#m1"}
    bundled = _request("b", "active", {})
    del bundled["medicationCodeableConcept"]
    bundled["medicationReference"] = {"reference": "Medication/zol"}
    display_only = _request("d", "active", {})
    del display_only["medicationCodeableConcept"]
    display_only["medicationReference"] = {"reference": "Medication/absent", "display": "Xgeva 120 MG"}
    medication = {"resourceType": "Medication", "id": "zol", "code": ZOLEDRONIC}
    uses = {u.resource: u for u in medication_uses([contained, bundled, display_only, medication])}
    assert uses["MedicationRequest/c"].classes == {"adt", "ofs"}
    assert uses["MedicationRequest/b"].classes == {"bisphosphonate"}
    assert (uses["MedicationRequest/d"].classes, uses["MedicationRequest/d"].matched_by) == (
        frozenset({"denosumab"}),
        "name",
    )


# --- systemic classes ---------------------------------------------------------------------------------------


def test_systemic_classes_exclude_bone_modifying_agents_and_supplements() -> None:
    for supportive in ("bisphosphonate", "denosumab", "calcium", "vitamin_d"):
        assert supportive not in SYSTEMIC_CLASSES
        assert supportive not in systemic_classes(include_endocrine=True)
    assert {"chemo", "ici", "radium223", "cdk46i", "anti_her2", "other_targeted"} <= SYSTEMIC_CLASSES
    assert systemic_classes(include_endocrine=True) >= ENDOCRINE_CLASSES
    assert not ENDOCRINE_CLASSES & systemic_classes(include_endocrine=False)
    assert "chemo" in systemic_classes(include_endocrine=False)


# --- statuses, drafts, windows ------------------------------------------------------------------------------


def test_draft_request_is_ordered_not_active() -> None:
    uses = medication_uses(
        [
            _request("draft", "draft", ZOLEDRONIC, authoredOn=DAY.isoformat()),
            _request("letrozole", "active", LETROZOLE, authoredOn="2023-01-01"),
        ]
    )
    assert [u.draft for u in uses] == [True, False]
    assert active_classes(uses, DAY) == {"ai"}
    assert ordered_classes(uses, DAY) == {"ai", "bisphosphonate"}
    assert classes_ever(uses) == {"ai"}


def test_active_request_starting_after_as_of_is_not_current() -> None:
    tomorrow = (DAY + timedelta(days=1)).isoformat()
    uses = medication_uses([_request("r", "active", LETROZOLE, authoredOn=tomorrow)])
    assert active_classes(uses, DAY) == set()
    assert active_classes(uses, DAY + timedelta(days=1)) == {"ai"}


def test_completed_request_is_not_current() -> None:
    uses = medication_uses([_request("r", "completed", LETROZOLE, authoredOn="2024-01-01")])
    assert active_classes(uses, DAY) == set()


@pytest.mark.parametrize(("days_before", "active"), [(0, True), (28, True), (29, False), (-1, False)])
def test_administration_window_is_inclusive(days_before: int, active: bool) -> None:
    given = (DAY - timedelta(days=days_before)).isoformat()
    uses = medication_uses([_admin("a", "completed", ZOLEDRONIC, effectiveDateTime=given)])
    assert active_classes(uses, DAY) == ({"bisphosphonate"} if active else set())


def test_administration_window_is_configurable() -> None:
    given = (DAY - timedelta(days=60)).isoformat()
    uses = medication_uses([_admin("a", "completed", LEUPROLIDE, effectiveDateTime=given)])
    assert active_classes(uses, DAY) == set()
    assert active_classes(uses, DAY, administration_window_days=90) == {"adt", "ofs"}


def test_in_progress_administration_without_end_is_active() -> None:
    period = {"start": (DAY - timedelta(days=60)).isoformat()}
    uses = medication_uses([_admin("a", "in-progress", PACLITAXEL, effectivePeriod=period)])
    assert active_classes(uses, DAY) == {"chemo"}


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_erroneous_and_cancelled_records_are_ignored_everywhere(status: str) -> None:
    records = [
        _request("r", status, LETROZOLE, authoredOn="2024-01-01"),
        _statement("s", status, LEUPROLIDE, effectiveDateTime="2024-03-01"),
        _admin("a", status, ZOLEDRONIC, effectiveDateTime="2024-03-14"),
    ]
    uses = medication_uses(records)
    assert uses == []
    assert active_classes(uses, DAY) == ordered_classes(uses, DAY) == classes_ever(uses) == set()
    assert classes_on(uses, DAY, 90) == classes_between(uses, date(2000, 1, 1), DAY) == set()
    live = [{**r, "status": "completed" if r["id"] == "a" else "active"} for r in records]
    assert active_classes(medication_uses(live), DAY) == {"ai", "adt", "ofs", "bisphosphonate"}


def test_live_statuses_are_not_ignored() -> None:
    uses = medication_uses([_request("r", "on-hold", LETROZOLE, authoredOn="2024-01-01")])
    assert [u.status for u in uses] == ["on-hold"]
    assert active_classes(uses, DAY) == set()
    assert classes_between(uses, date(2024, 1, 1), DAY) == {"ai"}
    assert classes_ever(uses) == {"ai"}


def test_not_taken_and_not_done_are_ignored() -> None:
    uses = medication_uses(
        [
            _statement("s", "not-taken", LETROZOLE, effectiveDateTime="2024-03-01"),
            _admin("a", "not-done", ZOLEDRONIC, effectiveDateTime="2024-03-14"),
        ]
    )
    assert uses == []


def test_do_not_perform_and_proposals_are_no_use_of_the_drug() -> None:
    uses = medication_uses(
        [
            _request("n", "active", LETROZOLE, authoredOn="2024-01-01", doNotPerform=True),
            _request("p", "active", LETROZOLE, authoredOn="2024-01-01", intent="proposal"),
        ]
    )
    assert uses == []
    kept = medication_uses([_request("o", "active", LETROZOLE, authoredOn="2024-01-01", intent="plan")])
    assert active_classes(kept, DAY) == {"ai"}
    draft = medication_uses([_request("d", "draft", LETROZOLE, intent="proposal")])  # an unsigned order
    assert [u.draft for u in draft] == [True]


def test_repeated_resource_ids_count_once() -> None:
    uses = medication_uses(_resources(SERVICE / "patient_data.json"))
    assert len(uses) == 3  # five MedicationStatements, two of them verbatim duplicates


def test_conformance_patient01_current_and_past_classes() -> None:
    uses = medication_uses(_resources(APP / "TrialMatching_Patient01.json"))
    assert active_classes(uses, date(2020, 1, 1)) == {"cdk46i", "serm"}
    assert classes_ever(uses) == {"adt", "ofs", "serm", "cdk46i"}
    assert classes_on(uses, date(2019, 4, 1), 0) == {"adt", "ofs", "serm", "cdk46i"}
    assert classes_on(uses, date(2019, 6, 1), 28) == {"serm", "cdk46i"}


# --- classes_on ---------------------------------------------------------------------------------------------


def test_request_covers_its_start_day_not_the_day_before() -> None:
    uses = medication_uses([_request("r", "active", LETROZOLE, authoredOn=DAY.isoformat())])
    assert classes_on(uses, DAY, 28) == {"ai"}
    assert classes_on(uses, DAY - timedelta(days=1), 28) == set()


def test_bounds_period_wins_over_authored_on() -> None:
    bounds = _bounds(date(2024, 2, 1))
    request = _request("r", "active", LETROZOLE, authoredOn="2024-01-01", dosageInstruction=bounds)
    [use] = medication_uses([request])
    assert (use.start, use.end) == (date(2024, 2, 1), None)
    assert classes_on([use], date(2024, 1, 15), 28) == set()


def test_validity_period_is_the_fallback_period() -> None:
    validity = {"start": "2024-01-10", "end": "2024-02-10"}
    request = _request("r", "completed", LETROZOLE, dispenseRequest={"validityPeriod": validity})
    [use] = medication_uses([request])
    assert (use.start, use.end) == (date(2024, 1, 10), date(2024, 2, 10))


@pytest.mark.parametrize(("end_offset", "covered"), [(0, True), (-1, False)])
def test_completed_request_counts_up_to_its_end_day(end_offset: int, covered: bool) -> None:
    end = DAY + timedelta(days=end_offset)
    request = _request("r", "completed", LETROZOLE, dosageInstruction=_bounds(date(2023, 6, 1), end))
    uses = medication_uses([request])
    assert classes_on(uses, DAY, 0) == ({"ai"} if covered else set())


def test_completed_request_without_end_does_not_cover_later_days() -> None:
    uses = medication_uses([_request("r", "completed", LETROZOLE, authoredOn="2023-06-01")])
    assert classes_on(uses, DAY, 90) == set()


def test_active_request_with_a_past_end_no_longer_covers() -> None:
    request = _request("r", "active", LETROZOLE, dosageInstruction=_bounds(date(2023, 6, 1), DAY))
    uses = medication_uses([request])
    assert classes_on(uses, DAY, 0) == {"ai"}
    assert classes_on(uses, DAY + timedelta(days=1), 0) == set()


@pytest.mark.parametrize(("days_before", "covered"), [(0, True), (90, True), (91, False)])
def test_administration_lookback_boundary(days_before: int, covered: bool) -> None:
    given = (DAY - timedelta(days=days_before)).isoformat()
    uses = medication_uses([_admin("a", "completed", PACLITAXEL, effectiveDateTime=given)])
    assert classes_on(uses, DAY, 90) == ({"chemo"} if covered else set())


def test_administration_after_the_day_does_not_count() -> None:
    given = (DAY + timedelta(days=1)).isoformat()
    uses = medication_uses([_admin("a", "completed", PACLITAXEL, effectiveDateTime=given)])
    assert classes_on(uses, DAY, 90) == set()


def test_single_day_completed_statement_counts_like_an_administration() -> None:
    uses = medication_uses(_resources(SERVICE / "patient_data.json"))  # paclitaxel cycles, last 2017-09-08
    assert classes_on(uses, date(2017, 9, 8) + timedelta(days=28), 28) == {"chemo"}
    assert classes_on(uses, date(2017, 9, 8) + timedelta(days=29), 28) == set()


def test_active_statement_covers_from_its_effective_date() -> None:
    uses = medication_uses([_statement("s", "active", LETROZOLE, effectiveDateTime="2024-01-01")])
    assert classes_on(uses, DAY, 0) == {"ai"}
    assert classes_on(uses, date(2023, 12, 31), 0) == set()


def test_stopped_statement_period_covers_to_its_end() -> None:
    period = {"start": "2023-01-01", "end": DAY.isoformat()}
    uses = medication_uses([_statement("s", "stopped", LETROZOLE, effectivePeriod=period)])
    assert classes_on(uses, DAY, 0) == {"ai"}
    assert classes_on(uses, DAY + timedelta(days=1), 0) == set()


def test_draft_is_never_in_use() -> None:
    uses = medication_uses([_request("d", "draft", LETROZOLE, authoredOn="2023-01-01")])
    assert classes_on(uses, DAY, 90) == set()
    assert classes_between(uses, date(2023, 1, 1), DAY) == set()


# --- classes_between / classes_ever -------------------------------------------------------------------------


def test_adt_within_the_last_six_months() -> None:
    six_months_ago = DAY - timedelta(days=183)
    recent = _admin("recent", "completed", LEUPROLIDE, effectiveDateTime=six_months_ago.isoformat())
    day_before = (six_months_ago - timedelta(days=1)).isoformat()
    old = _admin("old", "completed", LEUPROLIDE, effectiveDateTime=day_before)
    assert classes_between(medication_uses([recent]), six_months_ago, DAY) == {"adt", "ofs"}
    assert classes_between(medication_uses([old]), six_months_ago, DAY) == set()
    assert classes_ever(medication_uses([old])) == {"adt", "ofs"}


def test_open_active_request_overlaps_any_later_window() -> None:
    uses = medication_uses([_request("r", "active", LEUPROLIDE, authoredOn="2020-01-01")])
    assert classes_between(uses, DAY - timedelta(days=183), DAY) == {"adt", "ofs"}
    assert classes_between(uses, date(2019, 1, 1), date(2019, 12, 31)) == set()


def test_completed_use_without_end_counts_on_its_start_day_only() -> None:
    uses = medication_uses([_request("r", "completed", LEUPROLIDE, authoredOn="2023-01-01")])
    assert classes_between(uses, date(2023, 1, 1), date(2023, 1, 1)) == {"adt", "ofs"}
    assert classes_between(uses, date(2023, 1, 2), DAY) == set()


def test_a_draft_do_not_perform_order_is_read_without_a_drug() -> None:
    from service.cdshooks.orders import readable

    request = _request("x", "draft", LETROZOLE, doNotPerform=True, subject={"reference": "Patient/p"})
    (order,) = readable([request])
    assert (order.reference, order.classes) == ("MedicationRequest/x", frozenset())
