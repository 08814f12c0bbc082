"""Observations → facts: the local input codes (contract.md §2), receptors (DQ-03), TNM cM (DQ-01) and
disease status (fhir-mapping.md §2, §3.2–§3.5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.domain.facts import Fact, FactStatus, InputIssue, Scalar, known, unknown
from service.fhir import codes
from service.fhir.conditions import CancerPicture, Metastasis, is_local
from service.fhir.readings import (
    Invalid,
    Reading,
    by_focus,
    latest,
    read_all,
    to_fact,
    usable,
    value_bool,
    value_code_in,
)
from service.fhir.util import LOCAL, LOINC, SNOMED, UCUM, Resource, codings, has_code, rid

Extract = Callable[[Resource], Scalar | None]


def _date_value(obs: Resource) -> str:
    from service.fhir.util import effective_date

    day = effective_date(obs)
    if day is None:
        raise Invalid("omd-diagnosis needs effectiveDateTime")
    return day.isoformat()


_MONTHS_PER = {"mo": 1.0, "d": 12 / 365.25, "wk": 12 / 52.1775, "a": 12.0}


def _months(obs: Resource) -> float:
    q = obs.get("valueQuantity")
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        raise Invalid("valueQuantity in months expected")
    unit = q.get("code") or q.get("unit")
    if unit not in _MONTHS_PER or (q.get("system") not in (None, UCUM)):
        raise Invalid(f"unit {unit!r} is not one of mo, wk, d, a (UCUM)")
    if q["value"] < 0:
        raise Invalid("negative life expectancy")
    return round(float(q["value"]) * _MONTHS_PER[str(unit)], 2)


@dataclass(frozen=True, slots=True)
class LocalInput:
    code: str
    fact: str
    extract: Extract
    closed_default: Scalar | None = None  # closed-world facts (clinical-rules.md §1.1)


LOCAL_INPUTS = (
    LocalInput("polymetastatic-history", "history_polymetastatic", value_bool),
    LocalInput("previous-omd", "previous_omd_dx", value_bool),
    LocalInput("omd-diagnosis", "omd_dx_date", _date_value),
    LocalInput("life-expectancy", "life_expectancy", _months),
    LocalInput("bone-pain", "bone_pain", value_code_in(["none", "mild", "moderate", "severe"], LOCAL)),
    LocalInput("menopausal-status", "menopausal_status", value_code_in(["pre", "peri", "post"], LOCAL)),
    LocalInput("castration-status", "castration_status", value_code_in(["sensitive", "resistant"], LOCAL)),
    LocalInput("spinal-cord-compression", "mscc_or_neuro_deficit", value_bool, False),
    LocalInput("oral-open-lesion", "oral_open_lesion", value_bool),
    LocalInput("invasive-dental-planned", "invasive_dental_planned", value_bool),
)


def local_facts(obs: list[Resource], issues: list[InputIssue]) -> list[Fact]:
    facts: list[Fact] = []
    for spec in LOCAL_INPUTS:
        mine = [o for o in obs if is_local(o, spec.code)]
        readings = [r for r in read_all(mine, spec.extract, spec.fact, issues) if r.focus is None]
        fact = to_fact(spec.fact, latest(readings))
        if fact.status is FactStatus.UNKNOWN and spec.closed_default is not None:
            fact = known(spec.fact, spec.closed_default)
        facts.append(fact)
    return facts + receptor_facts(obs, issues)


# --- receptors (DQ-03) -------------------------------------------------------------------------------------


def _receptor(obs: Resource) -> str | None:
    concept = obs.get("valueCodeableConcept")
    pairs = set(codings(concept))
    if pairs & codes.POSITIVE:
        return "positive"
    if pairs & codes.NEGATIVE:
        return "negative"
    if pairs & codes.EQUIVOCAL:
        return "equivocal"
    text = " ".join(str(c.get("display", "")) for c in (concept or {}).get("coding") or []).lower()
    text += " " + str((concept or {}).get("text", "")).lower()
    for word in ("negative", "positive", "equivocal"):
        if word in text:
            return word
    q = obs.get("valueQuantity")
    if isinstance(q, dict) and isinstance(q.get("value"), int | float) and q.get("unit") in ("%", None):
        return "positive" if q["value"] >= 1 else "negative"
    return None


RECEPTORS = (("er", codes.ER_LOINC), ("pr", codes.PR_LOINC), ("her2", codes.HER2_LOINC))


def receptor_facts(obs: list[Resource], issues: list[InputIssue]) -> list[Fact]:
    facts: list[Fact] = []
    conflicting: list[str] = []
    for name, loincs in RECEPTORS:
        mine = [o for o in obs if has_code(o.get("code"), LOINC, loincs)]
        selected = latest(read_all(mine, _receptor, name, issues))
        fact = to_fact(name, selected)
        if fact.status is FactStatus.CONFLICTING:
            conflicting.extend(fact.sources)
        facts.append(fact)
    facts.append(known("receptor_conflict", bool(conflicting), tuple(conflicting)))
    return facts


# --- staging (DQ-01) ---------------------------------------------------------------------------------------


def _m_category(obs: Resource) -> str | None:
    for system, code in codings(obs.get("valueCodeableConcept")):
        if system == SNOMED:
            return "M0" if code in codes.CM0_SNOMED else "M1"
        upper = code.upper().lstrip("CP")
        if upper.startswith("M0"):
            return "M0"
        if upper in ("M1", "M1A", "M1B", "M1C"):
            return upper[:2] + upper[2:].lower()
    return None


def _is_m_category(obs: Resource) -> bool:
    code = obs.get("code")
    return has_code(code, SNOMED, codes.M_CATEGORY_SNOMED) or has_code(code, LOINC, codes.M_CATEGORY_LOINC)


def staging_facts(obs: list[Resource], picture: CancerPicture, issues: list[InputIssue]) -> list[Fact]:
    selected = latest(read_all([o for o in obs if _is_m_category(o)], _m_category, "cm_category", issues))
    recorded = to_fact("cm_category_recorded", selected)
    category = to_fact("cm_category", selected)
    if category.value == "M0" and picture.distant:
        category = Fact("cm_category", None, FactStatus.CONFLICTING, category.sources, category.effective)
    return [recorded, category]


# --- disease status, progression ---------------------------------------------------------------------------


def _progressing(obs: Resource) -> bool | None:
    if is_local(obs, "lesion-progressing"):
        return value_bool(obs)
    if has_code(obs.get("code"), LOINC, codes.DISEASE_STATUS):
        return any(c == codes.WORSENED for _, c in codings(obs.get("valueCodeableConcept")))
    return None


def _progress_readings(obs: list[Resource]) -> dict[str | None, list[Reading]]:
    relevant = [
        o for o in obs if is_local(o, "lesion-progressing") or has_code(o.get("code"), LOINC, codes.DISEASE_STATUS)
    ]
    return by_focus(read_all(relevant, _progressing, "any_omd_lesion_progressing", []))


def status_facts(obs: list[Resource], picture: CancerPicture) -> list[Fact]:
    groups = _progress_readings(obs)
    primary = [r for pid in picture.primary_ids for r in groups.get(pid, [])]
    facts = [to_fact("primary_progressing", latest(primary))]
    lesions = [latest(groups.get(m.condition, [])) for m in picture.distant]
    sources = tuple(s for sel in lesions if sel for s in sel.sources)
    if any(sel and sel.value is True for sel in lesions):
        facts.append(known("any_omd_lesion_progressing", True, sources))
    elif lesions and all(sel and sel.value is False for sel in lesions):
        facts.append(known("any_omd_lesion_progressing", False, sources))
    else:
        facts.append(unknown("any_omd_lesion_progressing"))
    return facts + _history(picture)


def _history(picture: CancerPicture) -> list[Fact]:
    """Fallback for history_polymetastatic when no local Observation says it (derived): an earlier total
    lesion count > 5, or past diffuse disease (clinical-rules.md §2.6)."""
    current = picture.total_count
    earlier = [
        r
        for r in picture.earlier_counts
        if current and r.effective and current.effective and r.effective < current.effective and int(r.value) > 5
    ]
    past_diffuse = [m for m in picture.mets if not m.active and m.organ in codes.DIFFUSE_ORGANS]
    sources = tuple(r.source for r in earlier) + tuple(m.condition for m in past_diffuse)
    if sources:
        return [known("history_polymetastatic_derived", True, sources, derived=True)]
    return []


# --- lesion-level ------------------------------------------------------------------------------------------


def lesion_facts(met: Metastasis, obs: list[Resource], picture: CancerPicture) -> list[Fact]:
    groups = _progress_readings(obs)
    facts = [
        known("lesion_organ", met.organ, (met.condition,)),
        known("lesion_site_class", met.site_class, (met.condition,)),
        to_fact("lesion_progressing", latest(groups.get(met.condition, []))),
    ]
    fracture = _fracture(met, obs, picture)
    if fracture:
        facts.append(fracture)
    return facts


def _fracture(met: Metastasis, obs: list[Resource], picture: CancerPicture) -> Fact | None:
    if met.organ != "bone":
        return None
    extract = value_code_in(["none", "impending", "actual"], LOCAL)
    readings = [
        r
        for r in read_all([o for o in obs if is_local(o, "fracture-status")], extract, "fracture", [])
        if r.focus == met.condition
    ]
    selected = latest(readings)
    same_site = [
        rid(c)
        for c in picture.fractures
        if set(codings(c.get("bodySite") or [])) & {(SNOMED, s) for s in met.body_sites}
    ]
    if same_site:
        return known("lesion_fracture", "actual", (met.condition, *same_site))
    if selected and selected.value is not None:
        return known("lesion_fracture", selected.value, (met.condition, *selected.sources), selected.effective)
    return known("lesion_fracture", "none", (met.condition,))  # closed world: no record → none


__all__ = ["lesion_facts", "local_facts", "staging_facts", "status_facts", "usable"]
