"""Age from Patient.birthDate: a partial date that leaves two ages possible is not guessed (contract.md §3)."""

from __future__ import annotations

from datetime import date

import pytest

from service.fhir.facts import FactOptions, patient_facts

AS_OF = date(2026, 11, 27)


@pytest.mark.parametrize(
    ("birth", "age"),
    [
        ("1966-11-27", 60),
        ("1966-11-28", 59),
        ("1966-05", 60),  # any day of May 1966: 60 on 2026-11-27
        ("1966-11", None),  # 59 or 60 depending on the day
        ("1966", None),  # 59 or 60
        ("1960", None),  # 65 (born 31 December) or 66
        ("1960-01", 66),  # any day of January 1960
    ],
)
def test_age(birth: str, age: int | None) -> None:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": birth, "gender": "female"}
    pf = patient_facts("Patient/p", [patient], AS_OF, FactOptions())
    assert pf.value("age") == age
