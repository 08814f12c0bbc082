"""Observations → facts: the local input codes (contract.md §2), receptors (DQ-03), TNM cM (DQ-01) and
disease status (fhir-mapping.md §2, §3.2–§3.5)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from service.domain.facts import Fact, FactStatus, InputIssue, Scalar, known, unknown
from service.fhir import codes
from service.fhir.conditions import (
    CancerPicture,
    Metastasis,
    is_active,
    is_local,
    same_body_site,
    sided_body_sites,
)
from service.fhir.readings import (
    Invalid,
    ObsIndex,
    Reading,
    Selected,
    by_focus,
    focus_of,
    latest,
    read_all,
    to_fact,
    usable,
    value_bool,
    value_code_in,
)
from service.fhir.util import LOCAL, LOINC, SNOMED, UCUM, Resource, codings, effective_date, extensions, has_code, rid

Extract = Callable[[Resource], Scalar | None]


def _date_value(obs: Resource) -> str:
    day = effective_date(obs)
    if day is None:
        raise Invalid("omd-diagnosis needs effectiveDateTime")
    return day.isoformat()


_MONTHS_PER = {"mo": 1.0, "d": 12 / 365.25, "wk": 12 / 52.1775, "a": 12.0}
# a human-readable `unit` without a UCUM `code`, as integration engines often send it
_UNIT_WORDS = {
    "month": "mo",
    "months": "mo",
    "day": "d",
    "days": "d",
    "week": "wk",
    "weeks": "wk",
    "year": "a",
    "years": "a",
}


def _months(obs: Resource) -> float:
    q = obs.get("valueQuantity")
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        raise Invalid("valueQuantity in months expected")
    unit = q.get("code") or _UNIT_WORDS.get(str(q.get("unit")).strip().lower(), q.get("unit"))
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


def local_facts(obs: ObsIndex, issues: list[InputIssue]) -> list[Fact]:
    facts: list[Fact] = []
    for spec in LOCAL_INPUTS:
        mine = obs.local(spec.code)
        readings = [r for r in read_all(mine, spec.extract, spec.fact, issues) if r.focus is None]
        fact = to_fact(spec.fact, latest(readings))
        # closed world (§1.1): no record means the default; a record with an invalid value (DQ-04, discarded) is
        # not "no record" and leaves the fact unknown, and two values on one date stay conflicting
        recorded = any(usable(o) and focus_of(o) is None for o in mine)
        if fact.status is FactStatus.UNKNOWN and spec.closed_default is not None and not recorded:
            fact = known(spec.fact, spec.closed_default)
        facts.append(fact)
    return facts + receptor_facts(obs, issues)


# --- receptors (DQ-03) -------------------------------------------------------------------------------------


_NEGATED = re.compile(r"\b(?:not|no)\s+(?:positive|negative|detected|amplified|equivocal)\b")
_IHC_SCORE = re.compile(r"(?<![\d.])([0-3])\s*\+")  # HER2 IHC "3+", "2+", "1+"
_IHC_ZERO = re.compile(r"\b(?:ihc|score)\s*:?\s*0\b")
_IHC_RESULT = {"3": "positive", "2": "equivocal", "1": "negative", "0": "negative"}


def _receptor_reader(quantity_percent: bool, ihc_scores: bool) -> Callable[[Resource], str | None]:
    """positive / negative / equivocal from the coded answer, else the words of the display, text or valueString
    (a negated wording stays unread). ER/PR also read a % of stained cells (fhir-mapping §2: "or Quantity % for
    ER/PR"; ≥ 1 % positive); HER2 reads an IHC score (clinical-rules §6.8: 3+ positive, 2+ equivocal until ISH,
    0/1+ negative [KNOW, ASCO/CAP]) and no Quantity: a FISH ratio has no threshold in the spec."""

    def read(obs: Resource) -> str | None:
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
        if isinstance(obs.get("valueString"), str):
            text += " " + str(obs["valueString"]).lower()
        if _NEGATED.search(text):
            return None
        for word in ("negative", "positive", "equivocal"):
            if word in text:
                return word
        if ihc_scores:
            score = _IHC_SCORE.search(text)
            if score:
                return _IHC_RESULT[score.group(1)]
            if _IHC_ZERO.search(text) or text.strip() == "0":
                return "negative"
        q = obs.get("valueQuantity")
        percent = isinstance(q, dict) and (q.get("unit") in ("%", None) or q.get("code") == "%")
        if quantity_percent and percent and isinstance(q, dict) and isinstance(q.get("value"), int | float):
            return "positive" if q["value"] >= 1 else "negative"
        return None

    return read


def _decisive_first(readings: list[Reading]) -> list[Reading]:
    """HER2: an equivocal IHC and an ISH result on the same date are not a conflict — the ISH result decides
    (clinical-rules §6.8: IHC 2+ is equivocal until the reflex ISH is done)."""
    decided = {r.effective for r in readings if r.value != "equivocal"}
    return [r for r in readings if r.value != "equivocal" or r.effective not in decided]


RECEPTORS = (("er", codes.ER_LOINC), ("pr", codes.PR_LOINC), ("her2", codes.HER2_LOINC))


def receptor_facts(obs: ObsIndex, issues: list[InputIssue]) -> list[Fact]:
    facts: list[Fact] = []
    conflicting: list[str] = []
    for name, loincs in RECEPTORS:
        mine = obs.coded(LOINC, loincs)
        readings = read_all(mine, _receptor_reader(name != "her2", name == "her2"), name, issues)
        selected = latest(_decisive_first(readings) if name == "her2" else readings)
        fact = to_fact(name, selected)
        if fact.value == "equivocal":  # IHC 2+ needs reflex ISH [KNOW, ASCO/CAP]: not yet a decision input
            fact = Fact(name, None, FactStatus.UNKNOWN, fact.sources, fact.effective)
            # clinical-rules §6.8: `equivocal` → missing-input her2 with the detail "ISH result needed"
            where = ", ".join(fact.sources)
            issues.append(InputIssue("missing-input", name, f"HER2 equivocal (IHC 2+, {where}): ISH result needed"))
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


def staging_facts(obs: ObsIndex, picture: CancerPicture, issues: list[InputIssue]) -> list[Fact]:
    m_obs = [*obs.coded(SNOMED, codes.M_CATEGORY_SNOMED), *obs.coded(LOINC, codes.M_CATEGORY_LOINC)]
    readings = read_all(m_obs, _m_category, "cm_category", issues)
    selected = latest(readings)
    m0_and_m1 = False
    if selected is not None and selected.conflicting:
        # M1 and M1a on one date both say "distant metastasis"; only M0 against M1 is a conflict (fhir-mapping §2.1)
        on_date = {r.value for r in readings if r.effective == selected.effective}
        m0_and_m1 = "M0" in on_date
        if not m0_and_m1:
            selected = Selected("M1", selected.effective, selected.sources, False)
        else:
            when = selected.effective.isoformat() if selected.effective else "the same (undated) record"
            rules = ("DQ-01",) if picture.distant else ("DQ-01", "OMD-01")
            sources = ", ".join(selected.sources)
            detail = f"TNM distant metastasis category: M0 and M1 both recorded on {when} ({sources})"
            issues.append(InputIssue("conflicting-input", "cm_category", detail, rules))
    recorded = to_fact("cm_category_recorded", selected)
    category = to_fact("cm_category", selected)
    if category.value == "M0" and picture.distant:
        category = Fact("cm_category", None, FactStatus.CONFLICTING, category.sources, category.effective)
    conflict = known("cm_conflict", m0_and_m1, selected.sources if m0_and_m1 and selected else ())
    return [recorded, category, conflict]


# --- disease status, progression ---------------------------------------------------------------------------


UNDETERMINED = "undetermined"


def _progressing(obs: Resource) -> bool | str | None:
    """True (worsened), False (any other result), or UNDETERMINED for a status of "Patient condition undetermined":
    that is not a non-progressing result (fhir-mapping.md §2: `false` only if every OMD lesion has one)."""
    if is_local(obs, "lesion-progressing"):
        return value_bool(obs)
    if has_code(obs.get("code"), LOINC, codes.DISEASE_STATUS):
        found = {c for _, c in codings(obs.get("valueCodeableConcept"))}
        if codes.WORSENED in found:
            return True
        return UNDETERMINED if found == {codes.UNDETERMINED} else False
    return None


# CancerDiseaseStatus evidence type (mCODE STU2+ and STU1 spellings, fhir-mapping.md §1); 363679005 = imaging
EVIDENCE_TYPE_URLS = ("mcode-cancer-disease-status-evidence-type", "mcode-evidence-type")
IMAGING = "363679005"


def imaging_status_dates(obs: ObsIndex) -> list[tuple[date, str]]:
    """(effective date, id) of every usable CancerDiseaseStatus whose evidence type is imaging: the fallback for
    `omd_dx_date` after the metastasis onsets (fhir-mapping.md §2)."""
    found = []
    for o in obs.coded(LOINC, codes.DISEASE_STATUS):
        day = effective_date(o)
        if day is None or not usable(o):
            continue
        evidence = {c for ext in extensions(o, EVIDENCE_TYPE_URLS) for c in codings(ext.get("valueCodeableConcept"))}
        if (SNOMED, IMAGING) in evidence:
            found.append((day, rid(o)))
    return found


def _progress_readings(obs: ObsIndex) -> dict[str | None, list[Reading]]:
    if "progress" not in obs.memo:  # read once per patient, asked once per lesion
        wanted = {id(o) for o in [*obs.local("lesion-progressing"), *obs.coded(LOINC, codes.DISEASE_STATUS)]}
        relevant = [o for o in obs if id(o) in wanted]
        obs.memo["progress"] = by_focus(read_all(relevant, _progressing, "any_omd_lesion_progressing", []))
    groups: dict[str | None, list[Reading]] = obs.memo["progress"]
    return groups


def status_facts(obs: ObsIndex, picture: CancerPicture) -> list[Fact]:
    groups = _progress_readings(obs)
    primary = [r for pid in picture.primary_ids for r in groups.get(pid, [])]
    # OMD-03 names only a missing treatment record as the cause of an unknown controlled primary
    # (clinical-rules.md §3.4), so no disease status on the primary reads as "not progressing".
    progressing = to_fact("primary_progressing", latest(primary))
    # a local recurrence (the primary's clinicalStatus recurrence or relapse) is progression at the primary site
    # (clinical-rules.md §1.2 `primary_progressing` "or local recurrence"; §3.4 reads the primary's clinicalStatus)
    recurred = [rid(p) for p in picture.primaries if _clinical_status(p) in ("recurrence", "relapse")]
    if recurred:
        progressing = known("primary_progressing", True, (*recurred, *progressing.sources))
    elif progressing.status is FactStatus.UNKNOWN or progressing.value == UNDETERMINED:
        progressing = known("primary_progressing", False, progressing.sources, progressing.effective)
    facts = [progressing]
    lesions = [latest(groups.get(m.condition, [])) for m in picture.distant]
    sources = tuple(s for sel in lesions if sel for s in sel.sources)
    conflicts = tuple(s for sel in lesions if sel and sel.conflicting for s in sel.sources)
    if any(sel and sel.value is True for sel in lesions):
        facts.append(known("any_omd_lesion_progressing", True, sources))
    elif conflicts:  # a lesion with two different results on its latest date (fhir-mapping §2.1)
        facts.append(Fact("any_omd_lesion_progressing", None, FactStatus.CONFLICTING, conflicts))
    elif lesions and all(sel and sel.value is False for sel in lesions):
        facts.append(known("any_omd_lesion_progressing", False, sources))
    else:
        facts.append(unknown("any_omd_lesion_progressing"))
    return facts + _history(picture)


def _clinical_status(condition: Resource) -> str | None:
    return next((code for _, code in codings(condition.get("clinicalStatus"))), None)


def _history(picture: CancerPicture) -> list[Fact]:
    """Fallback for history_polymetastatic when no local Observation says it (derived): an earlier total
    lesion count > 5, or past diffuse disease (clinical-rules.md §2.6)."""
    current = picture.total_count
    earlier = [
        r
        for r in picture.earlier_counts
        if current and r.effective and current.effective and r.effective < current.effective and int(r.value) > 5
    ]
    past_diffuse = [m for m in picture.mets if not m.active and m.diffuse]
    sources = tuple(r.source for r in earlier) + tuple(m.condition for m in past_diffuse)
    if sources:
        return [known("history_polymetastatic_derived", True, sources, derived=True)]
    return []


# --- lesion-level ------------------------------------------------------------------------------------------


def lesion_facts(met: Metastasis, obs: ObsIndex, picture: CancerPicture, issues: list[InputIssue]) -> list[Fact]:
    groups = _progress_readings(obs)
    site = (
        known("lesion_site_class", met.site_class, (met.condition,))
        if met.site_class != "unknown"
        else unknown("lesion_site_class", ("site_class",))
    )
    facts = [
        known("lesion_organ", met.organ, (met.condition,)),
        site,
        *([known("lesion_body_site", met.site_label, (met.condition,))] if met.site_label else []),
        to_fact("lesion_progressing", latest(groups.get(met.condition, []))),
        *mirels_facts(met, obs, issues),
    ]
    fracture = _fracture(met, obs, picture, issues)
    if fracture:
        facts.append(fracture)
    return facts


# --- Mirels (SURG-MIRELS, clinical-rules.md §5.1) -----------------------------------------------------------

MIRELS_POINTS = {
    "mirels-site": {"upper-limb": 1, "lower-limb": 2, "peritrochanteric": 3},
    "mirels-pain": {"mild": 1, "moderate": 2, "functional": 3},
    "mirels-lesion-type": {"blastic": 1, "mixed": 2, "lytic": 3},
    "mirels-size": {"lt-1-3": 1, "1-3-to-2-3": 2, "gt-2-3": 3},
}


def _components(obs: Resource, issues: list[InputIssue]) -> dict[str, str]:
    """The Mirels components of one assessment. A component value outside its allowed set or type is reported
    (invalid-value, DQ-04) and discarded; the other components still count (fhir-mapping.md §2.1)."""
    found: dict[str, str] = {}
    bad: set[str] = set()
    for comp in obs.get("component") or []:
        name = next((c for sys, c in codings(comp.get("code")) if sys == LOCAL), None)
        if name not in MIRELS_POINTS:
            continue
        given = [k for k in comp if k.startswith("value")]
        if not given:
            continue  # no value (e.g. dataAbsentReason): the component is missing, not invalid
        value = next((c for sys, c in codings(comp.get("valueCodeableConcept")) if sys == LOCAL), None)
        allowed = MIRELS_POINTS[name]
        if value not in allowed:
            shown = value or next((c for _, c in codings(comp.get("valueCodeableConcept"))), None) or given[0]
            _invalid(issues, obs, f"{name} {shown!r} is not one of {', '.join(sorted(allowed))}")
            bad.add(name)
        elif found.get(name, value) != value:
            _invalid(issues, obs, f"{name} given twice with different values")
            bad.add(name)
        else:
            found[name] = value
    return {k: v for k, v in found.items() if k not in bad}


def _invalid(issues: list[InputIssue], obs: Resource, what: str) -> None:
    issues.append(InputIssue("invalid-value", "mirels", f"{rid(obs)}: {what}", ("DQ-04",)))


def _encode(parts: dict[str, str]) -> str:
    """One mirels-assessment as a comparable value (fhir-mapping.md §2.1: two different values on the latest date
    are conflicting): its components in a fixed order."""
    return ";".join(f"{k}={parts[k]}" for k in MIRELS_POINTS if k in parts)


def _decode(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(";") if item)


def mirels_facts(met: Metastasis, obs: ObsIndex, issues: list[InputIssue]) -> list[Fact]:
    """The lesion's latest mirels-assessment (per (code, focus), fhir-mapping.md §2.1); two that differ on that
    date make the Mirels inputs conflicting, whatever their order in the Bundle."""
    mine = _focused(obs.local("mirels-assessment"), met)
    readings = read_all(mine, lambda o: _encode(_components(o, issues)), "mirels", issues)
    selected = latest(readings)
    if selected is None:
        parts: dict[str, str] = {}
        sources: tuple[str, ...] = (met.condition,)
        painful = False
    else:
        top = [r for r in readings if r.source in selected.sources]
        sources = (met.condition, *selected.sources)
        # painful: any same-day assessment graded the pain (every grade is pain), so a conflict keeps it known
        painful = any("mirels-pain" in _decode(str(r.value)) for r in top)
        parts = _decode(str(selected.value)) if not selected.conflicting else {}
    when = selected.effective if selected else None
    facts = [known("lesion_painful", painful, sources, when)]
    if selected is not None and selected.conflicting:
        return [
            *facts,
            _long_bone(met, None, issues),
            Fact("lesion_mirels_size", None, FactStatus.CONFLICTING, sources, when),
            Fact("lesion_mirels_score", None, FactStatus.CONFLICTING, sources, when),
            unknown("lesion_mirels_ge9", ("lesion_mirels_score",), sources),
        ]
    facts.append(_long_bone(met, sources if "mirels-site" in parts else None, issues))
    if "mirels-size" in parts:
        facts.append(known("lesion_mirels_size", parts["mirels-size"], sources, when))
    else:
        facts.append(unknown("lesion_mirels_size", ("mirels",), sources))
    derived = False
    if "mirels-site" not in parts:
        points = [codes.MIRELS_SITE_POINTS[s] for s in met.body_sites if s in codes.MIRELS_SITE_POINTS]
        if len(set(points)) == 1:  # [CONFIG] site fallback from the body site (derived); unqualified femur: ask
            parts["mirels-site"] = {1: "upper-limb", 2: "lower-limb", 3: "peritrochanteric"}[points[0]]
            derived = True
    if len(parts) < len(MIRELS_POINTS):
        missing = ", ".join(k for k in MIRELS_POINTS if k not in parts)
        facts += [unknown("lesion_mirels_score", ("mirels",), sources), _note(met, missing)]
        return [*facts, _mirels_ge9(parts, sources, when, derived)]
    score = sum(MIRELS_POINTS[k][v] for k, v in parts.items())
    return [
        *facts,
        known("lesion_mirels_score", score, sources, when, derived=derived),
        _mirels_ge9(parts, sources, when, derived),
    ]


MIRELS_FIXATION = 9  # Mirels 1989: ≥ 9 impending fracture (clinical-rules §5.1)


def _mirels_ge9(parts: dict[str, str], sources: tuple[str, ...], when: date | None, derived: bool) -> Fact:
    """Mirels ≥ 9: from the score when all four components are known, else decided from the known ones when every
    value of the missing ones (1–3 points each) gives the same answer: site, pain and lesion type all 3 is ≥ 9
    whatever the size; 1 + 1 + 1 + missing is at most 6.
    SURG-MIRELS itself still needs all four (§5.1); the rules that only compare with 9 (SURG-TECH, EBRT-PALL,
    SABR-01's stabilisation) use this (clinical-rules §1.1: a condition already decided by known facts)."""
    known_points = sum(MIRELS_POINTS[k][v] for k, v in parts.items())
    missing = len(MIRELS_POINTS) - len(parts)
    low, high = known_points + missing, known_points + 3 * missing
    if low >= MIRELS_FIXATION or high < MIRELS_FIXATION:
        return known("lesion_mirels_ge9", low >= MIRELS_FIXATION, sources, when, derived=derived)
    return unknown("lesion_mirels_ge9", ("lesion_mirels_score",), sources)


LONG_BONE = ("weight-bearing-long-bone", "other-long-bone")


def _long_bone(met: Metastasis, site_sources: tuple[str, ...] | None, issues: list[InputIssue]) -> Fact:
    """Whether Mirels applies (clinical-rules.md §5.1 scope: long bones of the limbs). From the site class; for a bone
    lesion without a usable body site, a Mirels assessment that names the Mirels site (upper limb, lower limb,
    peritrochanteric: all long-bone sites of the limbs) places the lesion in a limb long bone (derived-input)."""
    if met.site_class in LONG_BONE:
        return known("lesion_long_bone", True, (met.condition,))
    if met.site_class != "unknown":
        return known("lesion_long_bone", False, (met.condition,))
    if site_sources:
        issues.append(
            InputIssue(
                "derived-input",
                "site_class",
                f"{met.condition} has no usable body site: its mirels-site component places it in a long bone of a "
                "limb, so Mirels applies (siteClass stays unknown)",
                ("SURG-MIRELS",),
            )
        )
        return known("lesion_long_bone", True, site_sources, derived=True)
    return unknown("lesion_long_bone", sources=(met.condition,))


def _note(met: Metastasis, missing: str) -> Fact:
    return known("lesion_mirels_missing", missing, (met.condition,))


def _focused(observations: list[Resource], met: Metastasis) -> list[Resource]:
    return [o for o in observations if focus_of(o) == met.condition]


def _fracture(met: Metastasis, obs: ObsIndex, picture: CancerPicture, issues: list[InputIssue]) -> Fact | None:
    if met.organ != "bone":
        return None
    extract = value_code_in(["none", "impending", "actual"], LOCAL)
    records = [o for o in _focused(obs.local("fracture-status"), met) if usable(o)]
    selected = latest(read_all(records, extract, "fracture", issues))
    # an active, not refuted pathological-fracture Condition at the lesion's body site, on the same side
    # (clinical-rules.md §5.2; fhir-mapping.md §3.1: bodySite includes the laterality qualifier)
    same_site = [
        rid(c) for c in picture.fractures if is_active(c) and same_body_site(sided_body_sites(c), met.sided_sites)
    ]
    if same_site:
        return known("lesion_fracture", "actual", (met.condition, *same_site))
    if selected is None and records:  # a record whose value was invalid (discarded) is not "no record"
        return unknown("lesion_fracture", (), (met.condition, *(rid(o) for o in records)))
    if selected is None:
        return known("lesion_fracture", "none", (met.condition,))  # closed world: no record → none
    sources = (met.condition, *selected.sources)
    if selected.conflicting:  # two values on the latest date (fhir-mapping.md §2.1): neither is used
        return Fact("lesion_fracture", None, FactStatus.CONFLICTING, sources, selected.effective)
    assert selected.value is not None
    return known("lesion_fracture", selected.value, sources, selected.effective)


__all__ = [
    "brain_size_fact",
    "lesion_facts",
    "local_facts",
    "lymph_node_size_fact",
    "staging_facts",
    "status_facts",
    "usable",
]


def _sizes(obs: ObsIndex, lesions: set[str]) -> dict[str, list[tuple[float, str]]]:
    """Tumor Size (LOINC 21889-1) values in mm per lesion (focus → the lesion's Condition), value and components."""
    found: dict[str, list[tuple[float, str]]] = {}
    for o in obs.coded(LOINC, [codes.TUMOR_SIZE]):
        focus = focus_of(o)
        if not usable(o) or focus not in lesions:
            continue
        values = [o.get("valueQuantity")] + [c.get("valueQuantity") for c in o.get("component") or []]
        for q in values:
            if isinstance(q, dict) and isinstance(q.get("value"), int | float):
                factor = {"mm": 1.0, "cm": 10.0}.get(str(q.get("code") or q.get("unit")))
                if factor:
                    found.setdefault(focus, []).append((float(q["value"]) * factor, rid(o)))
    return found


def brain_size_fact(obs: ObsIndex, picture: CancerPicture) -> Fact:
    """brain_met_gt_3cm: Tumor Size (LOINC 21889-1) with focus → a brain metastasis, longest value > 30 mm."""
    brain = {m.condition for m in picture.distant if m.organ == "brain"}
    if not brain:
        return known("brain_met_gt_3cm", False)
    sizes = [size for found in _sizes(obs, brain).values() for size in found]
    if not sizes:
        return unknown("brain_met_gt_3cm")
    largest, source = max(sizes)
    return known("brain_met_gt_3cm", largest > 30, (source,))


def lymph_node_size_fact(obs: ObsIndex, picture: CancerPicture) -> Fact:
    """lymph_node_ge_3cm (RA223, clinical-rules.md §6.10 "no lymph node ≥ 3 cm", ALSYMPCA): any active nodal
    metastasis (regional or not) with a Tumor Size ≥ 30 mm; false when there is none or every one is measured
    smaller; unknown when a node has no size."""
    nodes = {m.condition for m in picture.mets if m.active and m.organ == "lymph-node"}
    if not nodes:
        return known("lymph_node_ge_3cm", False)
    sizes = _sizes(obs, nodes)
    large = sorted(source for found in sizes.values() for mm, source in found if mm >= 30)
    if large:
        return known("lymph_node_ge_3cm", True, tuple(large))
    unmeasured = sorted(nodes - set(sizes))
    if unmeasured:
        return unknown("lymph_node_ge_3cm", sources=tuple(unmeasured))
    return known("lymph_node_ge_3cm", False, tuple(sorted(s for found in sizes.values() for _, s in found)))
