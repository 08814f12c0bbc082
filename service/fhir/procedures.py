"""Procedures → facts: definitive treatment of the primary (OMD-03), tumor board review (MDT-01), dental
examination (BMA-05), bilateral oophorectomy (HORM-BC), planned curative local treatment per lesion (MDT-02: a
Procedure or a ServiceRequest) and a planned open resection at a lesion (SURG-SITE detail) (fhir-mapping.md §2,
§3.7; clinical-rules.md §5.3)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from service.domain.facts import Fact, known, unknown
from service.fhir import codes
from service.fhir.conditions import CancerPicture
from service.fhir.util import (
    LOCAL,
    SNOMED,
    Resource,
    codings,
    concept_texts,
    extensions,
    has_code,
    parse_date,
    ref_id,
    rid,
)

DONE = frozenset({"completed"})
PLANNED_OR_DONE = frozenset({"preparation", "in-progress", "completed"})
REQUESTED = frozenset({"draft", "active"})  # a ServiceRequest that plans a treatment (fhir-mapping.md §2)


def _performed(proc: Resource) -> date | None:
    period = proc.get("performedPeriod")
    if isinstance(period, dict):
        return parse_date(period.get("end") or period.get("start"))
    return parse_date(proc.get("performedDateTime"))


def _curative(proc: Resource) -> bool:
    return any(
        any(c == codes.CURATIVE for _, c in codings(ext.get("valueCodeableConcept")))
        for ext in extensions(proc, ("mcode-procedure-intent", "mcode-treatment-intent"))
    )


def _intent_given(proc: Resource) -> bool:
    return any(True for _ in extensions(proc, ("mcode-procedure-intent", "mcode-treatment-intent")))


_RESECTION_WORDS = re.compile(
    r"mastectomy|prostatectomy|nephrectomy|lobectomy|pneumonectomy|thyroidectomy|resection", re.IGNORECASE
)


def _resection(proc: Resource) -> bool:
    """A resection code (clinical-rules.md §3.4 "procedure-intent 373808002 or a resection code"): a known SNOMED
    resection of the primaries we read, or a coding display or text naming one (mastectomy, prostatectomy,
    nephrectomy, lobectomy, pneumonectomy, thyroidectomy, resection). Endocrine ablation (oophorectomy, orchiectomy)
    and biopsies are not."""
    code = proc.get("code")
    if has_code(code, SNOMED, codes.PRIMARY_RESECTIONS):
        return True
    return any(_RESECTION_WORDS.search(n) and "biopsy" not in n.lower() for n in concept_texts(code))


def _definitive(proc: Resource) -> bool:
    """Curative intent, or, when no intent is given, a resection (an intent of palliative or supportive excludes)."""
    return _curative(proc) or (not _intent_given(proc) and _resection(proc))


def _reasons(proc: Resource) -> set[str]:
    return {r for r in (ref_id(x) for x in proc.get("reasonReference") or []) if r}


def _local(proc: Resource, code: str) -> bool:
    return has_code(proc.get("code"), LOCAL, [code])


def procedure_facts(
    procedures: Iterable[Resource], picture: CancerPicture, as_of: date, requests: Iterable[Resource] = ()
) -> list[Fact]:
    procs = [p for p in procedures if p.get("status") != "entered-in-error"]
    planned = [p for p in procs if p.get("status") in PLANNED_OR_DONE] + [
        r for r in requests if r.get("status") in REQUESTED
    ]
    return [
        *_primary_treatment(procs, picture, as_of),
        *_dated("tumor_board_date", [p for p in procs if _local(p, "tumor-board-review")]),
        *_dated("dental_exam_date", [p for p in procs if _local(p, "dental-exam")]),
        _planned(planned, picture),
        *_oophorectomy(procs, as_of),
    ]


def _bilateral_oophorectomy(proc: Resource) -> bool:
    """SNOMED 29827000 (bilateral salpingo-oophorectomy), or a coding or text naming a bilateral oophorectomy."""
    code = proc.get("code")
    if has_code(code, SNOMED, codes.BILATERAL_OOPHORECTOMY):
        return True
    return any("oophorectomy" in n.lower() and "bilateral" in n.lower() for n in concept_texts(code))


def _oophorectomy(procs: list[Resource], as_of: date) -> list[Fact]:
    """A completed bilateral oophorectomy on or before asOf (the menopausal-status derivation, clinical-rules.md
    §6.7); nothing when there is none (the derivation then falls back to age)."""
    done = [
        p
        for p in procs
        if p.get("status") in DONE and _bilateral_oophorectomy(p) and (_performed(p) or date.min) <= as_of
    ]
    if not done:
        return []
    return [known("bilateral_oophorectomy", True, tuple(rid(p) for p in done), _performed(done[-1]))]


def _primary_treatment(procs: list[Resource], picture: CancerPicture, as_of: date) -> list[Fact]:
    primary = set(picture.primary_ids)
    done = [p for p in procs if p.get("status") in DONE and _definitive(p) and _reasons(p) & primary]
    ended = [(d, p) for p in done if (d := _performed(p))]
    if not done:
        return [unknown("primary_treated_definitively"), unknown("days_since_primary_treatment")]
    sources = tuple(rid(p) for p in done)
    facts = [known("primary_treated_definitively", True, sources)]
    if ended:
        day, proc = max(ended, key=lambda t: t[0])
        facts.append(known("days_since_primary_treatment", (as_of - day).days, (rid(proc),), day))
    else:
        facts.append(unknown("days_since_primary_treatment"))
    return facts


def _dated(name: str, procs: list[Resource]) -> list[Fact]:
    dated = [(d, p) for p in procs if p.get("status") in DONE and (d := _performed(p))]
    if not dated:
        return []
    day, proc = max(dated, key=lambda t: t[0])
    return [known(name, day.isoformat(), (rid(proc),), day)]


def _planned(planned: list[Resource], picture: CancerPicture) -> Fact:
    """Lesions with planned or performed curative-intent local treatment (reasonReference or bodySite): Procedures
    in preparation, in progress or completed, and draft or active ServiceRequests."""
    lesions: set[str] = set()
    sources: list[str] = []
    for p in planned:
        if not _curative(p):
            continue
        sites = {c for s, c in codings(p.get("bodySite") or []) if s == SNOMED}
        hit = {m.condition for m in picture.distant if m.condition in _reasons(p) or sites & set(m.body_sites)}
        if hit:
            lesions |= hit
            sources.append(rid(p))
    # lesions, not Conditions (clinical-rules §3.1): a Condition with a per-site count of 3 holds 3 lesions
    held = sum(m.lower_bound for m in picture.distant if m.condition in lesions)
    return known("n_lesions_planned_curative", held, tuple(sources))


_OPEN_RESECTION_WORDS = re.compile(r"resection|excision|en bloc|curettage|corpectomy|vertebrectomy", re.IGNORECASE)


def planned_resections(
    procedures: Iterable[Resource], requests: Iterable[Resource], picture: CancerPicture
) -> dict[str, str]:
    """Lesion Condition → the first planned open resection at it (clinical-rules.md §5.3: "an open resection planned
    at a spine/pelvis site … is stated in the detail"): a Procedure in preparation or in progress, or a draft or
    active ServiceRequest, whose code names a resection (resection, excision, en bloc, curettage, corpectomy,
    vertebrectomy) and whose reasonReference or bodySite matches the lesion."""
    planned = [p for p in procedures if p.get("status") in ("preparation", "in-progress")]
    planned += [r for r in requests if r.get("status") in REQUESTED]
    found: dict[str, str] = {}
    for p in sorted(planned, key=rid):
        if not any(_OPEN_RESECTION_WORDS.search(n) for n in concept_texts(p.get("code"))):
            continue
        sites = {c for s, c in codings(p.get("bodySite") or []) if s == SNOMED}
        for m in picture.distant:
            if m.condition in _reasons(p) or sites & set(m.body_sites):
                found.setdefault(m.condition, rid(p))
    return found
