"""DQ-06 keeps both differing copies of one resource id; the outputs still name each subject once."""

from __future__ import annotations

import json
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


def test_the_dq06_issue_names_the_inputs_the_copies_made_conflicting(container: Container) -> None:
    # contract.md §3: an issue's input names a §1.2 fact. Two copies of one ECOG Observation with other values make
    # `ecog` conflicting, and that is the input DQ-06's issue names; copies that differ in nothing a fact reads
    # (two body sites of one Condition, both kept as lesions) leave only the generic `duplicate_resource`.
    ecog = {
        "resourceType": "Observation",
        "id": "ps",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]},
        "effectiveDateTime": "2026-11-10",
        "valueInteger": 0,
    }
    changed = {**ecog, "valueInteger": 2}
    (result,) = container.evaluator.evaluate_json(
        collection([*breast_patient(), metastasis("280849005"), ecog, changed]), date(2026, 11, 26)
    )
    dq06 = [(i["code"], i["input"]) for i in result["issues"] if "DQ-06" in i["rules"]]
    assert dq06 == [("conflicting-input", "ecog")]
    (result,) = container.evaluator.evaluate_json(bundle(), date(2026, 11, 26))
    dq06 = [(i["code"], i["input"]) for i in result["issues"] if "DQ-06" in i["rules"]]
    assert dq06 == [("conflicting-input", "duplicate_resource")]


def test_resources_without_id_keep_a_reference_of_their_own(container: Container) -> None:
    # A collection Bundle may hold resources without id (and without a urn fullUrl): two such metastases are two
    # lesions with two references in the evidence and the CarePlan, never one "Condition/None"; the same content
    # gets the same reference every time.
    mets = [{k: v for k, v in metastasis(site).items() if k != "id"} for site in ("280849005", "61032001")]
    bundle = collection([*breast_patient(), *mets])
    (first,) = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    (again,) = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    lesions = [lesion["condition"] for lesion in first["assessment"]["lesions"]]
    assert len(set(lesions)) == 2 and not any(ref.endswith("/None") for ref in lesions)
    assert "None" not in json.dumps(first["carePlan"])
    assert lesions == [lesion["condition"] for lesion in again["assessment"]["lesions"]]
