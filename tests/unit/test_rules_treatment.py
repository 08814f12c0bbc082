"""Treatment rules on facts: boundary values of every numeric threshold and the missing-input paths."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from service.bootstrap import Container
from service.domain.facts import LesionFacts, PatientFacts, known
from service.rules.evaluator import RuleResults
from tests.conftest import FIXTURES
from tests.unit.test_rules_core import BASE

TREATMENT: dict[str, Any] = {
    **BASE,
    "sex": "female",
    "age": 64,
    "has_active_distant_met": True,
    "bisphosphonate_ordered": False,
    "denosumab_ordered": False,
    "za_ordered": False,
    "bma_ordered": False,
    "bma_active": False,
    "dental_exam_recent": True,
    "calcium_low": False,
    "ca_corrected_mg_dl": 9.5,
    "calcium_and_vitamin_d": True,
    "needs_stabilisation": False,
    "brain_met_gt_3cm": False,
    "malignant_pleural_effusion": False,
    "mscc_or_neuro_deficit": False,
    "solitary_bone_lesion": False,
    "crcl": 80.0,
}


def lesion(i: int, site: str, **facts: Any) -> LesionFacts:
    values = {
        "lesion_organ": "bone",
        "lesion_site_class": site,
        "lesion_long_bone": site in ("weight-bearing-long-bone", "other-long-bone"),
        "lesion_fracture": "none",
        "lesion_painful": False,
    }
    values.update(facts)
    score = facts.get("lesion_mirels_score")
    if score is not None:  # as the reader does: the score decides "Mirels ≥ 9"
        values.setdefault("lesion_mirels_ge9", score >= 9)
    return LesionFacts(
        condition=f"Condition/met-{i}",
        organ="bone",
        site_class=site,
        facts={k: known(k, v, (f"Condition/met-{i}",)) for k, v in values.items() if v is not None},
        mirels_score=facts.get("lesion_mirels_score"),
    )


def run(container: Container, lesions: list[LesionFacts] | None = None, **changes: Any) -> RuleResults:
    pf = PatientFacts("Patient/t", date(2026, 11, 26))
    for name, value in {**TREATMENT, **changes}.items():
        if value is not None:
            pf.put(known(name, value))
    pf.lesions = lesions or []
    return container.engine.call(container.runner.evaluate, pf)


def recs(out: RuleResults, rule: str) -> dict[str, Any]:
    return {r.code: r for r in out.recommendations if r.rule == rule}


# --- BMA-02: zoledronic acid renal bands -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("crcl", "code", "dose"),
    [
        (29.9, "zoledronic-acid-not-recommended", None),
        (30.0, "zoledronic-acid-dose-reduction", "3.0"),
        (39.9, "zoledronic-acid-dose-reduction", "3.0"),
        (40.0, "zoledronic-acid-dose-reduction", "3.3"),
        (49.9, "zoledronic-acid-dose-reduction", "3.3"),
        (50.0, "zoledronic-acid-dose-reduction", "3.5"),
        (60.0, "zoledronic-acid-dose-reduction", "3.5"),
        (60.1, None, None),
    ],
)
def test_zoledronic_acid_crcl_bands(container: Container, crcl: float, code: str | None, dose: str | None) -> None:
    got = recs(run(container, crcl=crcl), "BMA-02")
    assert set(got) == ({code} if code else set())
    if dose:
        assert f"to {dose} mg" in got[code].summary
    if code == "zoledronic-acid-not-recommended":
        assert got[code].indicator == "warning"  # zoledronic acid not ordered yet


def test_zoledronic_acid_not_recommended_is_critical_when_ordered(container: Container) -> None:
    got = recs(run(container, crcl=25.0, za_ordered=True, bisphosphonate_ordered=True, bma_ordered=True), "BMA-02")
    assert got["zoledronic-acid-not-recommended"].indicator == "critical"


@pytest.mark.parametrize(
    ("crcl", "scr", "code", "says"),
    [
        (40.0, 3.1, "zoledronic-acid-not-recommended", "at serum creatinine > 3.0 mg/dL"),
        (60.0, 3.5, "zoledronic-acid-not-recommended", "at serum creatinine > 3.0 mg/dL"),
        (None, 3.5, "zoledronic-acid-not-recommended", "at serum creatinine > 3.0 mg/dL"),
        (25.0, 3.5, "zoledronic-acid-not-recommended", "at CrCl < 30 mL/min"),
        (40.0, 3.0, "zoledronic-acid-dose-reduction", "to 3.3 mg"),
        (40.0, None, "zoledronic-acid-dose-reduction", "to 3.3 mg"),
    ],
)
def test_not_recommended_and_dose_reduction_exclude_each_other(
    container: Container, crcl: float | None, scr: float | None, code: str, says: str
) -> None:
    """§6.2: CrCl < 30 (or SCr > 3.0 mg/dL) → not recommended; 30 ≤ CrCl ≤ 60 → dose reduction; never both, and
    the wording names the reason that holds."""
    got = recs(run(container, crcl=crcl, scr_current_mg_dl=scr), "BMA-02")
    assert set(got) == {code}
    assert says in got[code].summary and len(got[code].summary) < 140
    if code == "zoledronic-acid-not-recommended" and scr is not None and scr > 3.0 and (crcl is None or crcl >= 30):
        assert "CrCl < 30" not in got[code].summary
        assert f"Serum creatinine {scr:g} mg/dL > 3.0 mg/dL" in got[code].detail


def test_not_recommended_for_creatinine_is_critical_when_ordered(container: Container) -> None:
    ordered = {"za_ordered": True, "bisphosphonate_ordered": True, "bma_ordered": True}
    got = recs(run(container, crcl=45.0, scr_current_mg_dl=3.2, **ordered), "BMA-02")
    assert set(got) == {"zoledronic-acid-not-recommended"}
    assert got["zoledronic-acid-not-recommended"].indicator == "critical"


def test_missing_crcl_is_reported_for_bma_02(container: Container) -> None:
    out = run(container, crcl=None)
    assert any(i.code == "missing-input" and i.input == "crcl" and "BMA-02" in i.rules for i in out.issues)
    assert not recs(out, "BMA-02")


def test_start_bma_says_denosumab_preferred_when_crcl_below_30(container: Container) -> None:
    # contract §4: the detail says "denosumab preferred" when CrCl < 30, and only then
    said = "denosumab preferred"
    assert recs(run(container, crcl=20.0), "BMA-01")["start-bma"].detail.startswith(f"BMA-02: {said} (CrCl < 30")
    assert said not in recs(run(container, crcl=70.0), "BMA-01")["start-bma"].detail


def test_hypercalcaemia_threshold(container: Container) -> None:
    assert "hypercalcaemia-of-malignancy" in recs(run(container, ca_corrected_mg_dl=12.0), "BMA-02")
    assert "hypercalcaemia-of-malignancy" not in recs(run(container, ca_corrected_mg_dl=11.9), "BMA-02")


# BMA-04 (§6.4): correct-hypocalcaemia is critical "when denosumab is ordered or about to start", warning otherwise.
# About to start = a BMA planned (BMA-01) while BMA-02 leaves denosumab as the choice or cannot tell yet.
@pytest.mark.parametrize(
    ("changes", "indicator"),
    [
        ({"crcl": 75.0}, "warning"),  # planned, zoledronic acid or denosumab: no preference
        ({"crcl": 45.0, "scr_current_mg_dl": 2.0}, "warning"),
        ({"crcl": 25.0}, "critical"),  # planned, denosumab preferred (CrCl < 30)
        ({"crcl": 45.0, "scr_current_mg_dl": 3.2}, "critical"),  # planned, denosumab preferred (SCr > 3.0)
        ({"crcl": None}, "critical"),  # planned, choice still open: not read as "not denosumab"
        ({"crcl": 75.0, "denosumab_ordered": True, "bma_ordered": True}, "critical"),
        ({"crcl": 25.0, "za_ordered": True, "bisphosphonate_ordered": True, "bma_ordered": True}, "warning"),
    ],
)
def test_correct_hypocalcaemia_is_critical_before_denosumab(
    container: Container, changes: dict[str, Any], indicator: str
) -> None:
    got = recs(run(container, calcium_low=True, **changes), "BMA-04")
    assert got["correct-hypocalcaemia"].indicator == indicator


def test_double_antiresorptive_and_withhold(container: Container) -> None:
    both = run(container, bisphosphonate_ordered=True, denosumab_ordered=True, bma_ordered=True)
    assert "double-antiresorptive" in recs(both, "BMA-06")
    withhold = run(
        container, za_ordered=True, bisphosphonate_ordered=True, bma_ordered=True, za_renal_deterioration=True
    )
    assert recs(withhold, "BMA-03")["withhold-zoledronic-acid"].indicator == "critical"


# --- SURG-MIRELS ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("score", "code"),
    [
        (7, "ebrt-and-observation"),
        (8, "fixation-judgement"),
        (9, "prophylactic-fixation-referral"),
        (12, "prophylactic-fixation-referral"),
    ],
)
def test_mirels_bands(container: Container, score: int, code: str) -> None:
    out = run(container, lesions=[lesion(1, "other-long-bone", lesion_mirels_score=score)])
    got = recs(out, "SURG-MIRELS")
    assert set(got) == {code}
    assert got[code].evidence[0] == "Condition/met-1"  # lesion-level: the lesion first


def test_mirels_missing_for_a_long_bone_lesion(container: Container) -> None:
    out = run(container, lesions=[lesion(1, "weight-bearing-long-bone")])
    assert not recs(out, "SURG-MIRELS")
    assert any(i.code == "missing-input" and "SURG-MIRELS" in i.rules for i in out.issues)


def test_mirels_does_not_apply_to_spine(container: Container) -> None:
    out = run(container, lesions=[lesion(1, "spine")])
    assert not recs(out, "SURG-MIRELS")
    assert "minimally-invasive-stabilisation" in recs(out, "SURG-SITE")


# --- SABR-01 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("ecog", "code"), [(1, "sabr-consult"), (2, "sabr-criteria-not-met")])
def test_sabr_by_ecog(container: Container, ecog: int, code: str) -> None:
    assert set(recs(run(container, ecog=ecog), "SABR-01")) == {code}


def test_sabr_blocked_by_fixation_need(container: Container) -> None:
    assert set(recs(run(container, needs_stabilisation=True), "SABR-01")) == {"stabilise-before-sabr"}


def test_sabr_missing_ecog(container: Container) -> None:
    out = run(container, ecog=None)
    assert not recs(out, "SABR-01")
    assert any(i.code == "missing-input" and i.input == "ecog" and "SABR-01" in i.rules for i in out.issues)


# --- SURG-TECH --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("life", "code"), [(24.0, "endoprosthetic-resection"), (2.0, "nonoperative-care"), (8.0, "intramedullary-nailing")]
)
def test_surgical_technique_by_survival(container: Container, life: float, code: str) -> None:
    femur = lesion(1, "weight-bearing-long-bone", lesion_mirels_score=10, lesion_mirels_size="gt-2-3")
    out = run(container, lesions=[femur], life_expectancy=life)
    got = recs(out, "SURG-TECH")
    assert set(got) == {code} and got[code].indicator == "warning"


def test_surgical_technique_needs_survival(container: Container) -> None:
    femur = lesion(1, "weight-bearing-long-bone", lesion_mirels_score=10)
    out = run(container, lesions=[femur], life_expectancy=None)
    assert not recs(out, "SURG-TECH")
    assert any(i.input == "life_expectancy" and "SURG-TECH" in i.rules for i in out.issues)


# --- explanations -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "rule", "code", "words"),
    [
        ({"crcl": 45.0}, "BMA-02", "zoledronic-acid-dose-reduction", ["**45**", "30–39: 3.0 mg", "Zometa"]),
        ({"ecog": 2}, "SABR-01", "sabr-criteria-not-met", ["ECOG", "**2**", "SABR-COMET"]),
        ({}, "MDT-01", "mdt-review", ["tumor board", "Trovarelli 2025"]),
    ],
)
def test_details_name_inputs_values_thresholds_and_citation(
    container: Container, changes: dict[str, Any], rule: str, code: str, words: list[str]
) -> None:
    rec = recs(run(container, **changes), rule)[code]
    for word in words:
        assert word in rec.detail, word
    assert rec.citation in rec.detail


def test_detail_says_what_would_change_the_answer(container: Container) -> None:
    rec = recs(run(container, crcl=45.0), "BMA-02")["zoledronic-acid-dose-reduction"]
    change = rec.detail.split("**What would change this**")[1]
    assert "≥ 30 (now 45)" in change and "≤ 60 (now 45)" in change


def test_fracture_summary_names_the_body_site(container: Container) -> None:
    """clinical-rules.md §5.2: "Pathological fracture at <site>" names the site in words (laterality included), not
    the Condition reference; a lesion without a body site says so."""
    out = run(
        container,
        lesions=[
            lesion(1, "weight-bearing-long-bone", lesion_fracture="actual", lesion_body_site="left shaft of femur"),
            lesion(2, "unknown", lesion_fracture="actual"),
        ],
    )
    summaries = sorted(r.summary for r in out.recommendations if r.code == "urgent-fracture-assessment")
    assert summaries == [
        "Pathological fracture at Condition/met-2 (body site not recorded): urgent orthopaedic oncology assessment.",
        "Pathological fracture at left shaft of femur: urgent orthopaedic oncology assessment.",
    ]


def test_fracture_summary_site_from_the_bundle(container: Container) -> None:
    bundle = json.loads((FIXTURES / "tx-fix-fracture-condition-same-side" / "bundle.json").read_text())
    [result] = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    [fx] = [r for r in result["recommendations"] if r["code"] == "urgent-fracture-assessment"]
    assert fx["summary"].startswith("Pathological fracture at left shaft of femur:")


# --- RA223: the two contraindication summaries of clinical-rules §6.10 ------------------------------------------
@pytest.mark.parametrize(
    ("visceral", "labs_ok", "summary", "reasons"),
    [
        (True, True, "Contraindicated pattern: visceral metastases.", ["visceral metastases"]),
        (False, False, "Do not administer: ANC/platelets/Hb below threshold.", ["below threshold"]),
        (True, False, "Contraindicated pattern: visceral metastases.", ["visceral metastases", "below threshold"]),
    ],
)
def test_radium_223_contraindicated_says_why(
    container: Container, visceral: bool, labs_ok: bool, summary: str, reasons: list[str]
) -> None:
    out = run(
        container,
        primary_site="prostate",
        bone_mets=True,
        radium_ordered=True,
        visceral_mets=visceral,
        radium_labs_ok=labs_ok,
    )
    found = [r for r in out.recommendations if r.code == "radium-223-contraindicated"]
    assert len(found) == 1  # one recommendation per rule, code and subject
    assert found[0].summary == summary
    assert all(reason in found[0].detail for reason in reasons)


def test_start_bma_detail_names_the_prostate_label_restriction_only_in_prostate_cancer(container: Container) -> None:
    def detail(site: str) -> str:
        out = run(container, primary_site=site, bone_mets=True)
        return next(r.detail for r in out.recommendations if r.code == "start-bma")

    assert "prostate" not in detail("breast").split("**Inputs used**")[0].lower()
    assert "In prostate cancer the zoledronic acid label" in detail("prostate")
    assert not detail("breast").startswith(" ")
