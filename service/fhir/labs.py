"""Laboratory Observations → facts (fhir-mapping.md §4.7): creatinine, CrCl (read, or Cockcroft–Gault from
creatinine, age, sex and weight — never eGFR), corrected calcium, blood counts, testosterone, weight.
Units are converted to those of clinical-rules.md before any threshold; negative values are invalid (DQ-04)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from service.domain.facts import Fact, FactStatus, InputIssue, known, unknown
from service.fhir.readings import Invalid, ObsIndex, Reading, latest, read_all
from service.fhir.util import LOINC, Resource, rid

# unit → factor to the target unit (UCUM code or the printed unit)
CREATININE_MG_DL = {"mg/dL": 1.0, "umol/L": 1 / 88.42, "µmol/L": 1 / 88.42, "mmol/L": 1000 / 88.42}
CALCIUM_MG_DL = {"mg/dL": 1.0, "mmol/L": 4.008}
# total calcium in serum/plasma: mass (17861-6, 49765-1) and substance (2000-8, mmol/L, usual outside the US)
CALCIUM_LOINC = ("17861-6", "49765-1", "2000-8")
ALBUMIN_G_DL = {"g/dL": 1.0, "g/L": 0.1}
HB_G_DL = {"g/dL": 1.0, "g/L": 0.1, "mmol/L": 1.611}
COUNT_10_9_L = {"10*9/L": 1.0, "10^9/L": 1.0, "x10E9/L": 1.0, "10*3/uL": 1.0, "K/uL": 1.0, "/uL": 0.001, "/mm3": 0.001}
ML_MIN = {"mL/min": 1.0, "ml/min": 1.0, "mL/s": 60.0, "ml/s": 60.0}  # UCUM: 1 mL/s = 60 mL/min
NG_DL = {"ng/dL": 1.0, "nmol/L": 28.84, "pmol/L": 0.02884, "ng/mL": 100.0}
KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237}
CRCL_PRECISION = Decimal("0.000001")  # mL/min: Cockcroft–Gault is rounded to this, far below clinical meaning


@dataclass(frozen=True, slots=True)
class Lab:
    fact: str
    loinc: tuple[str, ...]
    units: dict[str, float]


CREATININE = Lab("scr_current_mg_dl", ("2160-0", "38483-4", "14682-9"), CREATININE_MG_DL)
CREATININE_SI_UMOL_L = {"umol/L": 1.0, "µmol/L": 1.0, "mmol/L": 1000.0}  # the SI units among CREATININE_MG_DL

LABS = (
    CREATININE,
    Lab("crcl_observed", ("35591-7",), ML_MIN),
    Lab("calcium_mg_dl", CALCIUM_LOINC, CALCIUM_MG_DL),
    Lab("albumin_g_dl", ("1751-7", "61151-7"), ALBUMIN_G_DL),
    Lab("anc", ("751-8", "26499-4"), COUNT_10_9_L),
    Lab("platelets", ("777-3", "26515-7"), COUNT_10_9_L),
    Lab("hb", ("718-7",), HB_G_DL),
    Lab("testosterone_ng_dl", ("2986-8",), NG_DL),
    Lab("weight_kg", ("29463-7", "3141-9"), KG),
)


def _unit(q: dict[str, object]) -> str:
    return str(q.get("code") or q.get("unit") or "")


def _quantity(units: dict[str, float]) -> Callable[[Resource], float]:
    def extract(obs: Resource) -> float:
        q = obs.get("valueQuantity")
        if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
            raise Invalid("valueQuantity expected")
        unit = _unit(q)
        if unit not in units:
            raise Invalid(f"unit {unit!r} not recognised")
        if q["value"] < 0:
            raise Invalid(f"negative value {q['value']}")
        value = round(float(q["value"]) * units[unit], 3)
        # a strict comparator ("<30", ">60" as labs report them) is a bound just beyond the number: it decides the
        # thresholds at that number the right way (CrCl ">60" is not the 50–60 band); "<=" / ">=" keep the number
        return value + STRICT_BOUND.get(str(q.get("comparator")), 0.0)

    return extract


STRICT_BOUND = {"<": -0.001, ">": 0.001}  # in the unit read, below the 3-decimal resolution of any threshold


def lab_readings(obs: ObsIndex, issues: list[InputIssue]) -> dict[str, list[Reading]]:
    return {lab.fact: read_all(obs.coded(LOINC, lab.loinc), _quantity(lab.units), lab.fact, issues) for lab in LABS}


def creatinine_si(obs: ObsIndex) -> dict[tuple[str, float], float]:
    """Creatinine results reported in an SI unit, in µmol/L, keyed by (source, value in mg/dL as read): BMA-03
    compares two such results with the label's own µmol/L figures (clinical-rules.md §6.3)."""
    read = _quantity(CREATININE.units)
    out: dict[tuple[str, float], float] = {}
    for o in obs.coded(LOINC, CREATININE.loinc):
        q = o.get("valueQuantity")
        if not isinstance(q, dict) or _unit(q) not in CREATININE_SI_UMOL_L:
            continue
        try:
            mg_dl = read(o)
        except Invalid:  # reported by lab_readings
            continue
        out[(rid(o), mg_dl)] = round(float(q["value"]) * CREATININE_SI_UMOL_L[_unit(q)], 3)
    return out


def _stale(fact: Fact, as_of: date, days: int) -> Fact:
    if fact.usable and fact.effective and fact.effective < as_of - timedelta(days=days):
        return Fact(fact.name, fact.value, FactStatus.STALE, fact.sources, fact.effective, fact.derived)
    return fact


