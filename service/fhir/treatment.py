"""Facts the treatment-eligibility rules need beyond the OMD assessment (clinical-rules.md §5–§6): medication
classes active or ordered, renal course on zoledronic acid, calcium, dental examination, genomics, and derived
statuses (menopausal, castration). Thresholds stay in the rule files; only [LABEL] definitions live here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta

from service.domain.facts import Fact, FactStatus, InputIssue, PatientFacts, known, unknown
from service.fhir.codes import NEGATIVE, POSITIVE
from service.fhir.labs import CALCIUM_LOINC
from service.fhir.medications import MedicationUse, active_classes, ordered_classes
from service.fhir.readings import ObsIndex, Reading
from service.fhir.util import LOINC, Resource, add_months, codings, effective_date, has_code, parse_date

ZOLEDRONIC_ACID = "77655"
HYPOCALCAEMIA_MG_DL = 8.5  # fallback when the lab gives no interpretation [KNOW]
EGFR_HGNC, ALK_HGNC = "HGNC:3236", "HGNC:427"
PRESENT, ABSENT = "LA9633-4", "LA9634-2"
GENE_STUDIED = "48018-6"
# fhir-mapping.md §4.6 ALK rearrangement: 78205-2 ALK gene rearrangements by FISH, 78210-2 (narrative),
# 79206-9 EML4-ALK fusion transcript by FISH → positive = alk_fusion
ALK_FISH = ("78205-2", "78210-2", "79206-9")


def medication_facts(uses: list[MedicationUse], as_of: date) -> list[Fact]:
    active = active_classes(uses, as_of)
    ordered = ordered_classes(uses, as_of)
    za = [u for u in uses if u.ingredient == ZOLEDRONIC_ACID]
    za_ordered = bool(ordered_classes(za, as_of))
    radium_given = [u for u in uses if "radium223" in u.classes and u.kind in ("administration", "statement")]
    is_active = [u for u in uses if active_classes([u], as_of)]
    is_ordered = [u for u in uses if ordered_classes([u], as_of)]

    def src(classes: set[str], hits: list[MedicationUse]) -> tuple[str, ...]:
        """The records of the drug class(es): those active/ordered when there are any, else all of them."""
        of_class = [u for u in uses if u.classes & classes]
        return tuple(u.resource for u in ([u for u in of_class if u in hits] or of_class))

    facts = [
        known(f"{cls}_active", cls in active, src({cls}, is_active))
        for cls in (
            "adt",
            "ai",
            "serm",
            "ofs",
            "cdk46i",
            "anti_her2",
            "egfr_tki",
            "alk_tki",
            "ici",
            "bisphosphonate",
            "denosumab",
            "abiraterone",
        )
    ]
    bma, endocrine, supplements = {"bisphosphonate", "denosumab"}, {"ai", "serm", "ofs"}, {"calcium", "vitamin_d"}
    facts += [
        known("endocrine_active", bool(active & endocrine), src(endocrine, is_active)),
        known("bisphosphonate_ordered", "bisphosphonate" in ordered, src({"bisphosphonate"}, is_ordered)),
        known("denosumab_ordered", "denosumab" in ordered, src({"denosumab"}, is_ordered)),
        known("za_ordered", za_ordered, tuple(u.resource for u in za)),
        known("bma_active", bool(active & bma), src(bma, is_active)),
        known("bma_ordered", bool(ordered & bma), src(bma, is_ordered)),
        known("radium_ordered", "radium223" in ordered, src({"radium223"}, is_ordered)),
        known("radium_given_before", bool(radium_given), tuple(u.resource for u in radium_given)),
        known("calcium_and_vitamin_d", supplements <= active, src(supplements, is_active)),
    ]
    return facts


def za_renal_facts(
    uses: list[MedicationUse],
    creatinine: list[Reading],
    as_of: date,
    si: Mapping[tuple[str, float], float] | None = None,
    stale_days: int = 30,
) -> list[Fact]:
    """BMA-03 [LABEL]: baseline = latest SCr before the first zoledronic acid dose; withhold when SCr rose by
    ≥ 0.5 mg/dL (baseline < 1.4) or ≥ 1.0 mg/dL (baseline ≥ 1.4); resume within 10 % of baseline. Two results both
    reported in µmol/L (`si`, from `labs.creatinine_si`) are compared in µmol/L with the label's figures: ≥ 44
    (baseline < 124) or ≥ 88 (baseline ≥ 124); any other pair in mg/dL."""
    given = [u for u in uses if u.ingredient == ZOLEDRONIC_ACID and not u.draft]
    starts = [u.start for u in given if u.start]
    dated = sorted((r for r in creatinine if r.effective), key=lambda r: r.effective or date.min)
    if not given or (starts and len(starts) == len(given) and min(starts) >= as_of):
        # only a draft, or an order that starts today or later: no dose given, no rise on therapy to judge
        za = tuple(u.resource for u in uses if u.ingredient == ZOLEDRONIC_ACID)
        return [known("za_renal_deterioration", False, za)]
    if not starts or not dated:  # on therapy since an unknown date, or no creatinine at all
        return [unknown("za_renal_deterioration", ("scr_baseline_mg_dl",))]
    first = min(starts)
    before = [r for r in dated if r.effective and r.effective <= first]
    after = [r for r in dated if r.effective and r.effective > first]
    if not before or not after:
        return [unknown("za_renal_deterioration", ("scr_baseline_mg_dl" if not before else "scr_current_mg_dl",))]
    baseline, latest = before[-1], after[-1]
    # two different values on the baseline's or the current result's date: conflicting (fhir-mapping §2.1); a
    # current result older than the renal window: stale (DQ-05) — either way no decision, and the input is named
    base_day = [r for r in before if r.effective == baseline.effective]
    if len({float(r.value) for r in base_day}) > 1:
        sources = tuple(r.source for r in base_day)
        return [
            Fact("scr_baseline_mg_dl", None, FactStatus.CONFLICTING, sources, baseline.effective),
            unknown("za_renal_deterioration", ("scr_baseline_mg_dl",)),
        ]
    known_baseline = known("scr_baseline_mg_dl", float(baseline.value), (baseline.source,), baseline.effective)
    current_day = [r for r in after if r.effective == latest.effective]
    if len({float(r.value) for r in current_day}) > 1 or (
        latest.effective is not None and latest.effective < as_of - timedelta(days=stale_days)
    ):
        return [known_baseline, unknown("za_renal_deterioration", ("scr_current_mg_dl",))]
    met_before = any(_withhold(*_pair(baseline, r, si or {})) for r in after)
    base, current, unit = _pair(baseline, latest, si or {})
    deteriorated = _withhold(base, current, unit) or (met_before and not _at_least(1.10 * base, current))
    sources = (baseline.source, latest.source)
    course = f"{base:g} → {current:g} {unit}" + (", compared with the label's µmol/L figures" if unit != MG_DL else "")
    return [
        known_baseline,
        known("za_scr_current", float(latest.value), (latest.source,), latest.effective),
        known("za_renal_deterioration", deteriorated, sources, latest.effective),
        known("za_scr_course", course, sources, latest.effective),
    ]


MG_DL, UMOL_L = "mg/dL", "µmol/L"
# BMA-03 [LABEL] (clinical-rules.md §6.3): baseline limit, rise needed below it, rise needed at or above it
WITHHOLD = {MG_DL: (1.4, 0.5, 1.0), UMOL_L: (124.0, 44.0, 88.0)}


def _pair(baseline: Reading, reading: Reading, si: Mapping[tuple[str, float], float]) -> tuple[float, float, str]:
    """Baseline and a later creatinine in one unit: µmol/L as reported when both were, else mg/dL."""
    b, r = si.get((baseline.source, float(baseline.value))), si.get((reading.source, float(reading.value)))
    if b is not None and r is not None:
        return b, r, UMOL_L
    return float(baseline.value), float(reading.value), MG_DL


def _withhold(base: float, current: float, unit: str) -> bool:
    limit, low, high = WITHHOLD[unit]
    return _at_least(current - base, low if base < limit else high)


def _at_least(value: float, limit: float) -> bool:
    """value ≥ limit as the label means it, in decimal: 1.4 − 0.9 is 0.49999999999999994 in binary floating point,
    and a rise of exactly 0.5 mg/dL must count."""
    return round(value - limit, 9) >= 0


def calcium_low(obs: ObsIndex, pf: PatientFacts) -> Fact:
    """Below the lab's lower limit (interpretation L/LL), else corrected calcium < 8.5 mg/dL [KNOW fallback]."""
    cal = [
        o
        for o in obs
        if has_code(o.get("code"), LOINC, CALCIUM_LOINC)
        and o.get("status") in ("final", "amended", "corrected", "preliminary")
    ]
    if not cal:
        return unknown("calcium_low", ("calcium_mg_dl",))
    newest = max(cal, key=lambda o: str(o.get("effectiveDateTime", "")))
    flags = {c for _, c in codings(newest.get("interpretation") or [])}
    if flags:
        return known("calcium_low", bool(flags & {"L", "LL", "LU"}), (f"Observation/{newest.get('id')}",))
    corrected = pf.value("ca_corrected_mg_dl")
    if isinstance(corrected, float):
        return known("calcium_low", corrected < HYPOCALCAEMIA_MG_DL, pf.get("ca_corrected_mg_dl").sources)
    return unknown("calcium_low", ("ca_corrected_mg_dl",))


