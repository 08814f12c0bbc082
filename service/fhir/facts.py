"""One patient's validated resources → PatientFacts (fhir-mapping.md §2). The only entry point of this
package for the use case: `patient_facts(...)`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from service.domain.catalogue import PUBLIC_FACTS, public_name
from service.domain.facts import Fact, FactStatus, InputIssue, LesionFacts, PatientFacts, known, unknown
from service.fhir import codes, observations, treatment
from service.fhir.conditions import (
    CancerPicture,
    Metastasis,
    apply_counts,
    dx_date,
    dx_dates,
    last_day,
    read_conditions,
)
from service.fhir.labs import creatinine_si, lab_facts, lab_readings
from service.fhir.medications import (
    SYSTEMIC_CLASSES,
    MedicationUse,
    classes_between,
    classes_ever,
    classes_on,
    medication_uses,
)
from service.fhir.performance import performance_facts
from service.fhir.procedures import planned_resections, procedure_facts
from service.fhir.readings import ObsIndex
from service.fhir.util import Resource, add_months, codings_memo, parse_date, rid


@dataclass(frozen=True, slots=True)
class FactOptions:
    """The [CONFIG] values fact reading needs (from Settings)."""

    stale_ps_days: int = 90
    stale_renal_days: int = 30
    systemic_includes_endocrine: bool = True
    systemic_lookback_days: int = 90
    adt_lookback_months: int = 6
    dental_exam_months: int = 6


ENDOCRINE = frozenset({"adt", "arpi", "abiraterone", "ai", "serm", "ofs"})


def patient_facts(
    patient: str,
    resources: Iterable[Resource],
    as_of: date,
    options: FactOptions,
    duplicate_conflicts: tuple[str, ...] = (),
) -> PatientFacts:
    with codings_memo():
        return _patient_facts_of(patient, resources, as_of, options, duplicate_conflicts)


def _patient_facts_of(
    patient: str,
    resources: Iterable[Resource],
    as_of: date,
    options: FactOptions,
    duplicate_conflicts: tuple[str, ...],
) -> PatientFacts:
    by_type: dict[str, list[Resource]] = {}
    for r in resources:
        by_type.setdefault(str(r.get("resourceType")), []).append(r)
    pf = PatientFacts(patient, as_of)
    obs = ObsIndex(by_type.get("Observation", []))
    picture = _cancer_picture(by_type, obs, pf.issues)
    # one entry per Condition id, even when differing copies of one id are both kept (DQ-06)
    pf.cancer_conditions = list(
        dict.fromkeys([*sorted(picture.primary_ids), *sorted(m.condition for m in picture.mets if m.active)])
    )
    _put_all(pf, _primary_facts(picture, as_of))
    _put_all(pf, _metastasis_facts(picture))
    _put_all(pf, performance_facts(obs, as_of, options.stale_ps_days, pf.issues))
    _put_all(pf, observations.local_facts(obs, pf.issues))
    _put_all(pf, observations.staging_facts(obs, picture, pf.issues))
    _put_all(pf, observations.status_facts(obs, picture))
    _history_fallback(pf)
    _put_all(pf, procedure_facts(by_type.get("Procedure", []), picture, as_of, by_type.get("ServiceRequest", [])))
    _put_all(pf, _patient_facts(by_type.get("Patient", []), as_of))
    _put_all(pf, _omd_dates(pf, picture, obs))
    uses = medication_uses(
        [
            *by_type.get("MedicationRequest", []),
            *by_type.get("MedicationAdministration", []),
            *by_type.get("MedicationStatement", []),
            *by_type.get("Medication", []),  # resolves medicationReference "Medication/<id>"
        ]
    )
    _put_all(pf, _medication_facts(pf, uses, as_of, options))
    _put_all(pf, _tumor_board_facts(pf))
    pf.put(_not_planned(pf))
    _treatment_facts(pf, obs, uses, picture, options)
    pf.put(known("duplicate_conflict", bool(duplicate_conflicts), duplicate_conflicts))
    # ordered by Condition id, not Bundle order: re-evaluating the same data in another order gives the same
    # result and CarePlan byte for byte (contract.md §3; fhir-mapping §6.3 "stable order of every list")
    active = sorted((m for m in picture.mets if m.active), key=lambda m: m.condition)
    resections = planned_resections(by_type.get("Procedure", []), by_type.get("ServiceRequest", []), picture)
    pf.lesions = [_lesion(m, obs, picture, pf.issues, resections.get(m.condition)) for m in active]
    pf.issues.extend(_derived_mirels(lesion) for lesion in pf.lesions if _mirels_site_derived(lesion))
    pf.organs = sorted({codes.organ_bucket(m.organ) for m in picture.distant})
    pf.put(_needs_stabilisation(pf))
    if duplicate_conflicts:
        pf.put(_duplicate_resource(pf, duplicate_conflicts))
    return pf


def _duplicate_resource(pf: PatientFacts, duplicates: tuple[str, ...]) -> Fact:
    """DQ-06's conflict: it stands for the §1.2 inputs that the differing copies made conflicting (contract.md §3:
    an issue's input names a fact), e.g. `ecog` for two copies of an ECOG Observation; `duplicate_resource` itself
    only when the copies differ in nothing a fact reads."""
    held = set(duplicates)
    facts = [*pf.facts.values(), *(f for lesion in pf.lesions for f in lesion.facts.values())]
    affected = [
        public_name(f.name)
        for f in facts
        if f.status is FactStatus.CONFLICTING and public_name(f.name) in PUBLIC_FACTS and held & set(f.sources)
    ]
    return Fact("duplicate_resource", None, FactStatus.CONFLICTING, duplicates, missing=tuple(dict.fromkeys(affected)))


def _treatment_facts(
    pf: PatientFacts, obs: ObsIndex, uses: list[MedicationUse], picture: CancerPicture, options: FactOptions
) -> None:
    readings = lab_readings(obs, pf.issues)
    age, sex = pf.value("age"), pf.value("sex")
    _put_all(
        pf,
        lab_facts(
            readings,
            age if isinstance(age, int) else None,
            str(sex) if sex else None,
            pf.as_of,
            options.stale_renal_days,
            pf.issues,
        ),
    )
    _put_all(pf, treatment.medication_facts(uses, pf.as_of))
    scr = readings["scr_current_mg_dl"]
    _put_all(pf, treatment.za_renal_facts(uses, scr, pf.as_of, creatinine_si(obs), options.stale_renal_days))
    pf.put(treatment.calcium_low(obs, pf))
    pf.put(treatment.dental_fact(pf, pf.as_of, options.dental_exam_months))
    _put_all(pf, treatment.genomic_facts(obs))
    _put_all(pf, treatment.derived_statuses(pf, uses, pf.issues))
    pf.put(_solitary_bone(picture))
    pf.put(observations.brain_size_fact(obs, picture))
    pf.put(observations.lymph_node_size_fact(obs, picture))
    melanoma = [c for c in picture.primaries if codes.is_melanoma(c.get("code"))]
    pf.put(known("melanoma", bool(melanoma), tuple(rid(c) for c in melanoma)))


def _solitary_bone(picture: CancerPicture) -> Fact:
    bone = [m for m in picture.distant if m.organ == "bone"]
    sources = tuple(m.condition for m in bone)
    if len(bone) == 1 and bone[0].count == 1:
        return known("solitary_bone_lesion", True, sources)
    if sum(m.lower_bound for m in bone) >= 2 or not bone:
        return known("solitary_bone_lesion", False, sources)
    total = picture.total_count
    if total and int(total.value) == 1 and len(picture.distant) == 1:
        return known("solitary_bone_lesion", True, (*sources, total.source))
    return unknown("solitary_bone_lesion", ("n_mets",))


def _mirels_ge9(lesion: LesionFacts) -> bool | None:
    """Mirels ≥ 9 for the lesion: from its score, or from the components when they decide it; None when open."""
    fact = lesion.facts.get("lesion_mirels_ge9")
    return bool(fact.value) if fact is not None and fact.usable else None


def _needs_stabilisation(pf: PatientFacts) -> Fact:
    """SABR-01: any lesion with Mirels ≥ 9 or an actual fracture, or cord compression (SURG-MIRELS, SURG-FX)."""
    hits = [lesion.condition for lesion in pf.lesions if _mirels_ge9(lesion) is True or lesion.fracture == "actual"]
    if pf.value("mscc_or_neuro_deficit") is True:
        hits.extend(pf.get("mscc_or_neuro_deficit").sources or ["mscc_or_neuro_deficit"])
    if hits:
        return known("needs_stabilisation", True, tuple(hits))
    # Lesions that could still need stabilisation: a lesion that may be a long bone without a Mirels score, or a bone
    # lesion whose fracture status is not known. Each open input becomes a fact with its own status (unknown or
    # conflicting), so SABR-01 names it with the right issue code (clinical-rules.md §1.1).
    open_inputs: dict[tuple[str, FactStatus], list[str]] = {}
    for lesion in pf.lesions:
        if lesion.organ != "bone" or lesion.fracture == "actual":
            continue
        in_scope = lesion.facts.get("lesion_long_bone")
        if not (in_scope and in_scope.value is False) and _mirels_ge9(lesion) is None:
            _open(open_inputs, lesion, "lesion_mirels_score", "mirels")
        if lesion.fracture is None:
            _open(open_inputs, lesion, "lesion_fracture", "fracture")
    mscc = pf.get("mscc_or_neuro_deficit")
    if not mscc.usable:  # a record with an invalid or conflicting value (no record at all is "no", §1.1)
        open_inputs.setdefault(("mscc_or_neuro_deficit", mscc.status), []).extend(mscc.sources)
    if open_inputs:
        names = []
        for (public, status), conditions in open_inputs.items():
            names.append(f"lesions_{public}_{status.value}")
            pf.put(Fact(names[-1], None, status, tuple(conditions)))
        return unknown("needs_stabilisation", tuple(names))
    return known("needs_stabilisation", False, tuple(lesion.condition for lesion in pf.lesions))


def _open(found: dict[tuple[str, FactStatus], list[str]], lesion: LesionFacts, name: str, public: str) -> None:
    fact = lesion.facts.get(name)
    status = fact.status if fact is not None and fact.status is FactStatus.CONFLICTING else FactStatus.UNKNOWN
    found.setdefault((public, status), []).append(lesion.condition)


def _put_all(pf: PatientFacts, facts: Iterable[Fact]) -> None:
    for fact in facts:
        pf.put(fact)


def _cancer_picture(by_type: dict[str, list[Resource]], obs: ObsIndex, issues: list[InputIssue]) -> CancerPicture:
    primaries, mets, fractures = read_conditions(by_type.get("Condition", []), issues)
    picture = CancerPicture(primaries=primaries, mets=mets, fractures=fractures)
    dated = [(dx_date(p), p) for p in primaries]
    picture.primary_ids = [rid(p) for p in primaries]
    known_sites = [(d, p) for d, p in dated if codes.primary_site(p.get("code"))]
    chosen = min(known_sites or dated, key=lambda t: t[0] or date.max, default=None)
    if chosen:
        picture.primary_dx_date, picture.primary_dx_latest = dx_dates(chosen[1])
        picture.primary_site = codes.primary_site(chosen[1].get("code")) or "other"
    count_obs = obs.local("metastatic-lesion-count")
    tumors = by_type.get("BodyStructure", [])
    picture.total_count, picture.earlier_counts, picture.count_conflict = apply_counts(mets, count_obs, tumors, issues)
    return picture


def _primary_facts(picture: CancerPicture, as_of: date) -> list[Fact]:
    ids = tuple(picture.primary_ids)
    facts = [
        known("primary_site", picture.primary_site, ids) if picture.primary_site else unknown("primary_site"),
    ]
    if picture.primary_dx_date:
        facts.append(known("primary_dx_date", picture.primary_dx_date.isoformat(), ids, picture.primary_dx_date))
        facts.append(known("days_since_primary_dx", (as_of - picture.primary_dx_date).days, ids))
    else:
        facts += [unknown("primary_dx_date"), unknown("days_since_primary_dx", ("primary_dx_date",))]
    return facts


def _metastasis_facts(picture: CancerPicture) -> list[Fact]:
    distant = picture.distant
    sources = tuple(m.condition for m in distant)
    organs = {m.organ for m in distant}
    facts = [
        known("has_active_distant_met", bool(distant), sources),
        known("diffuse_disease", any(m.diffuse for m in distant), sources),
        known("bone_mets", "bone" in organs, sources),
        known("bone_only", bool(distant) and organs == {"bone"}, sources),
        _visceral(organs, sources),
        known("brain_mets", "brain" in organs, sources),
        known("malignant_pleural_effusion", "pleura" in organs, sources),
        known("n_organs", len(organs), sources),
    ]
    return facts + _count_facts(picture, distant)


def _visceral(organs: set[str], sources: tuple[str, ...]) -> Fact:
    """Any active visceral metastasis (clinical-rules §1.2). A metastasis whose organ the record does not give
    (generic code, no mapped body site: organ `other`) may be visceral: unknown, unless another one is."""
    if organs & codes.VISCERAL_ORGANS:
        return known("visceral_mets", True, sources)
    if "other" in organs:
        return unknown("visceral_mets", sources=sources)
    return known("visceral_mets", False, sources)


def _count_facts(picture: CancerPicture, distant: list[Metastasis]) -> list[Fact]:
    """n_mets (exact total) and its companions. A total that disagrees with itself on its latest date, per-site
    counts that do, a total below the number of active metastasis Conditions (clinical-rules §3.1) or a total
    with no metastasis Condition at all (closed world) make n_mets conflicting (fhir-mapping §2.1)."""
    total = picture.total_count
    sources = tuple(m.condition for m in distant)
    sites_lower = sum(m.lower_bound for m in distant)
    # every active metastasis has a per-site count; none recorded (closed world, clinical-rules §1.1) is exactly 0
    per_site_exact = all(m.count is not None for m in distant)
    per_site_conflict = tuple(s for m in distant for s in m.count_conflict)
    reported = bool(total and int(total.value) > 0) or bool(picture.count_conflict or per_site_conflict)
    facts = [known("n_mets_reported", reported, (total.source,) if total else picture.count_conflict)]
    conflict: tuple[str, ...] = ()
    if total is not None:
        count_sources = (total.source, *sources)
        exact_value: int | None = int(total.value)
        # "a lesion count below the number of recorded sites" (clinical-rules §3.1): below what the metastasis
        # Conditions hold at least (their per-site counts, else their body sites, else one each)
        consistent = int(total.value) >= sites_lower and (bool(distant) or int(total.value) == 0)
        facts.append(known("lesion_count_consistent", consistent, count_sources))
        facts.append(known("n_mets_min", max(int(total.value), sites_lower), count_sources))
        if not consistent:
            conflict = count_sources
    else:
        count_sources = tuple(s for m in distant for s in (m.condition, *m.count_sources))
        exact_value = sites_lower if per_site_exact else None
        facts.append(known("lesion_count_consistent", True, count_sources))
        facts.append(known("n_mets_min", sites_lower, count_sources))
        conflict = picture.count_conflict or per_site_conflict
    if conflict:
        facts.append(Fact("n_mets", None, FactStatus.CONFLICTING, conflict))
        exact_value = None
    else:
        facts.append(known("n_mets", exact_value, count_sources) if exact_value is not None else unknown("n_mets"))
    facts.extend(_max_per_organ(distant, exact_value))
    facts.extend(_lifetime(picture, exact_value))
    return facts


def _max_per_organ(distant: list[Metastasis], exact_total: int | None) -> list[Fact]:
    """`max_mets_per_organ` when the records decide it, and `max_mets_per_organ_upper`, an upper bound known
    whenever the total is exact: an organ holds its per-site counts when all are recorded, else at most the total
    minus what the other organs hold at least (an exact total of 2 in bone and liver is one lesion each; 3 in two
    organs is at most 2 per organ)."""
    sources = tuple(m.condition for m in distant)
    conflicts = tuple(s for m in distant for s in m.count_conflict)
    if conflicts:  # a per-site count with two values on its latest date (fhir-mapping §2.1): not derived away
        return [
            Fact("max_mets_per_organ", None, FactStatus.CONFLICTING, conflicts),
            unknown("max_mets_per_organ_upper", ("max_mets_per_organ",)),
        ]
    lower: dict[str, int] = {}
    counted: dict[str, bool] = {}
    for m in distant:
        lower[m.organ] = lower.get(m.organ, 0) + m.lower_bound
        counted[m.organ] = counted.get(m.organ, True) and m.count is not None
    if distant and all(counted.values()):
        exact = max(lower.values())
        return [known("max_mets_per_organ", exact, sources), known("max_mets_per_organ_upper", exact, sources)]
    undecided = [unknown("max_mets_per_organ"), unknown("max_mets_per_organ_upper", ("max_mets_per_organ",))]
    if exact_total is None:
        return undecided
    if not distant:
        return [known(name, exact_total, sources) for name in ("max_mets_per_organ", "max_mets_per_organ_upper")]
    floor = sum(lower.values())
    upper = {o: lower[o] if counted[o] else exact_total - (floor - lower[o]) for o in lower}
    if any(upper[o] < lower[o] for o in lower):  # the total is below what the records hold: no bound
        return undecided
    bound = known("max_mets_per_organ_upper", max(upper.values()), sources)
    # exact when at most one organ lacks per-site counts (it holds the rest of the total) or the bounds meet
    if sum(not c for c in counted.values()) <= 1 or all(upper[o] == lower[o] for o in lower):
        return [known("max_mets_per_organ", max(upper.values()), sources), bound]
    return [undecided[0], bound]


def _lifetime(picture: CancerPicture, exact_total: int | None) -> list[Fact]:
    """n_mets_lifetime (exact), and its lower bound: the current lower bound plus what past metastases held."""
    past = [m for m in picture.mets if not m.active and not m.regional]
    current_min = exact_total if exact_total is not None else sum(m.lower_bound for m in picture.distant)
    lower = known("n_mets_lifetime_min", current_min + sum(m.lower_bound for m in past))
    if exact_total is None or any(m.count is None for m in past):
        return [unknown("n_mets_lifetime"), lower]
    return [known("n_mets_lifetime", exact_total + sum(int(m.count or 0) for m in past)), lower]


def _patient_facts(patients: list[Resource], as_of: date) -> list[Fact]:
    if not patients:
        return [unknown("age"), unknown("sex")]
    p = patients[0]
    facts = [known("sex", str(p["gender"]), (rid(p),)) if p.get("gender") else unknown("sex")]
    ages = _possible_ages(p.get("birthDate"), as_of)
    if ages and ages[0] == ages[1]:
        facts.append(known("age", ages[0], (rid(p),)))
    else:  # no birth date, or a partial one ("1966", "1966-05") that leaves two ages possible: not guessed
        facts.append(unknown("age", sources=(rid(p),) if ages else ()))
    return facts


def _possible_ages(birth: object, as_of: date) -> tuple[int, int] | None:
    """The youngest and oldest age a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) allows on `as_of`."""
    earliest = parse_date(birth)  # a partial date's first day
    if earliest is None:
        return None
    latest = last_day(birth, earliest)

    def age(b: date) -> int:
        return as_of.year - b.year - ((as_of.month, as_of.day) < (b.month, b.day))

    return age(latest), age(earliest)


def _omd_dates(pf: PatientFacts, picture: CancerPicture, obs: ObsIndex) -> list[Fact]:
    """omd_dx_date from the local `omd-diagnosis` Observation, else (derived, fhir-mapping.md §2) the latest
    active metastasis onset [CONFIG], else the latest CancerDiseaseStatus with evidence type imaging; then the
    interval to the primary diagnosis in calendar months (rounded up). A conflicting local date stays conflicting."""
    omd = pf.facts.get("omd_dx_date")
    facts: list[Fact] = []
    if omd is None or omd.status is FactStatus.UNKNOWN:
        onsets = [(m.onset, m.condition, "the onset of") for m in picture.distant if m.onset]
        imaging = [
            (day, source, "the imaging disease status") for day, source in observations.imaging_status_dates(obs)
        ]
        if onsets or imaging:
            when, source, what = max(onsets or imaging)
            omd = known("omd_dx_date", when.isoformat(), (source,), when, derived=True)
            pf.issues.append(
                InputIssue("derived-input", "omd_dx_date", f"OMD diagnosis date taken from {what} {source}")
            )
            facts.append(omd)
    omd_day = parse_date(omd.value) if omd and omd.usable else None
    primary = picture.primary_dx_date
    if omd_day and primary:
        sources = (*pf.get("primary_dx_date").sources, *(omd.sources if omd else ()))
        # a partial primary date (YYYY-MM) spans days: the interval is exact only when every day gives the same
        # count, else it is not guessed (contract.md §3); its bounds still decide a threshold they both lie on one
        # side of (the rule file holds the threshold, clinical-rules §2.3 Q3)
        longest = _months_between(primary, omd_day)
        shortest = _months_between(picture.primary_dx_latest or primary, omd_day)
        facts.append(known("months_primary_to_omd_min", shortest, sources))
        facts.append(known("months_primary_to_omd_max", longest, sources))
        if longest == shortest:
            facts.append(known("months_primary_to_omd", longest, sources))
        else:
            facts.append(unknown("months_primary_to_omd", ("primary_dx_date",)))
            # said only when a rule needs the interval (a missing-input no rule names is dropped)
            recorded = pf.get("primary_dx_date").sources
            pf.issues.append(
                InputIssue(
                    "missing-input",
                    "primary_dx_date",
                    f"primary cancer diagnosis date: recorded without the day ({', '.join(recorded)}), and the day "
                    "decides the interval to the OMD diagnosis",
                )
            )
    else:
        # only the date that is missing is reported (clinical-rules §1.1: the issue belongs to the unknown fact)
        missing = (() if primary else ("primary_dx_date",)) + (() if omd_day else ("omd_dx_date",))
        facts += [unknown(name, missing) for name in MONTHS_FACTS]
    return facts


MONTHS_FACTS = ("months_primary_to_omd", "months_primary_to_omd_min", "months_primary_to_omd_max")


def _months_between(start: date, end: date) -> int:
    """Calendar months from `start` to `end`, counted up (add_months(start, n) ≥ end)."""
    months = 0
    while add_months(start, months) < end:
        months += 1
    return months


def _medication_facts(pf: PatientFacts, uses: list[MedicationUse], as_of: date, options: FactOptions) -> list[Fact]:
    systemic = set(SYSTEMIC_CLASSES)
    if not options.systemic_includes_endocrine:
        systemic -= ENDOCRINE
    facts: list[Fact] = []
    omd = pf.facts.get("omd_dx_date")
    omd_day = parse_date(omd.value) if omd and omd.usable else None
    if omd_day:
        on = [
            u
            for u in uses
            if u.classes & systemic and u.classes & classes_on([u], omd_day, options.systemic_lookback_days)
        ]
        facts.append(known("on_systemic_therapy_at_omd_dx", bool(on), tuple(u.resource for u in on)))
    elif not any(u.classes & systemic for u in uses):
        # the medication list is closed-world (clinical-rules §2.6): with no systemic therapy recorded at all the
        # answer is "no" whatever the OMD date
        facts.append(known("on_systemic_therapy_at_omd_dx", False))
    else:
        facts.append(unknown("on_systemic_therapy_at_omd_dx", ("omd_dx_date",)))
    recent = classes_between(uses, add_months(as_of, -options.adt_lookback_months), as_of)
    adt_uses = tuple(u.resource for u in uses if "adt" in u.classes)
    facts.append(known("adt_last_6_months", "adt" in recent, adt_uses))
    facts.append(known("adt_ever", "adt" in classes_ever(uses), adt_uses))
    return facts


def _tumor_board_facts(pf: PatientFacts) -> list[Fact]:
    review = pf.facts.get("tumor_board_date")
    omd = pf.facts.get("omd_dx_date")
    if review and review.usable and not (omd and omd.usable):  # a review, but after what? (MDT-01 indicator)
        return [unknown("tumor_board_after_omd_dx", ("omd_dx_date",), review.sources)]
    after = bool(review and review.usable and omd and omd.usable and str(review.value) > str(omd.value))
    return [known("tumor_board_after_omd_dx", after, review.sources if review and after else ())]


def _history_fallback(pf: PatientFacts) -> None:
    derived = pf.facts.pop("history_polymetastatic_derived", None)
    if (
        derived
        and not pf.get("history_polymetastatic").usable
        and pf.get("history_polymetastatic").status is not FactStatus.CONFLICTING
    ):
        pf.put(known("history_polymetastatic", True, derived.sources, derived=True))
        pf.issues.append(
            InputIssue("derived-input", "history_polymetastatic", f"derived from {', '.join(derived.sources)}")
        )


def _not_planned(pf: PatientFacts) -> Fact:
    n_mets, planned = pf.value("n_mets"), pf.value("n_lesions_planned_curative")
    if isinstance(n_mets, int) and isinstance(planned, int):
        return known("n_lesions_not_planned", max(0, n_mets - planned), pf.get("n_mets").sources)
    return unknown("n_lesions_not_planned", ("n_mets",))


def _mirels_site_derived(lesion: LesionFacts) -> bool:
    score = lesion.facts.get("lesion_mirels_score")
    return lesion.mirels_score is not None and score is not None and score.derived


def _derived_mirels(lesion: LesionFacts) -> InputIssue:
    """clinical-rules.md §1.1 / §5.1: a Mirels score whose site criterion came from the lesion's body site."""
    return InputIssue(
        "derived-input",
        "mirels",
        f"Mirels site of {lesion.condition} taken from its body site (no mirels-site component)",
        ("SURG-MIRELS",),
    )


def _lesion(
    met: Metastasis, obs: ObsIndex, picture: CancerPicture, issues: list[InputIssue], resection: str | None
) -> LesionFacts:
    facts = observations.lesion_facts(met, obs, picture, issues)
    if resection:  # a planned open resection at this lesion (SURG-SITE detail, clinical-rules.md §5.3)
        facts.append(known("lesion_planned_resection", resection, (resection,)))
    score = facts_value(facts, "lesion_mirels_score")
    fracture = facts_value(facts, "lesion_fracture")
    long_bone = facts_value(facts, "lesion_long_bone") is True  # Mirels scope (clinical-rules.md §5.1)
    return LesionFacts(
        condition=met.condition,
        organ=codes.organ_bucket(met.organ),
        site_class=met.site_class,
        facts={f.name: f for f in facts},
        mirels_score=score if isinstance(score, int) and long_bone else None,
        fracture=fracture if isinstance(fracture, str) and met.organ == "bone" else None,  # not known → null
    )


def facts_value(facts: list[Fact], name: str) -> object:
    return next((f.value for f in facts if f.name == name), None)
