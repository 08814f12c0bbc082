"""Input forms real senders use beside the ones fhir-mapping.md spells out: ECOG as a LOINC answer (LL529-9),
life expectancy with a unit word instead of a UCUM code."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.domain.facts import InputIssue
from service.fhir.observations import local_facts
from service.fhir.performance import performance_facts
from service.fhir.readings import ObsIndex

LOINC = "http://loinc.org"
LOCAL = "http://oligocds.org/fhir/CodeSystem/oligocds"


def obs(code: dict[str, Any], **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": code,
        "effectiveDateTime": "2026-11-20",
        **value,
    }


@pytest.mark.parametrize(("answer", "grade"), [("LA9622-7", 0), ("LA9624-3", 2), ("LA9627-6", 5)])
def test_ecog_as_a_loinc_answer(answer: str, grade: int) -> None:
    ecog = obs(
        {"coding": [{"system": LOINC, "code": "89247-1"}]},
        valueCodeableConcept={"coding": [{"system": LOINC, "code": answer}]},
    )
    issues: list[InputIssue] = []
    facts = {f.name: f for f in performance_facts(ObsIndex([ecog]), date(2026, 11, 26), 90, issues)}
    assert (facts["ecog"].value, issues) == (grade, [])


@pytest.mark.parametrize(("unit", "months"), [("months", 12.0), ("Days", 2.96), ("years", 24.0), ("mo", 12.0)])
def test_life_expectancy_with_a_unit_word(unit: str, months: float) -> None:
    value = {"months": 12, "Days": 90, "years": 2, "mo": 12}[unit]
    le = obs({"coding": [{"system": LOCAL, "code": "life-expectancy"}]}, valueQuantity={"value": value, "unit": unit})
    issues: list[InputIssue] = []
    facts = {f.name: f for f in local_facts(ObsIndex([le]), issues)}
    assert (facts["life_expectancy"].value, issues) == (months, [])
