"""ER/PR/HER2 readings (fhir-mapping §2, §4.6; clinical-rules §6.8)."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.facts import FactStatus, InputIssue
from service.fhir.observations import receptor_facts
from service.fhir.readings import ObsIndex

ER, HER2_IHC, HER2_ISH, HER2_RATIO = "16112-5", "85319-2", "85318-4", "49683-6"


def obs(n: int, loinc: str, day: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": day,
        **value,
    }


def receptor(name: str, *observations: dict[str, Any]) -> tuple[Any, FactStatus]:
    issues: list[InputIssue] = []
    fact = next(f for f in receptor_facts(ObsIndex(list(observations)), issues) if f.name == name)
    return fact.value, fact.status


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"valueString": "3+"}, "positive"),
        ({"valueCodeableConcept": {"text": "IHC 3+"}}, "positive"),
        ({"valueString": "1+"}, "negative"),
        ({"valueString": "0"}, "negative"),
        ({"valueCodeableConcept": {"text": "IHC score 0"}}, "negative"),
    ],
)
def test_her2_ihc_scores(value: dict[str, Any], expected: str) -> None:
    assert receptor("her2", obs(1, HER2_IHC, "2026-10-01", **value)) == (expected, FactStatus.KNOWN)


def test_her2_ihc_2plus_is_equivocal_which_is_not_yet_a_decision() -> None:
    assert receptor("her2", obs(1, HER2_IHC, "2026-10-01", valueString="2+")) == (None, FactStatus.UNKNOWN)


def test_a_fish_ratio_is_not_read_as_a_percentage() -> None:
    # 1.5 is not amplified; the spec gives no ratio threshold, so the value stays unread rather than "≥ 1 → positive"
    ratio = obs(1, HER2_RATIO, "2026-10-01", valueQuantity={"value": 1.5})
    assert receptor("her2", ratio) == (None, FactStatus.UNKNOWN)


def test_the_reflex_ish_decides_over_a_same_day_equivocal_ihc() -> None:
    ihc = obs(
        1,
        HER2_IHC,
        "2026-10-01",
        valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "42425007"}]},
    )
    ish = obs(
        2, HER2_ISH, "2026-10-01", valueCodeableConcept={"coding": [{"system": "http://loinc.org", "code": "LA6576-8"}]}
    )
    assert receptor("her2", ihc, ish) == ("positive", FactStatus.KNOWN)


def test_a_newer_ihc_3plus_supersedes_an_older_negative_ish() -> None:
    ish = obs(
        1, HER2_ISH, "2026-09-01", valueCodeableConcept={"coding": [{"system": "http://loinc.org", "code": "LA6577-6"}]}
    )
    ihc = obs(2, HER2_IHC, "2026-10-01", valueString="3+")
    assert receptor("her2", ish, ihc) == ("positive", FactStatus.KNOWN)


def test_er_from_a_value_string_and_a_percentage() -> None:
    assert receptor("er", obs(1, ER, "2026-10-01", valueString="Positive")) == ("positive", FactStatus.KNOWN)
    assert receptor("er", obs(1, ER, "2026-10-01", valueQuantity={"value": 0, "unit": "%"}))[0] == "negative"


def test_a_negated_wording_stays_unread() -> None:
    assert receptor("er", obs(1, ER, "2026-10-01", valueString="Not positive")) == (None, FactStatus.UNKNOWN)
