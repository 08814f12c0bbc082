"""Wording the spec gives for particular cases: HER2 "ISH result needed" only for an equivocal result (clinical-rules
§6.8), the prostate zoledronic-acid label note only before castration resistance (§6.1)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.bootstrap import Container
from tests.resources import PATIENT, breast_patient, collection, metastasis

LOINC = "http://loinc.org"
LOCAL = "http://oligocds.org/fhir/CodeSystem/oligocds"


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