def dental_fact(pf: PatientFacts, as_of: date, months: int = 6) -> Fact:
    """BMA-05: a dental examination within `months` calendar months before asOf (the day itself included)
    [CONFIG, clinical-rules.md §8 "dental examination window: 6 months"]."""
    done = parse_date(pf.value("dental_exam_date"))
    recent = bool(done and done >= add_months(as_of, -months))
    return known("dental_exam_recent", recent, pf.get("dental_exam_date").sources if recent else ())


Genomic = tuple[bool | None, str, tuple[object, ...]]  # (result, Observation, what was tested and when)


def genomic_facts(obs: ObsIndex) -> list[Fact]:
    """EGFR sensitizing mutation / ALK fusion from genomic results only; EGFR protein IHC (39004-7) never counts."""
    egfr: list[Genomic] = []
    alk: list[Genomic] = []
    for o in obs:
        if o.get("status") not in ("final", "amended", "corrected", "preliminary"):
            continue
        ref = f"Observation/{o.get('id')}"
        day = effective_date(o)
        if has_code(o.get("code"), LOINC, ALK_FISH):
            alk.append((_present(o), ref, ("fish", day)))
        if not has_code(o.get("code"), LOINC, ("69548-6",)):
            continue
        genes = {
            c
            for comp in o.get("component") or []
            if has_code(comp.get("code"), LOINC, (GENE_STUDIED,))
            for _, c in codings(comp.get("valueCodeableConcept"))
        }
        if ALK_HGNC in genes:
            alk.append((_present(o), ref, ("variant", day, _variant(o))))
        if EGFR_HGNC in genes:
            egfr.append((_egfr_sensitizing(o), ref, ("variant", day, _variant(o))))
    return [_genomic("egfr_sensitizing_mutation", egfr), _genomic("alk_fusion", alk)]


