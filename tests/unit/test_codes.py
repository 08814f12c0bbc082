"""Code tables (fhir-mapping.md §4): the coding that says the most wins, whatever the coding order."""

from __future__ import annotations

import pytest

from service.fhir import codes

SCT, ICD = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"


def concept(*codings: tuple[str, str]) -> dict[str, object]:
    return {"coding": [{"system": s, "code": c} for s, c in codings]}


@pytest.mark.parametrize(
    ("codings", "site"),
    [
        (((ICD, "C34.90"), (SCT, "254637007")), "lung_nsclc"),
        (((SCT, "254637007"), (ICD, "C34.90")), "lung_nsclc"),
        (((ICD, "C34.90"),), "lung_other"),
        (((SCT, "363358000"), (ICD, "C34.90")), "lung_other"),
    ],
)
def test_primary_site_takes_the_most_specific_coding(codings: tuple[tuple[str, str], ...], site: str) -> None:
    assert codes.primary_site(concept(*codings)) == site


@pytest.mark.parametrize(
    ("codings", "organ"),
    [
        (((SCT, "128462008"), (ICD, "C78.7")), "liver"),
        (((ICD, "C78.7"), (SCT, "128462008")), "liver"),
        (((SCT, "128462008"),), None),
        (((ICD, "C78.4"),), "other-visceral"),
    ],
)
def test_secondary_organ_takes_the_coding_that_names_the_organ(
    codings: tuple[tuple[str, str], ...], organ: str | None
) -> None:
    assert codes.secondary_organ(concept(*codings)) == (True, organ)
