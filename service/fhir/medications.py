"""Medication resources → drug-class uses: current_meds, draft_orders and on_systemic_therapy_at_omd_dx
(fhir-mapping.md §2, §4.8; clinical-rules.md §1.2, §2.6).

Every RxNorm code is mapped to its ingredient (tty IN) and then to drug classes through the table
data/rxnorm_classes.json; a Medication coded only by text/display is matched by name
(`matched_by == "name"`, for the caller to report)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from importlib.resources import files
from typing import Any

from service.fhir.util import RXNORM, Resource, codings, concept_texts, parse_date, ref_id, rid

RXNORM_OID = "urn:oid:2.16.840.1.113883.6.88"

ENDOCRINE_CLASSES = frozenset({"adt", "arpi", "abiraterone", "ai", "serm", "ofs"})
TARGETED_CLASSES = frozenset({"cdk46i", "anti_her2", "egfr_tki", "alk_tki", "vegf_tki", "other_targeted"})
SUPPORTIVE_CLASSES = frozenset({"bisphosphonate", "denosumab", "calcium", "vitamin_d"})
SYSTEMIC_CLASSES = frozenset({"chemo", "ici", "radium223"}) | TARGETED_CLASSES | ENDOCRINE_CLASSES
"""Active systemic therapy (clinical-rules.md §2.6), endocrine therapy included; see `systemic_classes`."""
ALL_CLASSES = SYSTEMIC_CLASSES | SUPPORTIVE_CLASSES

IGNORED_STATUSES = frozenset({"entered-in-error", "cancelled", "not-taken", "not-done"})
ADMINISTERED = frozenset({"completed", "in-progress"})
ENDED = frozenset({"completed", "stopped"})
USED = frozenset({"active", "completed", "stopped", "on-hold"})
OPEN_ENDED = frozenset({"active", "on-hold", "in-progress"})

_KINDS = {
    "MedicationRequest": "request",
    "MedicationAdministration": "administration",
    "MedicationStatement": "statement",
}
MEDICATION_RECORDS = frozenset(_KINDS)  # the resource types that record a use of a drug


def systemic_classes(include_endocrine: bool = True) -> frozenset[str]:
    """The classes that count as systemic therapy; bone-modifying agents, calcium and vitamin D never do."""
    return SYSTEMIC_CLASSES if include_endocrine else SYSTEMIC_CLASSES - ENDOCRINE_CLASSES


@dataclass(frozen=True, slots=True)
class MedicationUse:
    resource: str  # "MedicationRequest/x"
    classes: frozenset[str]
    ingredient: str | None  # RXCUI (tty IN); None if unknown, several, or matched by a name without RXCUI
    kind: str  # "request" | "administration" | "statement"
    status: str
    start: date | None
    end: date | None
    draft: bool  # a draft MedicationRequest (an unsigned order)
    matched_by: str = "code"  # "code" | "name" (text/display fallback) | "none" (not classified)


@dataclass(frozen=True, slots=True)
class Classification:
    ingredient: str | None
    classes: frozenset[str]
    matched_by: str  # "code" | "name" | "none"


# --- the RxNorm table --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Product:
    ingredients: tuple[str, ...]
    classes: frozenset[str] | None  # an override of the ingredients' classes


@dataclass(frozen=True, slots=True)
class _Name:
    text: str  # normalised, padded with spaces
    ingredient: str | None
    classes: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Table:
    ingredients: Mapping[str, frozenset[str]]
    products: Mapping[str, _Product]
    names: tuple[_Name, ...]  # longest first
    non_systemic_forms: tuple[str, ...]  # normalised, padded


def _normalise(text: str) -> str:
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def _product(entry: Mapping[str, Any]) -> _Product:
    override = entry.get("classes")
    return _Product(tuple(entry["ingredients"]), None if override is None else frozenset(override))


def _names(raw: Mapping[str, Any], ingredients: Mapping[str, frozenset[str]]) -> tuple[_Name, ...]:
    keyed = [_Name(_normalise(n), rx, ingredients[rx]) for n, rx in raw["names"].items()]
    unkeyed = [_Name(_normalise(n), None, frozenset(v["classes"])) for n, v in raw["unkeyed_names"].items()]
    return tuple(sorted([*keyed, *unkeyed], key=lambda n: -len(n.text)))


@cache
def _table() -> _Table:
    text = (files("service.fhir") / "data" / "rxnorm_classes.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    ingredients = {rx: frozenset(v["classes"]) for rx, v in raw["ingredients"].items()}
    return _Table(
        ingredients=ingredients,
        products={code: _product(v) for code, v in raw["products"].items()},
        names=_names(raw, ingredients),
        non_systemic_forms=tuple(_normalise(f) for f in raw["non_systemic_forms"]),
    )


# --- classification ----------------------------------------------------------------------------------


def classify(concept: Any) -> tuple[str | None, frozenset[str]]:
    """CodeableConcept (or a list of them) → (ingredient RXCUI, classes): RxNorm codes first, then names."""
    result = classify_detailed(concept)
    return result.ingredient, result.classes


def classify_detailed(concept: Any) -> Classification:
    return _by_code(concept) or _by_name(concept)


def _single(ingredients: set[str]) -> str | None:
    return next(iter(ingredients)) if len(ingredients) == 1 else None


def _by_code(concept: Any) -> Classification | None:
    table = _table()
    ingredients: set[str] = set()
    classes: set[str] = set()
    for system, code in codings(concept):
        if system not in (RXNORM, RXNORM_OID):
            continue
        if code in table.ingredients:
            ingredients.add(code)
            classes |= table.ingredients[code]
        elif code in table.products:
            product = table.products[code]
            ingredients.update(product.ingredients)
            classes |= _product_classes(product, table)
    if not ingredients:
        return None
    return Classification(_single(ingredients), frozenset(classes), "code")


def _product_classes(product: _Product, table: _Table) -> frozenset[str]:
    if product.classes is not None:
        return product.classes
    return frozenset().union(*(table.ingredients.get(rx, frozenset()) for rx in product.ingredients))


def _name_matches(text: str, table: _Table) -> list[_Name]:
    """Names found in `text` as whole words, longest first; a matched span is not matched again."""
    rest = _normalise(text)
    found: list[_Name] = []
    for name in table.names:
        if name.text in rest:
            found.append(name)
            rest = rest.replace(name.text, " | ")
    return found


def _by_name(concept: Any) -> Classification:
    table = _table()
    texts = concept_texts(concept)
    matches = [m for t in texts for m in _name_matches(t, table)]
    if not matches:
        return Classification(None, frozenset(), "none")
    identities = {m.ingredient or m.text for m in matches}
    ingredient = _single(identities) if all(m.ingredient for m in matches) else None
    local = any(form in _normalise(t) for t in texts for form in table.non_systemic_forms)
    classes = frozenset() if local else frozenset().union(*(m.classes for m in matches))
    return Classification(ingredient, classes, "name")


# --- resources → uses --------------------------------------------------------------------------------


def medication_uses(resources: Iterable[Resource]) -> list[MedicationUse]:
    """MedicationRequest, MedicationAdministration and MedicationStatement → one use each (the first of a
    repeated id wins). Unclassified drugs are kept with empty classes; entered-in-error, cancelled, not-taken
    and not-done records are dropped. Medication resources in `resources` resolve `medicationReference`."""
    items = [r for r in resources if isinstance(r, dict)]
    medications = {rid(r): r for r in items if r.get("resourceType") == "Medication"}
    uses: dict[str, MedicationUse] = {}
    for resource in items:
        use = _use(resource, medications)
        if use is not None:
            uses.setdefault(use.resource, use)
    return list(uses.values())


def _use(resource: Resource, medications: Mapping[str, Resource]) -> MedicationUse | None:
    kind = _KINDS.get(str(resource.get("resourceType")))
    status = str(resource.get("status") or "unknown")
    if kind is None or status in IGNORED_STATUSES:
        return None
    # a request not to give the drug, or a mere proposal that is not a draft order (e.g. a CDS suggestion written
    # back), is no use of it; a draft is an unsigned order whatever its intent (CDS Hooks draftOrders)
    proposal = resource.get("intent") == "proposal" and status != "draft"
    if kind == "request" and (resource.get("doNotPerform") is True or proposal):
        return None
    found = classify_detailed(_medication_concept(resource, medications))
    start, end = _request_period(resource) if kind == "request" else _effective_period(resource, kind, status)
    draft = kind == "request" and status == "draft"
    return MedicationUse(
        rid(resource), found.classes, found.ingredient, kind, status, start, end, draft, found.matched_by
    )


def _medication_concept(resource: Resource, medications: Mapping[str, Resource]) -> Any:
    if "medicationCodeableConcept" in resource:
        return resource["medicationCodeableConcept"]
    ref = resource.get("medicationReference")
    if not isinstance(ref, dict):
        return None
    medication = _referenced(resource, ref, medications)
    if medication is not None:
        items = medication.get("ingredient") or []
        return [medication.get("code"), *(i.get("itemCodeableConcept") for i in items if isinstance(i, dict))]
    display = ref.get("display")
    return {"text": display} if isinstance(display, str) else None


def _referenced(resource: Resource, ref: Mapping[str, Any], medications: Mapping[str, Resource]) -> Any:
    """The contained Medication ("#id"), or a Medication passed alongside ("Medication/id")."""
    target = ref.get("reference")
    if isinstance(target, str) and target.startswith("#"):
        contained = [c for c in resource.get("contained") or [] if isinstance(c, dict)]
        meds = [c for c in contained if c.get("resourceType") == "Medication"]
        return next((c for c in meds if c.get("id") == target[1:]), None)
    key = ref_id(ref)
    return medications.get(key) if key else None


def _period_dates(period: Any) -> tuple[date | None, date | None]:
    if not isinstance(period, dict):
        return None, None
    return parse_date(period.get("start")), parse_date(period.get("end"))


def _bounds(dosage: Any) -> tuple[date | None, date | None]:
    timing = dosage.get("timing") if isinstance(dosage, dict) else None
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    return _period_dates(repeat.get("boundsPeriod") if isinstance(repeat, dict) else None)


def _request_period(request: Resource) -> tuple[date | None, date | None]:
    """boundsPeriod of the dosage instructions, else dispenseRequest.validityPeriod; start else authoredOn."""
    bounds = [_bounds(d) for d in request.get("dosageInstruction") or []]
    starts = [s for s, _ in bounds if s]
    ends = [e for _, e in bounds if e]
    dispense = request.get("dispenseRequest")
    validity = dispense.get("validityPeriod") if isinstance(dispense, dict) else None
    valid_from, valid_to = _period_dates(validity)
    start = min(starts) if starts else valid_from or parse_date(request.get("authoredOn"))
    return start, max(ends) if ends else valid_to


def _effective_period(resource: Resource, kind: str, status: str) -> tuple[date | None, date | None]:
    """effective[x]: a dateTime is one day for an administration or a completed/stopped statement, and the
    start of an ongoing statement."""
    day = parse_date(resource.get("effectiveDateTime"))
    if day is None:
        return _period_dates(resource.get("effectivePeriod"))
    return (day, day) if kind == "administration" or status in ENDED else (day, None)


# --- uses → classes ----------------------------------------------------------------------------------


def _union(uses: Iterable[MedicationUse]) -> set[str]:
    return set().union(*(u.classes for u in uses))


def _is_event(use: MedicationUse) -> bool:
    """An administration, or a statement of a completed/stopped intake on a single day (STU1 senders record
    each chemotherapy cycle so): these count for a window after the day, not only on it."""
    if use.kind == "administration":
        return True
    return use.kind == "statement" and use.status in ENDED and use.start is not None and use.start == use.end


def _event_within(use: MedicationUse, day: date, window_days: int) -> bool:
    """The event happened in [day - window_days, day] (both ends included)."""
    if use.kind == "administration" and use.status not in ADMINISTERED:
        return False
    first = use.start or use.end
    if first is None or first > day:
        return False
    last = use.end or (day if use.status == "in-progress" else first)
    return last >= day - timedelta(days=window_days)


def _is_active(use: MedicationUse, as_of: date, window_days: int) -> bool:
    if _is_event(use):
        return _event_within(use, as_of, window_days)
    return use.status == "active" and not use.draft and (use.start is None or use.start <= as_of)


def active_classes(
    uses: Iterable[MedicationUse],
    as_of: date,
    administration_window_days: int = 28,
) -> set[str]:
    """current_meds: a MedicationRequest or MedicationStatement with status active (not starting after
    `as_of`), or an administration (completed/in-progress) in the `administration_window_days` before
    `as_of`."""
    return _union(u for u in uses if _is_active(u, as_of, administration_window_days))


def ordered_classes(
    uses: Iterable[MedicationUse],
    as_of: date,
    administration_window_days: int = 28,
) -> set[str]:
    """current_meds ∪ draft_orders (draft MedicationRequests, incl. CDS Hooks draftOrders)."""
    items = list(uses)
    return active_classes(items, as_of, administration_window_days) | _union(u for u in items if u.draft)


def _covers(use: MedicationUse, day: date, lookback_days: int) -> bool:
    if use.draft:
        return False
    if _is_event(use):
        return _event_within(use, day, lookback_days)
    if use.start is None or use.start > day:
        return False
    if use.status == "active":
        return use.end is None or use.end >= day
    return use.status in ENDED and use.end is not None and use.end >= day


def classes_on(uses: Iterable[MedicationUse], day: date, lookback_days: int) -> set[str]:
    """Classes in use on `day`: a request/statement whose period covers the day (start ≤ day; active with
    no end or end ≥ day; completed/stopped only with a known end ≥ day), or an administration (or a
    single-day completed statement) in the `lookback_days` before the day."""
    return _union(u for u in uses if _covers(u, day, lookback_days))


def _span(use: MedicationUse) -> tuple[date, date] | None:
    allowed = ADMINISTERED if use.kind == "administration" else USED
    if use.draft or use.status not in allowed:
        return None
    first = use.start or use.end
    if first is None:
        return None
    return first, use.end or (date.max if use.status in OPEN_ENDED else first)


def classes_between(uses: Iterable[MedicationUse], start: date, end: date) -> set[str]:
    """Classes of any use overlapping [start, end] (e.g. "ADT within the last 6 months"); a completed use
    with no end date counts on its start day only."""
    spans = [(u, _span(u)) for u in uses]
    return _union(u for u, s in spans if s is not None and s[0] <= end and s[1] >= start)


def classes_ever(uses: Iterable[MedicationUse]) -> set[str]:
    """Classes of every recorded use (draft orders and intended statements excluded)."""
    return _union(u for u in uses if not u.draft and u.status != "intended")
