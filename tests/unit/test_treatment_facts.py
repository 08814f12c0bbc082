"""Treatment fact readers at their label boundaries (clinical-rules.md §6)."""

from __future__ import annotations

from datetime import date

import pytest

from service.domain.dosing import zoledronic_acid_dose_mg
from service.domain.facts import Fact, FactStatus, InputIssue
from service.fhir.labs import cockcroft_gault, creatinine_si, lab_facts, lab_readings
from service.fhir.medications import MedicationUse
from service.fhir.readings import ObsIndex, Reading
from service.fhir.treatment import ZOLEDRONIC_ACID, genomic_facts, medication_facts, za_renal_facts

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


def _renal(*scr: Reading, as_of: date = date(2026, 4, 1)) -> dict[str, Fact]:
    return {f.name: f for f in za_renal_facts([_za()], list(scr), as_of, None, 30)}


def test_two_current_creatinine_values_on_one_date_decide_nothing() -> None:
    """fhir-mapping §2.1: two values on the latest date are conflicting; BMA-03 then needs the input, not a guess."""
    other = Reading(1.0, date(2026, 3, 5), "Observation/scr-3-5-b", None)
    facts = _renal(_scr(1.0, 5, 1), _scr(1.6, 5, 3), other)
    assert not facts["za_renal_deterioration"].usable
    assert facts["za_renal_deterioration"].missing == ("scr_current_mg_dl",)


def test_two_baseline_values_on_one_date_make_the_baseline_conflicting() -> None:
    other = Reading(1.5, date(2026, 1, 5), "Observation/scr-1-5-b", None)
    facts = _renal(_scr(1.0, 5, 1), other, _scr(1.6, 5, 3))
    assert facts["scr_baseline_mg_dl"].status is FactStatus.CONFLICTING
    assert facts["za_renal_deterioration"].missing == ("scr_baseline_mg_dl",)


def test_a_current_creatinine_older_than_the_renal_window_decides_nothing() -> None:
    """DQ-05: creatinine older than 30 days when a BMA decision needs it → stale-input, no recommendation."""
    fresh = _renal(_scr(1.0, 5, 1), _scr(1.6, 1, 3), as_of=date(2026, 3, 31))  # 30 days: still in the window
    assert fresh["za_renal_deterioration"].value is True
    assert fresh["za_scr_current"].value == 1.6
    stale = _renal(_scr(1.0, 5, 1), _scr(1.6, 1, 3), as_of=date(2026, 4, 1))  # 31 days
    assert stale["za_renal_deterioration"].missing == ("scr_current_mg_dl",)


def test_an_order_not_yet_started_has_no_rise_to_judge() -> None:
    """BMA-03 compares creatinine on therapy with the one before it: a draft, or an order starting on or after asOf,
    has no dose given yet, so no withhold and no "baseline missing" issue."""
    draft = MedicationUse(
        "MedicationRequest/za", frozenset({"bisphosphonate"}), ZOLEDRONIC_ACID, "request", "draft", None, None, True
    )
    today = MedicationUse(
        "MedicationRequest/za",
        frozenset({"bisphosphonate"}),
        ZOLEDRONIC_ACID,
        "request",
        "active",
        date(2026, 4, 1),
        None,
        False,
    )
    for use in (draft, today):
        facts = {f.name: f for f in za_renal_facts([use], [_scr(1.0, 5, 3)], date(2026, 4, 1), None, 30)}
        assert facts["za_renal_deterioration"].value is False
    undated = MedicationUse(
        "MedicationRequest/za", frozenset({"bisphosphonate"}), ZOLEDRONIC_ACID, "request", "active", None, None, False
    )
    facts = {f.name: f for f in za_renal_facts([undated], [_scr(1.0, 5, 3)], date(2026, 4, 1), None, 30)}
    assert facts["za_renal_deterioration"].missing == ("scr_baseline_mg_dl",)  # on therapy since when?


@pytest.mark.parametrize(
    ("comparator", "value", "dose"),
    [("<", 30, None), (">", 60, 4.0), (None, 60, 3.5), ("<=", 30, 3.0), (">=", 60, 3.5)],
)
def test_a_strict_comparator_is_a_bound_beyond_the_number(
    comparator: str | None, value: float, dose: float | None
) -> None:
    """CrCl "<30" is below 30 (not recommended), ">60" above 60 (full dose): not the band of the bare number."""
    quantity: dict[str, object] = {
        "value": value,
        "unit": "mL/min",
        "system": "http://unitsofmeasure.org",
        "code": "mL/min",
    }
    if comparator:
        quantity["comparator"] = comparator
    obs = _obs("c", "35591-7", value, "mL/min")
    obs["valueQuantity"] = quantity
    (reading,) = lab_readings(ObsIndex([obs]), [])["crcl_observed"]
    assert zoledronic_acid_dose_mg(float(reading.value)) == dose


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


