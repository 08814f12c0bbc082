"""Issues are one entry per (code, input), listing every rule (clinical-rules.md §1.1)."""

from __future__ import annotations

import copy
import json
from collections import Counter
from datetime import date

from service.bootstrap import Container
from tests.conftest import FIXTURES


def test_two_invalid_values_of_one_input_are_one_issue_naming_both(container: Container) -> None:
    bundle = json.loads((FIXTURES / "dq04-invalid-ecog" / "bundle.json").read_text())
    ecog = next(
        e
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation" and "89247-1" in json.dumps(e["resource"]["code"])
    )
    second = copy.deepcopy(ecog)
    second["resource"]["id"] += "-b"
    second["resource"]["valueInteger"] = 9
    second.pop("fullUrl", None)
    bundle["entry"].append(second)
    [result] = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    counts = Counter((i["code"], i["input"]) for i in result["issues"])
    assert all(n == 1 for n in counts.values()), counts
    [invalid] = [i for i in result["issues"] if (i["code"], i["input"]) == ("invalid-value", "ecog")]
    assert "ECOG 9" in invalid["detail"] and "ECOG -1" in invalid["detail"]


def test_mirels_missing_input_names_each_lesion_and_its_missing_components(container: Container) -> None:
    """clinical-rules.md §5.1: the Mirels missing-input detail names the lesion and the missing components."""
    bundle = json.loads((FIXTURES / "tx-surg-mirels-partial-femur-shaft" / "bundle.json").read_text())
    femur = next(e for e in bundle["entry"] if e["resource"]["id"] == "tx-mirelspart-met-bone-2")
    humerus = copy.deepcopy(femur)
    humerus["resource"]["id"] = "tx-mirelspart-met-humerus"
    humerus["resource"]["bodySite"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "85050009"}]}]
    humerus.pop("fullUrl", None)
    bundle["entry"].append(humerus)
    [result] = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    [missing] = [i for i in result["issues"] if (i["code"], i["input"]) == ("missing-input", "mirels")]
    # the femur's assessment lacks the size; the humerus has none (its site comes from the body site)
    assert "Condition/tx-mirelspart-met-bone-2: missing mirels-size" in missing["detail"]
    humerus_part = "Condition/tx-mirelspart-met-humerus: missing mirels-pain, mirels-lesion-type, mirels-size"
    assert humerus_part in missing["detail"]


def test_bundle_level_findings_are_one_entry_per_code_and_input(container: Container) -> None:
    # Two Observations that are not valid FHIR (a value of the wrong type) are Bundle-level invalid-value findings
    # about the resource type; they join as one entry, naming both, in the patient's result.
    bundle = json.loads((FIXTURES / "dq04-invalid-ecog" / "bundle.json").read_text())
    for n in (1, 2):
        bundle["entry"].append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"broken-{n}",
                    "status": "final",
                    "code": {"text": "anything"},
                    "subject": {"reference": "Patient/fx-dq04"},
                    "valueInteger": "not a number",
                }
            }
        )
    [result] = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    counts = Counter((i["code"], i["input"]) for i in result["issues"])
    assert all(n == 1 for n in counts.values()), counts
    [invalid] = [i for i in result["issues"] if (i["code"], i["input"]) == ("invalid-value", "Observation")]
    assert invalid["detail"].count("Bundle.entry[") == 2


def test_mdt_review_lists_data_conflicts_with_the_other_recommendations(container: Container) -> None:
    # clinical-rules §1.1 Order: "the mdt-review detail lists the other recommendations for discussion".
    bundle = json.loads((FIXTURES / "dq01-cm0-with-active-metastasis" / "bundle.json").read_text())
    [result] = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    codes = {r["code"] for r in result["recommendations"]}
    assert {"mdt-review", "data-conflict"} <= codes
    [mdt] = [r for r in result["recommendations"] if r["code"] == "mdt-review"]
    [conflict] = [r for r in result["recommendations"] if r["code"] == "data-conflict"]
    also = mdt["detail"].split("**Also for discussion**", 1)[1].split("**Inputs used**", 1)[0]
    assert f"{conflict['summary']} (DQ-01)" in also


def test_missing_input_details_carry_what_the_rules_say_they_need(container: Container) -> None:
    # clinical-rules §6.10: castration status unknown -> missing-input "castration-resistant status needed";
    # §6.2: CrCl missing -> "CrCl (Cockcroft–Gault) needed before zoledronic acid" (rule files `missing_detail`).
    bundle = json.loads((FIXTURES / "tx-ra223-castration-status-unknown" / "bundle.json").read_text())
    [result] = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    issues = {(i["code"], i["input"]): i for i in result["issues"]}
    assert issues[("missing-input", "castration_status")]["detail"].endswith("castration-resistant status needed")
    crcl = issues.get(("missing-input", "crcl"))
    if crcl is not None:
        assert "CrCl (Cockcroft–Gault) needed before zoledronic acid" in crcl["detail"]


def test_ingest_answers_list_the_messages_findings_once_per_code_and_input() -> None:
    # the same one-entry-per-(code, input) rule as /evaluate (clinical-rules §1.1), for POST /ingest and Kafka
    from service.domain.facts import InputIssue
    from service.ingest import with_issues

    result = {"issues": [{"code": "missing-input", "input": "ecog", "rules": ["SABR-01"], "detail": "ECOG: unknown"}]}
    findings = [
        InputIssue("invalid-value", "Observation", "Bundle.entry[1].resource: bad"),
        InputIssue("invalid-value", "Observation", "Bundle.entry[2].resource: bad"),
    ]
    issues = with_issues(result, findings)["issues"]
    assert [(i["code"], i["input"]) for i in issues] == [("invalid-value", "Observation"), ("missing-input", "ecog")]
    assert issues[0]["detail"] == "Bundle.entry[1].resource: bad; Bundle.entry[2].resource: bad"
