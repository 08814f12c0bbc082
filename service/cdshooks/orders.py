"""Draft orders of order-select / order-sign (cds-hooks.md §4, §6): which go into the evaluation, which card
concerns which order, and the "Remove draft order" and "Reduce the dose" suggestions."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.domain.dosing import zoledronic_acid_dose_mg
from service.fhir.medications import medication_uses
from service.fhir.parse import BundleError, read_bundle
from service.fhir.util import has_id, ref_id, rid

Resource = dict[str, Any]

ZOLEDRONIC_ACID = "77655"  # RxNorm ingredient
DRAFT_TYPE = "MedicationRequest"
BMA = frozenset({"bisphosphonate", "denosumab"})
# The rules that concern an ordered drug class (§4); their cards show for an order of that class.
RULE_DRUGS: Mapping[str, frozenset[str]] = {
    **{f"BMA-0{n}": BMA for n in (1, 2, 3, 5, 6)},
    "BMA-04": BMA | {"calcium", "vitamin_d"},
    "RA223": frozenset({"radium223"}),
}
ZOLEDRONIC_CODES = frozenset(
    {"zoledronic-acid-not-recommended", "zoledronic-acid-dose-reduction", "withhold-zoledronic-acid"}
)
REMOVE_CODES = frozenset(
    {
        "zoledronic-acid-not-recommended",
        "withhold-zoledronic-acid",
        "radium-223-contraindicated",
        "double-antiresorptive",
    }
)


MG = frozenset({"mg", "milligram", "milligrams"})


@dataclass(frozen=True, slots=True)
class DraftOrder:
    reference: str  # "MedicationRequest/<id>"
    display: str
    classes: frozenset[str]
    ingredient: str | None
    resource: Resource  # the draft as evaluated (status draft, subject set)
    sent: Resource | None = None  # the order as the client sent it (an `update` returns it with only the dose changed)

    @property
    def addressable(self) -> bool:
        """The client gave the order an id, so an action can name it (a delete or update of "…/None" cannot)."""
        return has_id(self.sent if self.sent is not None else self.resource)


def selected_requests(draft_orders: Mapping[str, Any], selections: Sequence[str] | None) -> list[Resource]:
    """The MedicationRequests of `draftOrders` (only the selected ones when `selections` is given), as the client
    sent them. Other types (NutritionOrder, DSTU2 MedicationOrder, …) are not ours and are left out."""
    entries = draft_orders.get("entry")
    resources = [e.get("resource") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    requests = [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "MedicationRequest"]
    if selections is not None:
        chosen = set(selections)
        requests = [r for r in requests if f"MedicationRequest/{r.get('id')}" in chosen]
    return requests


def as_drafts(requests: Sequence[Resource], patient: str, taken: Iterable[str] = ()) -> list[Resource]:
    """The client's orders as the drafts of `patient` that are evaluated. `taken`: the MedicationRequest ids the
    call already holds (prefetch, stored state), which a draft without id must not take over."""
    used = {*taken, *(r["id"] for r in requests if has_id(r))}
    drafts = []
    for index, request in enumerate(requests):
        draft = _as_draft(request, patient)
        if not has_id(draft):
            draft["id"] = _free_name(f"draft-{index + 1}", used)
            used.add(draft["id"])
        drafts.append(draft)
    return drafts


def _free_name(name: str, used: set[str]) -> str:
    """`name`, or `name-2`, `name-3` … when a resource of the call has that id (a draft replaces a resource of the
    same type and id: an invented id must never replace the patient's own order)."""
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _as_draft(request: Resource, patient: str) -> Resource:
    """An unsigned order is a draft whatever status the client gave it; an order without subject is the
    context patient's (order-select sends incomplete orders, §4); one without id is named `draft-<n>` (its place
    in draftOrders, made unique in the call) for the evaluation only — no action can name it."""
    draft = copy.deepcopy(request)
    draft["status"] = "draft"
    draft.setdefault("subject", {"reference": patient})
    return draft


def readable(requests: Sequence[Resource], sent: Sequence[Resource] = ()) -> list[DraftOrder]:
    """The drafts that are valid FHIR, classified (with the order as sent, by position); the evaluator reports the
    others as `invalid-value`."""
    originals: list[Resource | None] = [*sent] if sent else [None] * len(requests)
    return [_order(r, s) for r, s in zip(requests, originals, strict=True) if _valid(r)]


def _valid(request: Resource) -> bool:
    try:
        parsed = read_bundle({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": request}]})
    except BundleError:
        return False
    return not parsed.issues


def _order(request: Resource, sent: Resource | None = None) -> DraftOrder:
    uses = medication_uses([request])
    if not uses:  # a draft "do not perform" order: it gives no drug, so no drug rule concerns it
        return DraftOrder(rid(request), _display(request), frozenset(), None, request, sent)
    (use,) = uses
    return DraftOrder(use.resource, _display(request), use.classes, use.ingredient, request, sent)


def _display(request: Resource) -> str:
    concept = request.get("medicationCodeableConcept") or {}
    reference = request.get("medicationReference") or {}
    names = [concept.get("text"), *(c.get("display") for c in concept.get("coding") or [] if isinstance(c, dict))]
    names.append(reference.get("display"))
    return next((n for n in names if isinstance(n, str) and n.strip()), "draft medication order")


def concerned(card: Mapping[str, Any], orders: Sequence[DraftOrder]) -> list[DraftOrder]:
    """The draft orders a recommendation card is about: by drug for the drug rules (BMA-01…06, RA223), else
    the classified orders its evidence names. Empty for the summary card."""
    why = card.get("extension", {}).get("org.oligocds.explanation")
    if not why:
        return []
    if why["code"] in ZOLEDRONIC_CODES:
        return [o for o in orders if o.ingredient == ZOLEDRONIC_ACID]
    if why["rule"] in RULE_DRUGS:
        return [o for o in orders if o.classes & RULE_DRUGS[why["rule"]]]
    # Medication facts cite the records of their drug class; `o.classes` keeps an unclassified order out regardless.
    return [o for o in orders if o.reference in why.get("evidence", ()) and o.classes]


OPEN_CODES = frozenset({"missing-input", "stale-input", "conflicting-input"})


def is_summary(card: Mapping[str, Any]) -> bool:
    return "org.oligocds.explanation" not in card.get("extension", {})


def open_for(issues: Sequence[Mapping[str, Any]], orders: Sequence[DraftOrder], unreadable: int) -> bool:
    """True when a draft could not be read, or an open input blocks a rule about a drafted drug class."""
    if unreadable:
        return True
    rules = {rule for rule, drugs in RULE_DRUGS.items() if any(o.classes & drugs for o in orders)}
    return any(i.get("code") in OPEN_CODES and rules & set(i.get("rules", ())) for i in issues)


def for_patient(request: Resource, patient: str) -> bool:
    """The order names no subject (the context patient's) or names `patient` ("Patient/<id>")."""
    subject = request.get("subject")
    return subject is None or ref_id(subject) == patient


def with_unreadable(
    summary: Mapping[str, Any], issues: Sequence[Mapping[str, Any]], foreign: Sequence[Resource] = ()
) -> dict[str, Any]:
    """The summary card, naming the draft orders that were not checked: not valid FHIR (the Bundle-level
    `invalid-value` issues are not in the per-patient card), or for another patient than the context's."""
    found = [str(i.get("detail")) for i in issues if i.get("code") == "invalid-value" and i.get("input") == DRAFT_TYPE]
    found += [f"{rid(r)}: for {ref_id(r.get('subject'))}, not the context patient" for r in foreign]
    if not found:
        return dict(summary)
    lines = "\n".join(f"- {detail}" for detail in found)
    return {
        **summary,
        "detail": f"{summary.get('detail', '')}\n\n**Draft orders not checked:**\n{lines}",
    }


def for_orders(card: Mapping[str, Any], orders: Sequence[DraftOrder]) -> dict[str, Any]:
    """The card naming its draft orders; for the codes of REMOVE_CODES one "Remove draft order" per order."""
    out = copy.deepcopy(dict(card))
    named = ", ".join(f"{o.display} (`{o.reference}`)" if o.addressable else f"{o.display} (no id)" for o in orders)
    out["detail"] = f"{out.get('detail', '')}\n\n**Draft order{'s' if len(orders) > 1 else ''}:** {named}".lstrip()
    out.setdefault("extension", {})["org.oligocds.draftOrders"] = [o.reference for o in orders if o.addressable]
    why = out["extension"]["org.oligocds.explanation"]
    alone = len(orders) == 1 and not any(s.get("isRecommended") for s in out.get("suggestions", []))  # cds-resp-1
    targets = [o for o in orders if o.addressable]  # an order without id cannot be named in an action
    if why["code"] in REMOVE_CODES:
        added = [_remove(out["uuid"], o, recommended=alone) for o in targets]
    elif why["code"] == "zoledronic-acid-dose-reduction":
        added = [s for o in targets if (s := _reduce(out["uuid"], o, _labelled_dose(why), alone)) is not None]
    else:
        added = []
    if added:
        out["suggestions"] = [*out.get("suggestions", []), *added]
        out["selectionBehavior"] = "at-most-one"
    return out


def _labelled_dose(why: Mapping[str, Any]) -> float | None:
    crcl = why.get("inputs", {}).get("crcl", {}).get("value")
    return zoledronic_acid_dose_mg(crcl) if isinstance(crcl, int | float) else None


def _reduce(card_uuid: str, order: DraftOrder, dose: float | None, recommended: bool) -> dict[str, Any] | None:
    """ "Reduce dose": an `update` with the whole draft, every dose stated in mg set to the labelled dose
    (cds-hooks.md §6, R132). None when the draft states no dose in mg or the dose is already at or below it."""
    if dose is None:
        return None
    updated = copy.deepcopy(order.sent if order.sent is not None else order.resource)  # R132: the client's order
    found = [(instruction, q) for instruction, q in _dose_quantities(updated) if _in_mg(q)]
    if not found or all(isinstance(q.get("value"), int | float) and q["value"] <= dose for _, q in found):
        return None
    for instruction, quantity in found:
        quantity["value"] = dose
        # the instruction's text must not keep the old dose next to the new one ("4 mg IV" → "3.3 mg IV")
        if isinstance(instruction.get("text"), str):
            instruction["text"] = _MG_IN_TEXT.sub(f"{dose:g} mg", instruction["text"])
    return {
        "label": f"Reduce the dose to {dose:.1f} mg",
        "uuid": str(uuid.uuid5(uuid.UUID(card_uuid), f"reduce#{order.reference}#{dose}")),
        "isRecommended": recommended,
        "actions": [
            {
                "type": "update",
                "description": f"Set the dose of the draft order {order.display} ({order.reference}) to {dose:.1f} mg",
                "resource": updated,
            }
        ],
    }


_MG_IN_TEXT = re.compile(r"(?<![\d.])\d+(?:[.,]\d+)?\s*mg\b", re.IGNORECASE)


def _dose_quantities(request: Resource) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(dosage instruction, its doseQuantity) pairs of a MedicationRequest."""
    found = []
    for instruction in request.get("dosageInstruction") or []:
        for rate in (instruction.get("doseAndRate") or []) if isinstance(instruction, dict) else []:
            quantity = rate.get("doseQuantity") if isinstance(rate, dict) else None
            if isinstance(quantity, dict):
                found.append((instruction, quantity))
    return found


def _in_mg(quantity: Mapping[str, Any]) -> bool:
    unit = quantity.get("code") if quantity.get("system") == "http://unitsofmeasure.org" else quantity.get("unit")
    return isinstance(unit, str) and unit.strip().lower() in MG


def _remove(card_uuid: str, order: DraftOrder, recommended: bool) -> dict[str, Any]:
    return {
        "label": "Remove draft order",
        "uuid": str(uuid.uuid5(uuid.UUID(card_uuid), f"remove#{order.reference}")),
        "isRecommended": recommended,
        "actions": [
            {
                "type": "delete",
                "description": f"Remove the draft order {order.display} ({order.reference})",
                "resourceId": order.reference,
            }
        ],
    }