def _fish(rid: str, answer: str, day: str) -> dict[str, object]:
    code = {"coding": [{"system": "http://loinc.org", "code": "78205-2"}]}
    value = _coded("http://loinc.org", answer)
    resource = {"resourceType": "Observation", "id": rid, "status": "final", "code": code, "effectiveDateTime": day}
    return {**resource, **value}


@pytest.mark.parametrize(
    ("results", "status", "value"),
    [
        # positive and negative on one date: conflicting (fhir-mapping §2.1), not "the positive one wins"
        ([("a", "LA6576-8", "2026-10-01"), ("b", "LA6577-6", "2026-10-01")], FactStatus.CONFLICTING, None),
        # on different dates a positive result still decides (a tumour keeps its driver)
        ([("a", "LA6576-8", "2026-09-01"), ("b", "LA6577-6", "2026-10-01")], FactStatus.KNOWN, True),
        # a contradicted pair does not hide another, uncontradicted positive result
        (
            [("a", "LA6576-8", "2026-10-01"), ("b", "LA6577-6", "2026-10-01"), ("c", "LA6576-8", "2026-08-01")],
            FactStatus.KNOWN,
            True,
        ),
        ([("a", "LA6577-6", "2026-10-01"), ("b", "LA6577-6", "2026-10-01")], FactStatus.KNOWN, False),
    ],
)
def test_same_day_genomic_results_that_disagree_are_conflicting(
    results: list[tuple[str, str, str]], status: FactStatus, value: bool | None
) -> None:
    obs = ObsIndex([_fish(*r) for r in results])
    alk = {f.name: f for f in genomic_facts(obs)}["alk_fusion"]
    assert (alk.status, alk.value) == (status, value)


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


@pytest.mark.parametrize(
    ("age", "weight", "scr", "female", "crcl"),
    [
        (68, 72.0, 1.2, False, 60.0),  # 60.00000000000001 in binary floating point
        (68, 63.0, 2.1, False, 30.0),  # 29.999999999999996
        (44, 54.0, 2.4, False, 30.0),  # 30.000000000000004
        (68, 72.0, 1.02, True, 60.0),
    ],
)
def test_cockcroft_gault_lands_exactly_on_a_band_edge(
    age: int, weight: float, scr: float, female: bool, crcl: float
) -> None:
    assert repr(cockcroft_gault(age, weight, scr, female)) == repr(crcl)


def test_cockcroft_gault_from_converted_units_is_exact_at_60() -> None:
    """Creatinine in µmol/L (14682-9) and weight in pounds are converted before the formula (fhir-mapping §4.7)."""
    obs = ObsIndex(
        [
            _obs("scr", "14682-9", 106.104, "umol/L"),
            _obs("wt", "29463-7", 158.733, "[lb_av]"),
        ]
    )
    issues: list[InputIssue] = []
    facts = {f.name: f for f in lab_facts(lab_readings(obs, issues), 68, "male", date(2026, 11, 27), 30, issues)}
    assert facts["crcl"].value == 60.0 and repr(facts["crcl"].value) == "60.0"
    assert zoledronic_acid_dose_mg(float(facts["crcl"].value)) == 3.5
    assert any(i.code == "derived-input" and "CrCl 60 mL/min" in i.detail for i in issues)


def _obs(oid: str, loinc: str, value: float, unit: str, day: str = "2026-11-20") -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "effectiveDateTime": day,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def _crcl_of(*observations: dict[str, object]) -> tuple[Fact, list[InputIssue]]:
    issues: list[InputIssue] = []
    readings = lab_readings(ObsIndex(observations), issues)
    facts = {f.name: f for f in lab_facts(readings, 68, "male", date(2026, 11, 26), 30, issues)}
    return facts["crcl"], issues