def _variant(o: Resource) -> tuple[str, ...]:
    """What a genomic result says was found or sought, apart from the gene (its other components' codings/texts)."""
    found = []
    for comp in o.get("component") or []:
        if has_code(comp.get("code"), LOINC, (GENE_STUDIED,)):
            continue
        value = comp.get("valueCodeableConcept") or {}
        found += [f"{s}|{c}" for s, c in codings(value)] + [str(value.get("text", ""))]
    return tuple(sorted(set(found) - {""}))


def _present(o: Resource) -> bool | None:
    """A genomic or FISH result: LOINC answers Present/Absent (LA9633-4/LA9634-2) and the Positive/Negative codings of
    fhir-mapping.md §4.6 (LA6576-8/LA6577-6, SNOMED 10828004/260385009); else the result text (valueString or the
    concept's text/display, TumorMarkerTest value[x] may be a string, §3.5). Both ways at once → unknown."""
    concept = o.get("valueCodeableConcept")
    pairs = set(codings(concept))
    found = {c for _, c in pairs}
    positive = PRESENT in found or bool(pairs & POSITIVE)
    negative = ABSENT in found or bool(pairs & NEGATIVE)
    if positive != negative:
        return positive
    if positive:
        return None
    texts = [o.get("valueString"), (concept or {}).get("text")]
    texts += [c.get("display") for c in (concept or {}).get("coding") or [] if isinstance(c, dict)]
    results = {_text_result(str(t)) for t in texts if isinstance(t, str) and t.strip()} - {None}
    return results.pop() if len(results) == 1 else None


def _text_result(text: str) -> bool | None:
    """'Positive' / 'Detected' / 'Present' → True; 'Negative' / 'Not detected' / 'Absent' → False; a text that says
    both or neither (e.g. 'No rearrangement detected' is read as neither) → None."""
    words = set(re.sub(r"[^a-z]+", " ", text.lower()).split())
    said_no = bool(words & {"not", "no"})
    if words & {"positive", "detected", "present"} and not words & {"negative", "absent"} and not said_no:
        return True
    if words & {"negative", "absent"} and not words & {"positive", "present"}:
        return False
    if words == {"not", "detected"}:
        return False
    return None


