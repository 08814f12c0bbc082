"""Small FHIR resources shared by the unit tests that evaluate a hand-built Bundle."""

from __future__ import annotations

from typing import Any

PATIENT = {"reference": "Patient/p1"}
SCT = "http://snomed.info/sct"
SECONDARY_PROFILE = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def metastasis(site: str, cid: str = "m1") -> dict[str, Any]:
    """An active bone SecondaryCancerCondition (SNOMED 94222008) of Patient/p1 at SNOMED body site `site`."""
    return {
        "resourceType": "Condition",
        "id": cid,
        "meta": {"profile": [SECONDARY_PROFILE]},
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "code": {"coding": [{"system": SCT, "code": "94222008"}]},
        "bodySite": [{"coding": [{"system": SCT, "code": site}]}],
        "subject": PATIENT,
        "onsetDateTime": "2026-10-01",
    }


def breast_patient() -> list[dict[str, Any]]:
    """Patient/p1 (female, born 1960) with a breast primary diagnosed in 2020."""
    return [
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-01-01"},
        {
            "resourceType": "Condition",
            "id": "prim",
            "code": {"coding": [{"system": SCT, "code": "254837009"}]},
            "subject": PATIENT,
            "onsetDateTime": "2020-01-01",
        },
    ]


def collection(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