def lab_facts(
    readings: dict[str, list[Reading]],
    age: int | None,
    sex: str | None,
    as_of: date,
    renal_days: int,
    issues: list[InputIssue],
) -> list[Fact]:
    facts = {name: _to_fact(name, latest(rs)) for name, rs in readings.items()}
    crcl = _crcl(facts, age, sex, as_of, renal_days, issues)
    facts["scr_current_mg_dl"] = _stale(facts["scr_current_mg_dl"], as_of, renal_days)
    out = [*facts.values(), crcl, _corrected_calcium(facts, issues)]
    return out


def _to_fact(name: str, selected: object) -> Fact:
    from service.fhir.readings import Selected, to_fact

    return to_fact(name, selected if isinstance(selected, Selected) else None)


def cockcroft_gault(age: int, weight_kg: float, scr_mg_dl: float, female: bool) -> float:
    """CrCl (mL/min) = (140 − age) × weight / (72 × SCr) [× 0.85 for women] (the zoledronic acid label's formula).

    Computed in decimal from the values as read (in binary floating point 72 × 72 / (72 × 1.2) is
    60.00000000000001 and 63 × 72 / (72 × 2.1) is 29.999999999999996), then rounded to 1e-6 mL/min, far below
    clinical meaning: a value exactly on a band edge stays on it, while the label's bands (< 30, 30–39, …, > 60)
    still see a true 29.96 as < 30 and 60.04 as > 60. Texts show it with a few significant digits."""
    value = Decimal(140 - age) * _decimal(weight_kg) / (72 * _decimal(scr_mg_dl))
    if female:
        value *= Decimal("0.85")
    return float(value.quantize(CRCL_PRECISION))


def _decimal(value: float) -> Decimal:
    """The decimal a reading was written as (1.2, not 1.1999999999999999555910790149937)."""
    return Decimal(repr(value))


def _crcl(
    facts: dict[str, Fact], age: int | None, sex: str | None, as_of: date, days: int, issues: list[InputIssue]
) -> Fact:
    """The CrCl BMA-02 uses (fhir-mapping.md §4.7): the measured Cockcroft–Gault CrCl (35591-7) while it is within
    the renal window; else one computed from the current creatinine, weight, age and sex (`derived-input`) while
    that creatinine is within the window. With neither fresh, the newer of the two, stale (a tie goes to the
    measured one)."""
    observed = facts["crcl_observed"]
    fresh_conflict = observed.status is FactStatus.CONFLICTING and not (
        observed.effective and observed.effective < as_of - timedelta(days=days)
    )
    if fresh_conflict:  # two measured values on the latest date, within the window: not silently replaced
        return Fact("crcl", None, FactStatus.CONFLICTING, observed.sources, observed.effective)
    measured = (
        known("crcl", observed.value, observed.sources, observed.effective)
        if observed.usable and observed.value is not None
        else None
    )
    if measured and _stale(measured, as_of, days).usable:
        return measured
    derived = _derived_crcl(facts, age, sex, as_of, days)
    if derived.usable and _stale(derived, as_of, days).usable:
        scr, weight = facts["scr_current_mg_dl"], facts["weight_kg"]
        superseded = f"; the measured CrCl of {measured.effective} is older than {days} days" if measured else ""
        issues.append(
            InputIssue(
                "derived-input",
                "crcl",
                f"CrCl {derived.value:g} mL/min by Cockcroft–Gault from creatinine "
                f"{scr.value} mg/dL, weight {weight.value} kg, age {age}, sex {sex}{superseded}",
            )
        )
        return derived
    dated = [f for f in (measured, derived) if f is not None and f.usable]
    if dated:
        return _stale(max(dated, key=lambda f: f.effective or date.min), as_of, days)
    return derived


def _derived_crcl(facts: dict[str, Fact], age: int | None, sex: str | None, as_of: date, days: int) -> Fact:
    """Cockcroft–Gault from the latest creatinine (fresh or not: the caller judges the date) and weight. When it
    cannot be computed, the inputs that are missing, and the creatinine too when it is stale."""
    scr, weight = facts["scr_current_mg_dl"], facts["weight_kg"]
    missing = [
        n
        for n, ok in (
            ("scr_current_mg_dl", _stale(scr, as_of, days).usable),
            ("weight_kg", weight.usable),
            ("age", age is not None),
            ("sex", sex in ("male", "female")),
        )
        if not ok
    ]
    computable = scr.usable and not [n for n in missing if n != "scr_current_mg_dl"]
    if not computable or not isinstance(scr.value, float) or scr.value <= 0:
        return unknown("crcl", missing or ["scr_current_mg_dl"])
    assert isinstance(weight.value, float) and age is not None
    value = cockcroft_gault(age, weight.value, scr.value, sex == "female")
    return known("crcl", value, (*scr.sources, *weight.sources), scr.effective, derived=True)


def _corrected_calcium(facts: dict[str, Fact], issues: list[InputIssue]) -> Fact:
    """Corrected Ca = Ca + 0.8 × (4.0 − albumin g/dL) [LABEL]."""
    ca, albumin = facts["calcium_mg_dl"], facts["albumin_g_dl"]
    if not ca.usable or not isinstance(ca.value, float):
        return unknown("ca_corrected_mg_dl", ("calcium_mg_dl",))
    if not albumin.usable or not isinstance(albumin.value, float):
        return unknown("ca_corrected_mg_dl", ("albumin_g_dl",))
    value = round(ca.value + 0.8 * (4.0 - albumin.value), 2)
    issues.append(
        InputIssue(
            "derived-input",
            "ca_corrected_mg_dl",
            f"corrected calcium {value} mg/dL from calcium {ca.value} and albumin {albumin.value} g/dL",
        )
    )
    return known("ca_corrected_mg_dl", value, (*ca.sources, *albumin.sources), ca.effective, derived=True)
