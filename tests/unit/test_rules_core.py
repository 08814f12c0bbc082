"""Every branch of the core rules (OMD-01, OMD-02, OMD-03, OMD-CLASS, PS-01, MDT-01…03, DQ-01…06), on facts:
what fires, what stays silent because a known fact rules it out, and what says `missing-input` instead."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.bootstrap import Container
from service.domain.assessment import assessment
from service.domain.facts import Fact, FactStatus, PatientFacts, known
from service.domain.result import Recommendation
from service.rules.evaluator import RuleResults

BASE: dict[str, Any] = {
    "has_active_distant_met": True,
    "n_mets_reported": True,
    "cm_conflict": False,
    "diffuse_disease": False,
    "lesion_count_consistent": True,
    "n_mets": 3,
    "n_mets_min": 3,
    "n_mets_lifetime": 3,
    "n_mets_lifetime_min": 3,
    "max_mets_per_organ": 2,
    "bone_mets": True,
    "brain_mets": False,
    "primary_site": "breast",
    "history_polymetastatic": False,
    "previous_omd_dx": False,
    "months_primary_to_omd": 24,
    "on_systemic_therapy_at_omd_dx": False,
    "any_omd_lesion_progressing": False,
    "primary_treated_definitively": True,
    "days_since_primary_treatment": 400,
    "days_since_primary_dx": 800,
    "primary_progressing": False,
    "ecog": 0,
    "ecog_kps_conflict": False,
    "life_expectancy": 24.0,
    "receptor_conflict": False,
    "duplicate_conflict": False,
    "tumor_board_after_omd_dx": False,
    "n_lesions_planned_curative": 0,
    "adt_last_6_months": False,
}


def run(container: Container, **changes: Any) -> tuple[PatientFacts, RuleResults]:
    pf = PatientFacts("Patient/t", date(2026, 11, 26))
    for name, value in {**BASE, **changes}.items():
        if isinstance(value, Fact):
            pf.put(value)
        elif value is not None:
            pf.put(known(name, value))
    return pf, container.engine.call(container.runner.evaluate, pf)


def codes(out: RuleResults) -> set[str]:
    return {f"{r.rule}:{r.code}" for r in out.recommendations}


def issue(out: RuleResults, code: str, name: str) -> tuple[str, ...] | None:
    return next((i.rules for i in out.issues if i.code == code and i.input == name), None)


CONFLICTING_N_METS = Fact("n_mets", None, FactStatus.CONFLICTING, ("Observation/c1", "Observation/c2"))


# --- OMD-01 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({}, "oligometastatic"),
        ({"n_mets": 1, "n_mets_min": 1}, "oligometastatic"),
        ({"n_mets": 5, "n_mets_min": 5}, "oligometastatic"),
        ({"n_mets": 6, "n_mets_min": 6}, "polymetastatic"),
        ({"n_mets": 4, "n_mets_min": 4}, "oligometastatic"),
        ({"n_mets": None, "n_mets_min": 5, "n_mets_reported": False}, "possible"),
        ({"n_mets": None, "n_mets_min": 6}, "polymetastatic"),
        ({"diffuse_disease": True}, "polymetastatic"),
        # a count below the recorded sites, or one that disagrees with itself: n_mets conflicting (§3.1, §2.1)
        ({"lesion_count_consistent": False, "n_mets": CONFLICTING_N_METS, "n_mets_min": 1}, "unknown"),
        ({"n_mets": CONFLICTING_N_METS, "n_mets_min": 2}, "unknown"),
        ({"has_active_distant_met": False, "n_mets_reported": False, "n_mets": 0}, "not-applicable"),
        ({"has_active_distant_met": False, "n_mets_reported": False, "cm_category": "M1"}, "unknown"),
        # M0 and M1 on the latest date: the staging conflict leaves the state open, not "no metastasis"
        ({"has_active_distant_met": False, "n_mets_reported": False, "cm_conflict": True}, "unknown"),
    ],
)
def test_omd_state(container: Container, changes: dict[str, Any], state: str) -> None:
    pf, out = run(container, **changes)
    assert assessment(pf)["omdState"] == state  # an open omdState is reported as `unknown`
    assert ("OMD-01:confirm-lesion-count" in codes(out)) == (state == "possible")
    assert ("MDT-01:mdt-review" in codes(out)) == (state in ("oligometastatic", "possible"))


def test_an_open_omd_state_blocks_the_rules_it_could_still_satisfy(container: Container) -> None:
    # clinical-rules §1.1: a conflicting n_mets leaves omdState open (unknown) between oligometastatic and unknown;
    # MDT-01 and SABR-01 could still be true and are named, MDT-03 (polymetastatic) could not and is not
    pf, out = run(container, n_mets=CONFLICTING_N_METS, n_mets_min=2, bone_pain="severe")
    assert assessment(pf)["omdState"] == "unknown"
    blocked = issue(out, "conflicting-input", "n_mets") or ()
    assert {"OMD-01", "MDT-01", "SABR-01"} <= set(blocked) and "MDT-03" not in blocked
    assert not {"MDT-01:mdt-review", "SABR-01:sabr-consult", "MDT-03:palliative-care-referral"} & codes(out)
    # a state decided as `unknown` (cM1 without a metastasis Condition) has nothing left open to name
    pf, out = run(container, has_active_distant_met=False, n_mets_reported=False, cm_category="M1")
    assert assessment(pf)["omdState"] == "unknown" and not [i for i in out.issues if "MDT-01" in i.rules]


# --- OMD-03, PS-01 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "controlled"),
    [
        ({}, True),
        ({"days_since_primary_treatment": 90}, True),
        ({"days_since_primary_treatment": 89}, False),
        ({"primary_progressing": True}, False),
        ({"primary_treated_definitively": None, "days_since_primary_treatment": None}, None),
        (
            {"primary_treated_definitively": None, "days_since_primary_treatment": None, "days_since_primary_dx": 30},
            False,
        ),
    ],
)
def test_controlled_primary(container: Container, changes: dict[str, Any], controlled: bool | None) -> None:
    pf, out = run(container, **changes)
    assert pf.value("primary_controlled") is controlled
    if controlled is None:
        assert "OMD-03" in (issue(out, "missing-input", "primary_treated_definitively") or ())


def test_life_expectancy_unknown_blocks_trial_patterns_with_missing_input(container: Container) -> None:
    pf, out = run(container, life_expectancy=None)
    assert pf.value("life_expectancy_6m") is None
    assert "OMD-02" in (issue(out, "missing-input", "life_expectancy") or ())
    assert "OMD-02:sabr-comet-3-pattern" not in codes(out)


# --- OMD-02 trial patterns ------------------------------------------------------------------------------------
def test_sabr_comet_3_and_10(container: Container) -> None:
    assert "OMD-02:sabr-comet-3-pattern" in codes(run(container)[1])
    out = run(container, n_mets=4, n_mets_min=4)[1]
    assert "OMD-02:sabr-comet-10-pattern" in codes(out) and "OMD-02:sabr-comet-3-pattern" not in codes(out)
    assert "OMD-02:sabr-comet-3-pattern" not in codes(run(container, n_mets_lifetime=9)[1])
    assert "OMD-02:sabr-comet-3-pattern" not in codes(run(container, ecog=2)[1])


def test_sabr_comet_10_admits_six_to_ten_lesions(container: Container) -> None:
    pf, out = run(container, n_mets=8, n_mets_min=8)
    assert pf.value("omd_state") == "polymetastatic"
    assert "OMD-02:sabr-comet-10-pattern" in codes(out)


def test_stomp_oriole(container: Container) -> None:
    prostate = {"primary_site": "prostate", "castration_status": "sensitive"}
    assert "OMD-02:stomp-oriole-pattern" in codes(run(container, **prostate)[1])
    assert "OMD-02:stomp-oriole-pattern" not in codes(run(container, **prostate, brain_mets=True)[1])
    unknown_status = run(container, primary_site="prostate", adt_last_6_months=True)[1]
    assert "OMD-02:stomp-oriole-pattern" not in codes(unknown_status)
    assert "OMD-02" in (issue(unknown_status, "missing-input", "castration_status") or ())
    no_adt = run(container, primary_site="prostate")[1]  # hormone-sensitive by "no ADT in 6 months"
    assert "OMD-02:stomp-oriole-pattern" in codes(no_adt)


def test_adt_detail_adds_the_stomp_oriole_note_only_when_the_pattern_matches(container: Container) -> None:
    # clinical-rules §6.9: "When stomp-oriole-pattern matches (§3.3), the adt detail adds 'metastasis-directed
    # therapy may delay ADT in hormone-sensitive oligorecurrence'" — HORM-PC must run after OMD-02's outcomes.
    def adt(out: RuleResults) -> Recommendation:
        return next(r for r in out.recommendations if r.code == "adt")

    matched = run(container, primary_site="prostate", castration_status="sensitive", adt_active=False)[1]
    assert "OMD-02:stomp-oriole-pattern" in codes(matched)
    assert "metastasis-directed therapy may delay ADT in hormone-sensitive oligorecurrence" in adt(matched).detail
    assert adt(matched).summary == (
        "ADT is the cornerstone of metastatic prostate cancer treatment: consider an LHRH agonist ± "
        "androgen-receptor pathway inhibitor/abiraterone."
    )
    brain = run(container, primary_site="prostate", castration_status="sensitive", adt_active=False, brain_mets=True)
    assert "OMD-02:stomp-oriole-pattern" not in codes(brain[1])
    assert "metastasis-directed therapy" not in adt(brain[1]).detail


# --- OMD-CLASS ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "cls", "missing"),
    [
        ({"months_primary_to_omd": 6}, "synchronous", None),
        ({"months_primary_to_omd": 7}, "metachronous-oligorecurrence", None),
        ({"on_systemic_therapy_at_omd_dx": True}, "metachronous-oligoprogression", None),
        ({"previous_omd_dx": True}, "repeat-oligorecurrence", None),
        (
            {"previous_omd_dx": True, "on_systemic_therapy_at_omd_dx": True, "any_omd_lesion_progressing": True},
            "repeat-oligoprogression",
            None,
        ),
        ({"previous_omd_dx": True, "on_systemic_therapy_at_omd_dx": True}, "repeat-oligopersistence", None),
        ({"history_polymetastatic": True}, "induced-oligorecurrence", None),
        (
            {"history_polymetastatic": True, "on_systemic_therapy_at_omd_dx": True, "any_omd_lesion_progressing": True},
            "induced-oligoprogression",
            None,
        ),
        ({"history_polymetastatic": True, "on_systemic_therapy_at_omd_dx": True}, "induced-oligopersistence", None),
        ({"history_polymetastatic": None}, "unknown", "history_polymetastatic"),
        ({"previous_omd_dx": None}, "unknown", "previous_omd_dx"),
        ({"months_primary_to_omd": None}, "unknown", "months_primary_to_omd"),
        (
            {"previous_omd_dx": True, "on_systemic_therapy_at_omd_dx": True, "any_omd_lesion_progressing": None},
            "unknown",
            "any_omd_lesion_progressing",
        ),
        # possible (§2.1 gate): unknown because the exact count is missing, and the issue says so (§2.4)
        ({"n_mets": None, "n_mets_min": 2}, "unknown", "n_mets"),
        ({"n_mets": 7, "n_mets_min": 7}, "not-applicable", None),
        ({"has_active_distant_met": False, "n_mets_reported": False, "n_mets": 0}, "not-applicable", None),
    ],
)
def test_omd_class(container: Container, changes: dict[str, Any], cls: str, missing: str | None) -> None:
    pf, out = run(container, **changes)
    assert assessment(pf)["omdClass"] == cls
    if missing:
        assert "OMD-CLASS" in (issue(out, "missing-input", missing) or ())
    else:
        assert not [i for i in out.issues if "OMD-CLASS" in i.rules]


def test_history_known_true_does_not_ask_for_previous_omd(container: Container) -> None:
    _, out = run(container, history_polymetastatic=True, previous_omd_dx=None)
    assert issue(out, "missing-input", "previous_omd_dx") is None


# --- MDT ------------------------------------------------------------------------------------------------------
def test_mdt01_warning_then_info_after_tumor_board(container: Container) -> None:
    (warn,) = [r for r in run(container)[1].recommendations if r.code == "mdt-review"]
    assert warn.indicator == "warning" and warn.activity == "ServiceRequest"
    (info,) = [r for r in run(container, tumor_board_after_omd_dx=True)[1].recommendations if r.code == "mdt-review"]
    assert info.indicator == "info" and info.activity is None


def test_mdt01_detail_lists_the_other_recommendations(container: Container) -> None:
    (mdt,) = [r for r in run(container)[1].recommendations if r.code == "mdt-review"]
    assert "SABR-COMET-3" in mdt.detail and mdt.detail.rstrip().endswith("For discussion at tumor board.")


def test_mdt02_treat_all_lesions(container: Container) -> None:
    out = run(container, n_lesions_planned_curative=1, n_lesions_not_planned=2)[1]
    assert "MDT-02:treat-all-lesions" in codes(out)
    assert "MDT-02:treat-all-lesions" not in codes(
        run(container, n_lesions_planned_curative=3, n_lesions_not_planned=0)[1]
    )
    assert "MDT-02:treat-all-lesions" not in codes(
        run(container, n_lesions_planned_curative=0, n_lesions_not_planned=3)[1]
    )


@pytest.mark.parametrize(
    ("changes", "fires"),
    [
        ({"bone_pain": "moderate"}, True),
        ({"bone_pain": "none", "ecog": 3}, True),
        ({"bone_pain": "none", "ecog": 2}, False),
        ({"bone_pain": "mild", "bone_mets": False}, False),
    ],
)
def test_mdt03_palliative_care(container: Container, changes: dict[str, Any], fires: bool) -> None:
    out = run(container, n_mets=9, n_mets_min=9, **changes)[1]
    assert ("MDT-03:palliative-care-referral" in codes(out)) is fires


def test_mdt03_missing_bone_pain_is_reported(container: Container) -> None:
    out = run(container, n_mets=9, n_mets_min=9, ecog=1)[1]
    assert "MDT-03" in (issue(out, "missing-input", "bone_pain") or ())


# --- DQ -------------------------------------------------------------------------------------------------------
def test_dq01_m0_with_metastasis(container: Container) -> None:
    conflicting = Fact("cm_category", None, FactStatus.CONFLICTING, ("Observation/m0",))
    out = run(container, cm_category_recorded="M0", cm_category=conflicting)[1]
    assert "DQ-01:data-conflict" in codes(out)
    assert "DQ-01" in (issue(out, "conflicting-input", "cm_category") or ())
    assert "DQ-01:data-conflict" not in codes(run(container, cm_category_recorded="M1")[1])
    assert issue(run(container)[1], "missing-input", "cm_category_recorded") is None


def test_dq02_conflicting_ecog_blocks_rules_that_need_it(container: Container) -> None:
    ecog = Fact("ecog", None, FactStatus.CONFLICTING, ("Observation/e", "Observation/k"))
    out = run(container, ecog=ecog, ecog_kps_conflict=True)[1]
    assert "DQ-02:data-conflict" in codes(out)
    rules = issue(out, "conflicting-input", "ecog") or ()
    assert "DQ-02" in rules and "OMD-02" in rules
    assert "OMD-02:sabr-comet-3-pattern" not in codes(out)


def test_dq03_and_dq06(container: Container) -> None:
    out = run(container, receptor_conflict=True, duplicate_conflict=True)[1]
    assert {"DQ-03:data-conflict", "DQ-06:data-conflict"} <= codes(out)


def test_dq05_stale_ecog_is_stale_input(container: Container) -> None:
    stale = Fact("ecog", 0, FactStatus.STALE, ("Observation/old",), date(2026, 1, 1))
    out = run(container, ecog=stale)[1]
    assert "OMD-02" in (issue(out, "stale-input", "ecog") or ())
    assert issue(out, "missing-input", "ecog") is None


def test_known_false_raises_nothing(container: Container) -> None:
    # Not metastatic: every rule is ruled out by known facts, so no missing-input at all for OMD/MDT rules.
    _, out = run(container, has_active_distant_met=False, n_mets_reported=False, n_mets=0, history_polymetastatic=None)
    assert not [i for i in out.issues if {"OMD-CLASS", "MDT-01", "MDT-02", "MDT-03"} & set(i.rules)]


def test_derived_values_of_several_lesions_are_all_listed_in_one_issue() -> None:
    # clinical-rules §1.1: derived values are listed with `derived-input`, one entry per (code, fact): every lesion
    # whose Mirels site was derived is named, not only the first
    from service.domain.result import Issue
    from service.rules.evaluator import _merge_issues

    first = Issue("derived-input", "mirels", ("SURG-MIRELS",), "Mirels site of Condition/m1 taken from its body site")
    second = Issue("derived-input", "mirels", ("SURG-MIRELS",), "Mirels site of Condition/m2 taken from its body site")
    (merged,) = _merge_issues([first, second, first])
    assert merged.detail == f"{first.detail}; {second.detail}"
    missing = [Issue("missing-input", "ecog", (rule,), f"ecog: unknown ({rule})") for rule in ("SABR-01", "OMD-02")]
    (one,) = _merge_issues(missing)
    assert one.rules == ("SABR-01", "OMD-02") and one.detail == missing[0].detail
