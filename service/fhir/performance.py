"""Performance status (PS-01, DQ-02, DQ-04, DQ-05): ECOG and Karnofsky with range checks, the KPS→ECOG
derivation and staleness (clinical-rules.md §3.5)."""

from __future__ import annotations

from datetime import date, timedelta

from service.domain.facts import Fact, FactStatus, InputIssue, known, unknown
from service.fhir.codes import ECOG, KPS
from service.fhir.readings import Invalid, ObsIndex, Reading, latest, read_all, value_int
from service.fhir.util import LOINC, Resource, codings

# [KNOW] conventional approximate mapping: 100–90→0, 80–70→1, 60–50→2, 40–30→3, 20–10→4, 0→5.
KPS_TO_ECOG = {100: 0, 90: 0, 80: 1, 70: 1, 60: 2, 50: 2, 40: 3, 30: 3, 20: 4, 10: 4, 0: 5}


# LOINC answer list LL529-9 (ECOG performance status), as senders code the grade instead of valueInteger
ECOG_ANSWERS = {"LA9622-7": 0, "LA9623-5": 1, "LA9624-3": 2, "LA9625-0": 3, "LA9626-8": 4, "LA9627-6": 5}


def _ecog(obs: Resource) -> int:
    coded = [ECOG_ANSWERS[c] for s, c in codings(obs.get("valueCodeableConcept")) if s == LOINC and c in ECOG_ANSWERS]
    if "valueInteger" not in obs and "valueQuantity" not in obs and len(set(coded)) == 1:
        return coded[0]
    value = value_int(obs)
    if not 0 <= value <= 5:
        raise Invalid(f"ECOG {value} is outside 0–5")
    return value


def _kps(obs: Resource) -> int:
    value = value_int(obs)
    if not 0 <= value <= 100 or value % 10:
        raise Invalid(f"Karnofsky {value} is outside 0–100 or not a multiple of 10")
    return value


def performance_facts(observations: ObsIndex, as_of: date, stale_days: int, issues: list[InputIssue]) -> list[Fact]:
    ecogs = read_all(observations.coded(LOINC, [ECOG]), _ecog, "ecog", issues)
    kpss = read_all(observations.coded(LOINC, [KPS]), _kps, "kps", issues)
    ecog_r, kps_r = _newest(ecogs), _newest(kpss)
    conflict = _conflict(ecogs, kpss)
    facts = [known("ecog_kps_conflict", conflict is not None, conflict or ())]
    facts.append(known("kps", kps_r.value, (kps_r.source,), kps_r.effective) if kps_r else unknown("kps"))
    if conflict:
        facts.append(Fact("ecog", None, FactStatus.CONFLICTING, conflict))
        return facts
    # The reading that would be used has a same-day twin with another value (two ECOGs, or a duplicate resource
    # id with other content, DQ-06): conflicting, not whichever came first in the Bundle.
    selected = latest(ecogs if _ecog_is_used(ecog_r, kps_r) else kpss)
    if selected is not None and selected.conflicting:
        facts.append(Fact("ecog", None, FactStatus.CONFLICTING, selected.sources))
        return facts
    facts.append(_ecog_fact(ecog_r, kps_r, as_of, stale_days, issues))
    return facts


def _newest(readings: list[Reading]) -> Reading | None:
    return max(readings, key=lambda r: r.effective or date.min, default=None)


def _ecog_is_used(ecog: Reading | None, kps: Reading | None) -> bool:
    """ECOG is used when there is one at least as recent as the latest KPS (else KPS is converted)."""
    return ecog is not None and (kps is None or (ecog.effective or date.min) >= (kps.effective or date.min))


def _conflict(ecogs: list[Reading], kpss: list[Reading]) -> tuple[str, ...] | None:
    """DQ-02: on the newest date that has performance status, ECOG and KPS differ by more than one step."""
    dates = [r.effective for r in ecogs + kpss if r.effective]
    if not dates:
        return None
    newest = max(dates)
    for e in (r for r in ecogs if r.effective == newest):
        for k in (r for r in kpss if r.effective == newest):
            if abs(int(e.value) - KPS_TO_ECOG[int(k.value)]) > 1:
                return (e.source, k.source)
    return None


def _ecog_fact(
    ecog: Reading | None, kps: Reading | None, as_of: date, stale_days: int, issues: list[InputIssue]
) -> Fact:
    if ecog and _ecog_is_used(ecog, kps):
        value, when, sources, derived = int(ecog.value), ecog.effective, (ecog.source,), False
    elif kps:
        value, when, sources, derived = KPS_TO_ECOG[int(kps.value)], kps.effective, (kps.source,), True
        issues.append(
            InputIssue("derived-input", "ecog", f"ECOG {value} derived from Karnofsky {kps.value} ({kps.source})")
        )
    else:
        return unknown("ecog")
    if when and when < as_of - timedelta(days=stale_days):
        return Fact("ecog", value, FactStatus.STALE, sources, when, derived)
    return known("ecog", value, sources, when, derived)