@pytest.mark.parametrize(
    ("measured_day", "scr_day", "value", "status", "derived"),
    [
        ("2026-09-01", "2026-11-20", 36.0, FactStatus.KNOWN, True),  # stale measured, fresh creatinine
        ("2026-11-10", "2026-11-20", 45.0, FactStatus.KNOWN, False),  # both fresh: the measured one (§4.7)
        ("2026-11-20", "2026-11-20", 45.0, FactStatus.KNOWN, False),
        ("2026-11-20", "2026-09-01", 45.0, FactStatus.KNOWN, False),
        ("2026-09-01", "2026-10-01", 36.0, FactStatus.STALE, True),  # both stale: the newer, stale
        ("2026-10-01", "2026-09-01", 45.0, FactStatus.STALE, False),
        ("2026-10-01", "2026-10-01", 45.0, FactStatus.STALE, False),
    ],
)
def test_crcl_is_the_freshest_one_measured_first(
    measured_day: str, scr_day: str, value: float, status: FactStatus, derived: bool
) -> None:
    crcl, issues = _crcl_of(
        _obs("crcl", "35591-7", 45, "mL/min", measured_day),
        _obs("scr", "2160-0", 2.0, "mg/dL", scr_day),
        _obs("wt", "29463-7", 72, "kg", scr_day),
    )
    assert (crcl.value, crcl.status, crcl.derived) == (value, status, derived)
    used_derived = any(i.code == "derived-input" and i.input == "crcl" for i in issues)
    assert used_derived is (derived and status is FactStatus.KNOWN)


def test_crcl_from_a_stale_creatinine_is_stale_not_missing() -> None:
    crcl, _ = _crcl_of(_obs("scr", "2160-0", 1.2, "mg/dL", "2026-10-20"), _obs("wt", "29463-7", 72, "kg", "2026-10-20"))
    assert crcl.status is FactStatus.STALE and crcl.value == 60.0


def test_crcl_without_weight_is_missing_and_names_a_stale_creatinine() -> None:
    crcl, _ = _crcl_of(_obs("scr", "2160-0", 1.2, "mg/dL", "2026-10-20"))
    assert crcl.status is FactStatus.UNKNOWN
    assert set(crcl.missing) == {"scr_current_mg_dl", "weight_kg"}


def _withheld(*results: tuple[float, str, str]) -> bool:
    """Zoledronic acid from 2026-06-01; creatinine results (value, UCUM unit, date) read as the service does."""
    obs = ObsIndex(
        [
            _obs(f"scr{i}", "14682-9" if "mol" in unit else "2160-0", v, unit, day)
            for i, (v, unit, day) in enumerate(results)
        ]
    )
    issues: list[InputIssue] = []
    readings = lab_readings(obs, issues)
    za = MedicationUse(
        "MedicationRequest/za",
        frozenset({"bisphosphonate"}),
        ZOLEDRONIC_ACID,
        "request",
        "active",
        date(2026, 6, 1),
        None,
        False,
    )
    facts = {
        f.name: f for f in za_renal_facts([za], readings["scr_current_mg_dl"], date(2026, 11, 26), creatinine_si(obs))
    }
    return bool(facts["za_renal_deterioration"].value)


# BMA-03 in µmol/L [LABEL, clinical-rules.md §6.3]: baseline < 124 → +44; ≥ 124 → +88 (44/88.42 is 0.498 mg/dL).
@pytest.mark.parametrize(
    ("baseline", "current", "unit", "withhold"),
    [
        (88, 132, "umol/L", True),
        (88, 131, "umol/L", False),
        (123, 167, "umol/L", True),
        (124, 212, "umol/L", True),
        (124, 211, "umol/L", False),
        (88, 132, "µmol/L", True),
        (0.088, 0.132, "mmol/L", True),
    ],
)
def test_creatinine_rise_in_si_units_uses_the_labels_si_figures(
    baseline: float, current: float, unit: str, withhold: bool
) -> None:
    assert _withheld((baseline, unit, "2026-05-25"), (current, unit, "2026-11-20")) is withhold


def test_creatinine_rise_in_mixed_units_is_compared_in_mg_dl() -> None:
    # 88 µmol/L = 0.995 mg/dL; + 0.498 mg/dL < 0.5 (in µmol/L alone it would be + 44)
    assert _withheld((88, "umol/L", "2026-05-25"), (1.493, "mg/dL", "2026-11-20")) is False
    assert _withheld((88, "umol/L", "2026-05-25"), (1.495, "mg/dL", "2026-11-20")) is True


def test_earlier_si_rise_then_back_within_ten_percent() -> None:
    rise = (88, "umol/L", "2026-05-25"), (132, "umol/L", "2026-09-01")  # + 44: withhold
    assert _withheld(*rise, (96, "umol/L", "2026-11-20")) is False  # ≤ 1.10 × 88 = 96.8: resume
    assert _withheld(*rise, (97, "umol/L", "2026-11-20")) is True


