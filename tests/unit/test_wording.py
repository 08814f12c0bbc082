"""Wording the spec gives for particular cases: HER2 "ISH result needed" only for an equivocal result (clinical-rules
§6.8), the prostate zoledronic-acid label note only before castration resistance (§6.1)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.bootstrap import Container
from tests.resources import PATIENT, breast_patient, collection, metastasis

LOINC = "http://loinc.org"
LOCAL = "http://oligocds.org/fhir/CodeSystem/oligocds"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def observation(oid: str, code: dict[str, Any], **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": code,
        "subject": PATIENT,
        "effectiveDateTime": "2026-11-01",
        **value,
    }


def evaluate(container: Container, resources: list[dict[str, Any]]) -> dict[str, Any]:
    (result,) = container.evaluator.evaluate_json(collection(resources), date(2026, 11, 26))
    return dict(result)


def her2_issue(result: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in result["issues"] if i["code"] == "missing-input" and i["input"] == "her2")


@pytest.mark.parametrize("equivocal", [True, False])
def test_ish_result_needed_only_for_an_equivocal_her2(container: Container, equivocal: bool) -> None:
    extra = []
    if equivocal:
        her2 = {"coding": [{"system": LOINC, "code": "48676-1"}]}
        extra.append(observation("her2", her2, valueString="IHC 2+"))
    result = evaluate(container, [*breast_patient(), metastasis("61032001"), *extra])
    issue = her2_issue(result)
    assert "TGT-BC" in issue["rules"]
    assert ("ISH result needed" in issue["detail"]) is equivocal


def prostate(castration: str | None) -> list[dict[str, Any]]:
    resources = [
        {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1950-01-01"},
        {
            "resourceType": "Condition",
            "id": "prim",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "399068003"}]},
            "subject": PATIENT,
            "onsetDateTime": "2020-01-01",
        },
        metastasis("61032001"),
    ]
    if castration:
        code = {"coding": [{"system": LOCAL, "code": "castration-status"}]}
        value = {"coding": [{"system": LOCAL, "code": castration}]}
        resources.append(observation("cs", code, valueCodeableConcept=value))
    return resources


@pytest.mark.parametrize(("castration", "noted"), [(None, True), ("sensitive", True), ("resistant", False)])
def test_prostate_label_note_only_before_castration_resistance(
    container: Container, castration: str | None, noted: bool
) -> None:
    result = evaluate(container, prostate(castration))
    (start,) = [r for r in result["recommendations"] if r["code"] == "start-bma"]
    assert ("not yet castration-resistant" in start["detail"]) is noted


def test_radium_detail_says_plainly_when_abiraterone_is_active(container: Container) -> None:
    """clinical-rules §6.10: "Not with abiraterone + prednisone/prednisolone" — named first when it is on the list."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "tx-ra223-consider-boundary-counts"
    bundle = json.loads((folder / "bundle.json").read_text())
    patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")

    def radium_detail(data: dict[str, Any]) -> str:
        (result,) = container.evaluator.evaluate_json(data, date(2026, 11, 26))
        (rec,) = [r for r in result["recommendations"] if r["code"] == "radium-223-consider"]
        return str(rec["detail"])

    assert radium_detail(bundle).startswith("Not with abiraterone")
    abiraterone = {
        "resourceType": "MedicationRequest",
        "id": "abi",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": "2026-10-01",
        "medicationCodeableConcept": {
            "coding": [
                {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1100072", "display": "abiraterone"}
            ]
        },
    }
    bundle["entry"].append({"resource": abiraterone})
    assert radium_detail(bundle).startswith("**Abiraterone is active")


@pytest.mark.parametrize(("scenario", "noted"), [("same-side", True), ("contralateral", False)])
def test_mirels_detail_names_a_recorded_fracture(container: Container, scenario: str, noted: bool) -> None:
    """SURG-MIRELS rates an intact bone (clinical-rules §5.1): a lesion with an actual fracture says so first."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / f"tx-fix-fracture-condition-{scenario}"
    (result,) = container.evaluator.evaluate_json(json.loads((folder / "bundle.json").read_text()), date(2026, 11, 26))
    (rec,) = [r for r in result["recommendations"] if r["code"] == "ebrt-and-observation"]
    assert rec["detail"].startswith("**An actual fracture is recorded") is noted


def test_dental_summary_names_the_trigger_that_applies(container: Container) -> None:
    """BMA-05 lists every trigger that applies (clinical-rules §6.5): a recent dental exam and an open oral lesion →
    'delay BMA start until healed', not 'dental examination before starting'."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "tx-bma01-start-bma"
    bundle = json.loads((folder / "bundle.json").read_text())
    patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    lesion = observation("oral", {"coding": [{"system": LOCAL, "code": "oral-open-lesion"}]}, valueBoolean=True)
    lesion["subject"] = {"reference": f"Patient/{patient}"}
    bundle["entry"].append({"resource": lesion})
    (result,) = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    (rec,) = [r for r in result["recommendations"] if r["code"] == "dental-exam-before-bma"]
    assert rec["summary"] == "ONJ prevention: delay BMA start until healed."


@pytest.mark.parametrize(
    ("scenario", "code", "text"),
    [
        (
            "tx-tgt-nsclc-egfr-l858r",
            "egfr-tki",
            "EGFR TKI (review: erlotinib/gefitinib; current first-line standard is osimertinib)",
        ),
        ("class-repeat-oligorecurrence", "rcc-local-therapy-discussion", "consider metastasectomy/SABR at MDT"),
        (
            "tx-bma04-denosumab-crcl-below-30-monitoring",
            "denosumab-calcium-monitoring",
            "high hypocalcaemia risk: monitor calcium",
        ),
    ],
)
def test_summaries_carry_the_spec_words(container: Container, scenario: str, code: str, text: str) -> None:
    """clinical-rules §6.11, §6.12, §6.4 quote these phrases; the summaries hold them verbatim."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / scenario
    (result,) = container.evaluator.evaluate_json(json.loads((folder / "bundle.json").read_text()), date(2026, 11, 26))
    (rec,) = [r for r in result["recommendations"] if r["code"] == code]
    assert text in rec["summary"]


def test_omd_class_line_is_the_spec_line(container: Container) -> None:
    """§2.5: "Oligometastatic disease class (ESTRO/EORTC 2020): <class>" on the OMD summary card, unbroken."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "class-synchronous"
    (result,) = container.evaluator.evaluate_json(json.loads((folder / "bundle.json").read_text()), date(2026, 11, 26))
    card = next(c for c in result["cards"] if "Oligometastatic status (OMD-01)" in c.get("detail", ""))
    assert "Oligometastatic disease class (ESTRO/EORTC 2020): synchronous" in card["detail"]


def test_a_long_body_site_keeps_the_fracture_summary_under_140_characters() -> None:
    from service.rules.texts import render

    template = "Pathological fracture at {lesion_site}: urgent orthopaedic oncology assessment."
    site = "Structure of the proximal metaphysis and intertrochanteric region of the left femur, lateral cortex"
    summary = render(template, {"lesion_body_site": site})
    assert len(summary) < 140 and summary.startswith("Pathological fracture at Structure of the proximal")
