"""DQ-06 keeps both differing copies of one resource id; the outputs still name each subject once."""

from __future__ import annotations

from datetime import date
from typing import Any

from service.bootstrap import Container

PATIENT = {"reference": "Patient/p1"}
SCT = "http://snomed.info/sct"


def metastasis(site: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "m1",
        "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"]},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": {"coding": [{"system": SCT, "code": "94222008"}]},
        "bodySite": [{"coding": [{"system": SCT, "code": site}]}],
        "subject": PATIENT,
        "onsetDateTime": "2026-10-01",
    }


def bundle() -> dict[str, Any]:
    resources = [
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-01-01"},
        {
            "resourceType": "Condition",
            "id": "prim",
            "code": {"coding": [{"system": SCT, "code": "254837009"}]},
            "subject": PATIENT,
            "onsetDateTime": "2020-01-01",
        },
        metastasis("280849005"),  # T12
        metastasis("61032001"),  # L1: same id, other content (DQ-06: both kept)
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def test_differing_copies_of_one_condition_give_one_lesion_one_recommendation_each(container: Container) -> None:
    (result,) = container.evaluator.evaluate_json(bundle(), date(2026, 11, 26))
    assert [lesion["condition"] for lesion in result["assessment"]["lesions"]] == ["Condition/m1"]
    subjects = [(r["rule"], r["code"], r.get("lesion")) for r in result["recommendations"]]
    assert len(subjects) == len(set(subjects))  # contract.md §3: one per (rule, code, subject)
    assert any(r["code"] == "data-conflict" and r["rule"] == "DQ-06" for r in result["recommendations"])
    uuids = [card["uuid"] for card in result["cards"]]
    assert len(uuids) == len(set(uuids))
    addresses = [a["reference"] for a in result["carePlan"]["addresses"]]
    assert addresses == ["Condition/prim", "Condition/m1"]
