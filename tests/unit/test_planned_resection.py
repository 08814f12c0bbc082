"""clinical-rules.md §5.3: an open resection planned at a spine/pelvis lesion is stated in the SURG-SITE detail
(the indicator stays info, contract.md §4)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.bootstrap import Container
from tests.resources import PATIENT, SCT, breast_patient, collection, metastasis

L1 = "61032001"


def request(status: str, text: str, **target: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": status,
        "intent": "plan",
        "code": {"text": text},
        "subject": PATIENT,
        **target,
    }


def detail(container: Container, *extra: dict[str, Any]) -> str:
    bundle = collection([*breast_patient(), metastasis(L1), *extra])
    (result,) = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    (rec,) = [r for r in result["recommendations"] if r["code"] == "minimally-invasive-stabilisation"]
    assert rec["indicator"] == "info"
    return str(rec["detail"])


@pytest.mark.parametrize(
    "target",
    [{"reasonReference": [{"reference": "Condition/m1"}]}, {"bodySite": [{"coding": [{"system": SCT, "code": L1}]}]}],
)
def test_a_planned_open_resection_at_the_lesion_is_named(container: Container, target: dict[str, Any]) -> None:
    text = detail(container, request("active", "En bloc resection of vertebral metastasis", **target))
    assert "An open resection is planned at this lesion (ServiceRequest/sr1)" in text


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [request("completed", "En bloc resection", reasonReference=[{"reference": "Condition/m1"}])],
        [request("active", "Percutaneous vertebroplasty", reasonReference=[{"reference": "Condition/m1"}])],
        [request("active", "En bloc resection", bodySite=[{"coding": [{"system": SCT, "code": "280849005"}]}])],
    ],
    ids=["none", "completed", "not-a-resection", "other-site"],
)
def test_no_note_without_a_planned_resection_at_the_lesion(container: Container, extra: list[dict[str, Any]]) -> None:
    assert "open resection" not in detail(container, *extra)