def _egfr_sensitizing(o: Resource) -> bool | None:
    present = _present(o)
    if present is not True:
        return present
    hgvs = " ".join(
        str(comp.get("valueCodeableConcept", {}).get("text", ""))
        + " "
        + " ".join(c for _, c in codings(comp.get("valueCodeableConcept")))
        for comp in o.get("component") or []
    ).lower()
    # exon 19 deletions and p.Leu858Arg [KNOW; the clinical list is still to be agreed]
    if "l858r" in hgvs or "leu858arg" in hgvs or ("exon 19" in hgvs and "del" in hgvs) or "del19" in hgvs:
        return True
    if any(_exon19_deletion(m) for m in PROTEIN_DELETION.finditer(hgvs)):
        return True
    return None


# EGFR exon 19 = codons 729–761 of the EGFR protein (NP_005219, transcript NM_005228) [KNOW, not verified against
# the RefSeq record]: an in-frame deletion or deletion-insertion whose first deleted residue lies there is an exon 19
# deletion (fhir-mapping.md §4.6 "exon 19 deletions"), e.g. p.Glu746_Ala750del, p.E746_A750del,
# p.Leu747_Pro753delinsSer. Matched on the lower-cased text; three- or one-letter amino-acid codes.
EGFR_EXON19_CODONS = range(729, 762)
_AA3 = "ala|arg|asn|asp|cys|gln|glu|gly|his|ile|leu|lys|met|phe|pro|ser|thr|trp|tyr|val"
_AA = f"(?:{_AA3}|[acdefghiklmnpqrstvwy])"
PROTEIN_DELETION = re.compile(
    rf"(?<![a-z0-9])(?:p\.)?\(?({_AA})(\d+)(?:_({_AA})(\d+))?del(?:ins(?:{_AA})+)?\)?(?![a-z0-9])"
)


def _exon19_deletion(match: re.Match[str]) -> bool:
    first, last = int(match.group(2)), int(match.group(4) or match.group(2))
    return first in EGFR_EXON19_CODONS and last >= first


def _genomic(name: str, results: list[Genomic]) -> Fact:
    """Any positive result decides (a tumour keeps its driver), except one contradicted on the same date by a result
    of the same test (fhir-mapping.md §2.1: two values on one date are conflicting)."""
    sources = tuple(ref for _, ref, _ in results)
    seen: dict[tuple[object, ...], set[bool | None]] = {}
    for value, _, test in results:
        seen.setdefault(test, set()).add(value)
    contradicted = {test for test, values in seen.items() if {True, False} <= values}
    if any(v is True and test not in contradicted for v, _, test in results):
        return known(name, True, sources)
    if contradicted:
        return Fact(name, None, FactStatus.CONFLICTING, tuple(r for _, r, t in results if t in contradicted))
    if results and all(v is False for v, _, _ in results):
        return known(name, False, sources)
    return unknown(name)


def derived_statuses(pf: PatientFacts, uses: list[MedicationUse], issues: list[InputIssue]) -> list[Fact]:
    facts: list[Fact] = []
    breast = pf.value("primary_site") == "breast"
    if breast and not pf.get("menopausal_status").usable and pf.get("menopausal_status").status.value == "unknown":
        age = pf.value("age")
        surgery = pf.get("bilateral_oophorectomy")
        if surgery.usable and surgery.value is True:  # [KNOW] bilateral oophorectomy → post
            facts.append(known("menopausal_status", "post", surgery.sources, surgery.effective, derived=True))
            issues.append(
                InputIssue(
                    "derived-input",
                    "menopausal_status",
                    f"postmenopausal derived from bilateral oophorectomy ({', '.join(surgery.sources)})",
                )
            )
        elif isinstance(age, int) and age >= 60:  # [KNOW/CONFIG] age ≥ 60 → post
            facts.append(known("menopausal_status", "post", pf.get("age").sources, derived=True))
            issues.append(InputIssue("derived-input", "menopausal_status", f"postmenopausal derived from age {age}"))
    if not pf.get("castration_status").usable and pf.get("castration_status").status.value == "unknown":
        t = pf.value("testosterone_ng_dl")
        progressing = pf.value("any_omd_lesion_progressing") is True or pf.value("primary_progressing") is True
        if pf.value("adt_active") is True and isinstance(t, float) and t < 50 and progressing:  # [KNOW]
            facts.append(known("castration_status", "resistant", pf.get("testosterone_ng_dl").sources, derived=True))
            issues.append(
                InputIssue(
                    "derived-input",
                    "castration_status",
                    f"castration-resistant derived: on ADT, testosterone {t} ng/dL, progression",
                )
            )
    return facts
