"""DQ-06 keeps both differing copies of one resource id; the outputs still name each subject once."""

from __future__ import annotations

from datetime import date
from typing import Any

from service.bootstrap import Container
from tests.resources import breast_patient, collection, metastasis


def bundle() -> dict[str, Any]:
    # the same Condition id twice with other content (DQ-06: both kept): T12, then L1
    return collection([*breast_patient(), metastasis("280849005"), metastasis("61032001")])


def test_differing_copies_of_one_condition_give_one_lesion_one_recommendation_each(container: Container) -> None:
    (result,) = container.evaluator.evaluate_json(bundle(), date(2026, 11, 26))
    assert [lesion["condition"] for lesion in result["assessment"]["lesions"]] == ["Condition/m1"]
    subjects = [(r["rule"], r["code"], r.get("lesion")) for r in result["recommendations"]]
    assert len(subjects) == len(set(subjects))  # contract.md §3: one per (rule, code, subject)
    assert any(r["code"] == "data-conflict" and r["rule"] == "DQ-06" for r in result["recommendations"])
    uuids = [card["uuid"] for card in result["cards"]]
    assert len(uuids) == len(set(uuids))
    addresses = [a["reference"] for a in result["carePlan"]["addresses"]]
    assert addresses == ["Condition/prim", "Condition/m1"]
