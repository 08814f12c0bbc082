"""The `assessment` object of contract.md §3, read off the patient's facts after the rules ran."""

from __future__ import annotations

from typing import Any

from service.domain.facts import Fact, FactStatus, LesionFacts, PatientFacts

# Facts derived by rules that the assessment reports: when one stays undecided, its open inputs are issues even though
# no recommendation waits for it.
REPORTED_FACTS = frozenset({"omd_state", "omd_class", "primary_controlled"})
MIRELS_RISK = ((7, "low"), (8, "borderline"))  # Mirels 1989: ≤ 7 low, 8 borderline, ≥ 9 high


def mirels_risk(score: int) -> str:
    return next((risk for limit, risk in MIRELS_RISK if score <= limit), "high")


def assessment(pf: PatientFacts) -> dict[str, Any]:
    n_mets = pf.value("n_mets")
    count = n_mets if n_mets is not None else pf.value("n_mets_min")
    return {
        "omdState": pf.value("omd_state") or "unknown",
        "omdClass": pf.value("omd_class") or "unknown",
        "lesionCount": {"value": count, "exact": n_mets is not None},
        "organs": list(pf.organs),
        "boneOnly": pf.value("bone_only"),
        "visceral": pf.value("visceral_mets"),
        "controlledPrimary": pf.value("primary_controlled"),
        "ecog": _shown(pf, "ecog"),
        "crcl": _shown(pf, "crcl"),
        # one entry per Condition: differing copies of one id (DQ-06) are one lesion, the first copy shown
        "lesions": [
            _lesion(lesion) for lesion in {lesion.condition: lesion for lesion in reversed(pf.lesions)}.values()
        ][::-1],
    }


def _shown(pf: PatientFacts, name: str) -> Any:
    """A value the record holds, also when it is older than its window (the `stale-input` issue says so); `null`
    only when unknown or conflicting (contract.md §3)."""
    fact = pf.facts.get(name)
    return fact.value if fact is not None and fact.status in (FactStatus.KNOWN, FactStatus.STALE) else None


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


# The five answers of the ESTRO/EORTC 2020 decision tree (clinical-rules §2.2), as the summary card lists them (§2.5).
CLASS_QUESTIONS = (
    ("history_polymetastatic", "Polymetastatic disease before this OMD diagnosis"),
    ("previous_omd_dx", "Previous diagnosis of OMD"),
    ("months_primary_to_omd", "Primary diagnosis → OMD diagnosis (months; ≤ 6 = synchronous)"),
    ("on_systemic_therapy_at_omd_dx", "OMD diagnosed during active systemic therapy"),
    ("any_omd_lesion_progressing", "Any OMD lesion progressing on current imaging"),
)


def class_answers(pf: PatientFacts) -> list[str]:
    """One line per question of the classification: the answer, and whether it (or a date it rests on) was
    derived rather than recorded."""
    lines = []
    for name, question in CLASS_QUESTIONS:
        fact = pf.facts.get(name)
        shown = _answer(fact)
        if name == "months_primary_to_omd":
            dates = [pf.facts.get(d) for d in ("primary_dx_date", "omd_dx_date")]
            if all(d is not None and d.usable for d in dates):
                shown += f" ({dates[0].value if dates[0] else ''} → {dates[1].value if dates[1] else ''})"
            derived = any(d is not None and d.usable and d.derived for d in dates)
        else:
            derived = fact is not None and fact.usable and fact.derived
        lines.append(f"{question}: **{shown}**{' (derived)' if derived else ''}")
    return lines


def _answer(fact: Fact | None) -> str:
    if fact is None or fact.status is FactStatus.UNKNOWN:
        return "unknown"
    if fact.status is FactStatus.CONFLICTING:
        return "conflicting"
    if isinstance(fact.value, bool):
        return "yes" if fact.value else "no"
    return str(fact.value)
