"""The CDS services, declared as data (cds-hooks.md §2); the discovery document is generated from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from service.fhir.parse import USED_TYPES

PATIENT_VIEW, ORDER_SELECT, ORDER_SIGN = "patient-view", "order-select", "order-sign"

# Keys are resource type names, as AHRQ CQL Services uses (cds-hooks.md §2); one template set for every hook.
PREFETCH: MappingProxyType[str, str] = MappingProxyType(
    {
        "Patient": "Patient/{{context.patientId}}",
        **{
            t: f"{t}?patient={{{{context.patientId}}}}"
            for t in sorted(USED_TYPES - {"Patient"})  # every resource type the fact readers use
        },
    }
)
REQUIRED_KEYS = ("Patient", "Condition")


@dataclass(frozen=True, slots=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: MappingProxyType[str, str] = field(default_factory=lambda: PREFETCH)

    @property
    def orders(self) -> bool:
        return self.hook in (ORDER_SELECT, ORDER_SIGN)


_ORDERS_TITLE = "OligoCDS: bone-modifying agents and radium-223 orders"
_ORDERS_DESCRIPTION = (
    "Checks draft orders of zoledronic acid, denosumab and radium-223 against renal function, calcium, dental "
    "status, double antiresorptive use and visceral metastases; suggests removing an order that is not recommended."
)

SERVICES: tuple[CdsService, ...] = (
    CdsService(
        "oligocds-patient-view",
        PATIENT_VIEW,
        "OligoCDS: oligometastatic disease and skeletal metastases",
        "Classifies oligometastatic disease (ESTRO/EORTC) and gives guideline recommendations for skeletal "
        "metastases: tumor board, SABR, fracture risk (Mirels), surgery, radiotherapy, bone-modifying agents "
        "and systemic therapy, with a draft CarePlan.",
    ),
    CdsService("oligocds-orders", ORDER_SELECT, _ORDERS_TITLE, _ORDERS_DESCRIPTION),
    CdsService("oligocds-orders", ORDER_SIGN, _ORDERS_TITLE, _ORDERS_DESCRIPTION),
)


def declared(service_id: str) -> tuple[CdsService, ...]:
    """The declarations of one id (one per hook it serves); empty for an unknown id."""
    return tuple(s for s in SERVICES if s.id == service_id)


def discovery(ruleset: dict[str, str]) -> dict[str, Any]:
    """`GET /cds-services` (R4–R16): one entry per (id, hook); the ruleset in `extension` (§2)."""
    return {
        "services": [
            {
                "hook": s.hook,
                "title": s.title,
                "description": s.description,
                "id": s.id,
                "prefetch": dict(s.prefetch),
                "extension": {"org.oligocds.ruleset": dict(ruleset)},
            }
            for s in SERVICES
        ]
    }
