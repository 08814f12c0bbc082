"""The `assessment` object of contract.md §3, read off the patient's facts after the rules ran."""

from __future__ import annotations

from typing import Any

from service.domain.facts import LesionFacts, PatientFacts

# Facts derived by rules that the assessment reports: when one stays undecided, its open inputs are issues even though
# no recommendation waits for it.
REPORTED_FACTS = frozenset({"omd_state", "omd_class", "primary_controlled"})
MIRELS_RISK = ((7, "low"), (8, "borderline"))  # Mirels 1989: ≤ 7 low, 8 borderline, ≥ 9 high


def mirels_risk(score: int) -> str:
    return next((risk for limit, risk in MIRELS_RISK if score <= limit), "high")


def assessment(pf: PatientFacts) -> dict[str, Any]:
    n_mets = pf.value("n_mets")
    count = n_mets if n_mets is not None else pf.value("n_mets_min")
    ecog = pf.facts.get("ecog")
    return {
        "omdState": pf.value("omd_state") or "unknown",
        "omdClass": pf.value("omd_class") or "unknown",
        "lesionCount": {"value": count, "exact": n_mets is not None},
        "organs": list(pf.organs),
        "boneOnly": pf.value("bone_only"),
        "visceral": pf.value("visceral_mets"),
        "controlledPrimary": pf.value("primary_controlled"),
        "ecog": ecog.value if ecog is not None and ecog.value is not None else None,
        "crcl": pf.value("crcl"),
        "lesions": [_lesion(lesion) for lesion in pf.lesions],
    }


def _lesion(lesion: LesionFacts) -> dict[str, Any]:
    mirels = None
    if lesion.mirels_score is not None:
        mirels = {"score": lesion.mirels_score, "risk": mirels_risk(lesion.mirels_score)}
    return {
        "condition": lesion.condition,
        "organ": lesion.organ,
        "siteClass": lesion.site_class,
        "mirels": mirels,
        "fracture": lesion.fracture,
    }