def _use(
    ref: str, cls: str, status: str = "active", draft: bool = False, ingredient: str | None = None
) -> MedicationUse:
    return MedicationUse(ref, frozenset({cls}), ingredient, "request", status, START, None, draft)


def test_drug_class_facts_cite_only_records_of_their_class() -> None:
    calcium, vit_d = _use("MedicationRequest/ca", "calcium"), _use("MedicationRequest/d", "vitamin_d")
    za = _use("MedicationRequest/za", "bisphosphonate", ingredient=ZOLEDRONIC_ACID)
    old = _use("MedicationRequest/pam", "bisphosphonate", status="stopped")
    dmab = _use("MedicationRequest/dmab", "denosumab", status="draft", draft=True)
    letrozole = _use("MedicationRequest/let", "ai", status="stopped")
    facts = {f.name: f for f in medication_facts([calcium, vit_d, old, za, dmab, letrozole], date(2026, 4, 1))}
    assert facts["bisphosphonate_ordered"].sources == ("MedicationRequest/za",)  # the one that is ordered
    assert facts["denosumab_ordered"].sources == ("MedicationRequest/dmab",)
    assert facts["bma_ordered"].sources == ("MedicationRequest/za", "MedicationRequest/dmab")
    assert facts["bma_active"].sources == ("MedicationRequest/za",)
    assert facts["calcium_and_vitamin_d"].sources == ("MedicationRequest/ca", "MedicationRequest/d")
    assert (facts["ai_active"].value, facts["ai_active"].sources) == (False, ("MedicationRequest/let",))
    assert (facts["adt_active"].value, facts["adt_active"].sources) == (False, ())
    assert facts["radium_ordered"].sources == ()


def test_testosterone_in_pmol_per_l_is_converted() -> None:
    """fhir-mapping §4.7 "Convert units with UCUM": 1,735 pmol/L = 1.735 nmol/L ≈ 50.0 ng/dL (was invalid-value)."""
    issues: list[InputIssue] = []
    readings = lab_readings(ObsIndex([_obs("t", "2986-8", 1735, "pmol/L")]), issues)
    facts = {f.name: f for f in lab_facts(readings, 68, "male", date(2026, 11, 26), 30, issues)}
    assert not [i for i in issues if i.code == "invalid-value"]
    assert abs(float(facts["testosterone_ng_dl"].value) - 50.04) < 0.01


def test_two_measured_crcl_values_on_one_date_make_crcl_conflicting() -> None:
    """fhir-mapping §2.1: two different values on the latest date -> conflicting-input; a fresh creatinine must not
    silently replace them with a Cockcroft–Gault value."""
    crcl, _ = _crcl_of(
        _obs("c1", "35591-7", 45, "mL/min", "2026-11-20"),
        _obs("c2", "35591-7", 25, "mL/min", "2026-11-20"),
        _obs("scr", "2160-0", 2.0, "mg/dL", "2026-11-20"),
        _obs("wt", "29463-7", 72, "kg", "2026-11-20"),
    )
    assert crcl.status is FactStatus.CONFLICTING and crcl.value is None


def test_calcium_in_substance_units_is_read() -> None:
    """LOINC 2000-8 (Calcium [Moles/volume], mmol/L) is total calcium like 17861-6: 2.0 mmol/L = 8.016 mg/dL."""
    (reading,) = lab_readings(ObsIndex([_obs("ca", "2000-8", 2.0, "mmol/L")]), [])["calcium_mg_dl"]
    assert reading.value == 8.016


@pytest.mark.parametrize(("given", "recent"), [("2026-02-28", True), ("2026-02-27", False)])
def test_adt_within_six_calendar_months(given: str, recent: bool) -> None:
    """ORIOLE/STOMP "no ADT within 6 months" [KNOW] in calendar months, like the other 6-month windows (clinical-rules
    §2.4, BMA-05): as of 31 August, 28 February is within and 27 February is not."""
    from service.fhir.facts import FactOptions, patient_facts

    dose = {
        "resourceType": "MedicationAdministration",
        "id": "leu-1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "42375"}]
        },
        "effectiveDateTime": given,
    }
    pf = patient_facts("Patient/p1", [{"resourceType": "Patient", "id": "p1"}, dose], date(2026, 8, 31), FactOptions())
    assert pf.value("adt_last_6_months") is recent
