"""Treatment fact readers at their label boundaries (clinical-rules.md §6)."""

from __future__ import annotations

from datetime import date

import pytest

from service.domain.dosing import zoledronic_acid_dose_mg
from service.fhir.labs import cockcroft_gault
from service.fhir.medications import MedicationUse
from service.fhir.readings import ObsIndex, Reading
from service.fhir.treatment import ZOLEDRONIC_ACID, genomic_facts, za_renal_facts

START = date(2026, 1, 10)


def _za() -> MedicationUse:
    return MedicationUse(
        "MedicationRequest/za", frozenset({"bisphosphonate"}), ZOLEDRONIC_ACID, "request", "active", START, None, False
    )


def _scr(value: float, day: int, month: int) -> Reading:
    return Reading(value, date(2026, month, day), f"Observation/scr-{month}-{day}", None)


def _deteriorated(baseline: float, current: float) -> bool:
    facts = {f.name: f for f in za_renal_facts([_za()], [_scr(baseline, 5, 1), _scr(current, 5, 3)], date(2026, 4, 1))}
    return bool(facts["za_renal_deterioration"].value)


# BMA-03 [LABEL]: a rise of >= 0.5 mg/dL (baseline < 1.4) or >= 1.0 mg/dL (baseline >= 1.4), compared in decimal:
# in binary floating point 1.4 - 0.9 is 0.4999999999999999 and 2.8 - 1.8 is 0.9999999999999998.
@pytest.mark.parametrize(
    ("baseline", "current", "withhold"),
    [
        (0.9, 1.4, True),
        (0.9, 1.39, False),
        (0.63, 1.13, True),
        (1.0, 1.5, True),
        (1.8, 2.8, True),
        (1.8, 2.79, False),
        (3.1, 4.1, True),
        (3.6, 4.6, True),
        (1.4, 2.4, True),
        (1.4, 2.3, False),
    ],
)
def test_creatinine_rise_at_the_label_boundary(baseline: float, current: float, withhold: bool) -> None:
    assert _deteriorated(baseline, current) is withhold


def test_cockcroft_gault_is_compared_unrounded_at_the_label_bands() -> None:
    just_below_30 = cockcroft_gault(80, 71.9, 2.0, female=False)  # (140 − 80) × 71.9 / 144 = 29.958…
    assert 29.95 < just_below_30 < 30
    assert zoledronic_acid_dose_mg(just_below_30) is None  # < 30: not recommended (rounded to 30.0 it was 3.0 mg)
    just_above_60 = cockcroft_gault(50, 48.03, 1.0, female=False)  # 90 × 48.03 / 72 = 60.0375
    assert zoledronic_acid_dose_mg(just_above_60) == 4.0  # > 60 (rounded to 60.0 it was 3.5 mg)


def _alk_fish(**value: object) -> ObsIndex:
    code = {"coding": [{"system": "http://loinc.org", "code": "78205-2"}]}
    return ObsIndex([{"resourceType": "Observation", "id": "alk", "status": "final", "code": code, **value}])


def _coded(system: str, code: str) -> dict[str, object]:
    return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


# fhir-mapping.md §4.6: ALK FISH positive → alk_fusion; Positive/Negative answers LOINC LA6576-8/LA6577-6, SNOMED
# 10828004/260385009; value[x] may be a string (§3.5). A text that says both or neither stays unknown.
@pytest.mark.parametrize(
    ("value", "fusion"),
    [
        (_coded("http://loinc.org", "LA6576-8"), True),
        (_coded("http://snomed.info/sct", "10828004"), True),
        (_coded("http://loinc.org", "LA9633-4"), True),
        (_coded("http://loinc.org", "LA6577-6"), False),
        (_coded("http://snomed.info/sct", "260385009"), False),
        ({"valueString": "Positive"}, True),
        ({"valueString": "negative"}, False),
        ({"valueString": "Not detected"}, False),
        ({"valueCodeableConcept": {"text": "ALK rearrangement positive"}}, True),
        ({"valueString": "No ALK rearrangement detected"}, None),
        ({"valueString": "not positive"}, None),
        ({"valueString": "Equivocal"}, None),
        (_coded("http://snomed.info/sct", "123"), None),
    ],
)
def test_alk_fish_result_values(value: dict[str, object], fusion: bool | None) -> None:
    alk = {f.name: f for f in genomic_facts(_alk_fish(**value))}["alk_fusion"]
    assert alk.value is fusion


def _egfr_variant(change_coding: dict[str, object]) -> ObsIndex:
    gene = {
        "code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId", "code": "HGNC:3236"}]},
    }
    change = {
        "code": {"coding": [{"system": "http://loinc.org", "code": "48005-3"}]},
        "valueCodeableConcept": change_coding,
    }
    variant = {
        "resourceType": "Observation",
        "id": "v",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "69548-6"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9633-4"}]},
        "component": [gene, change],
    }
    return ObsIndex([variant])


# fhir-mapping.md §4.6 "exon 19 deletions": in-frame deletions/delins starting in EGFR codons 729–761 [KNOW]
@pytest.mark.parametrize(
    ("change", "sensitizing"),
    [
        ("p.Glu746_Ala750del", True),
        ("p.E746_A750del", True),
        ("p.(Glu746_Ala750del)", True),
        ("p.Leu747_Pro753delinsSer", True),
        ("p.L747_P753delinsS", True),
        ("p.Glu746del", True),
        ("p.Lys729_Glu734del", True),
        ("p.Thr761_Glu762del", True),
        ("p.Leu858Arg", True),
        ("p.Glu709_Thr710delinsAsp", None),  # exon 18
        ("p.Val762del", None),  # first residue after exon 19
        ("p.Ala767_Val769dup", None),  # exon 20 insertion
        ("p.Glu746_Ala750delfs", None),  # not an HGVS in-frame deletion
        ("c.2235_2249del", None),  # coding DNA, not protein HGVS
        ("p.Thr790Met", None),
    ],
)
def test_egfr_exon19_deletions_in_protein_hgvs(change: str, sensitizing: bool | None) -> None:
    coding = {"coding": [{"system": "http://varnomen.hgvs.org", "code": change}]}
    egfr = {f.name: f for f in genomic_facts(_egfr_variant(coding))}["egfr_sensitizing_mutation"]
    assert egfr.value is sensitizing
