"""The CarePlan and the CDS Hooks cards of a result (contract.md §3, cds-hooks.md §6)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.careplan import CarePlan

from service.bootstrap import Container
from service.cases import find_cases
from tests.conftest import FIXTURES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oligo-breast.json"
AS_OF = date(2026, 11, 26)


def _results(container: Container) -> list[dict[str, Any]]:
    out = []
    for folder in [*find_cases(FIXTURES), EXAMPLE.parent]:
        path = folder / "bundle.json" if folder.is_dir() and (folder / "bundle.json").exists() else EXAMPLE
        out.extend(container.evaluator.evaluate_bytes(path.read_bytes(), AS_OF))
    return out


@pytest.fixture(scope="module")
def results(container: Container) -> list[dict[str, Any]]:
    return _results(container)


def _no_empty(value: Any, where: str = "card") -> None:
    assert value is not None and value not in ("", [], {}), f"{where} is empty"
    if isinstance(value, dict):
        for key, item in value.items():
            _no_empty(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_empty(item, f"{where}[{i}]")


def test_care_plans_are_valid_r4_drafts(results: list[dict[str, Any]]) -> None:
    for result in results:
        plan = result["carePlan"]
        CarePlan.model_validate(plan)
        assert plan["status"] == "draft" and plan["intent"] == "proposal"
        assert plan["subject"] == {"reference": result["patient"]}
        assert plan["instantiatesUri"] == [f"http://oligocds.org/fhir/ruleset/oligocds|{result['ruleset']['version']}"]
        actionable = [
            r
            for r in result["recommendations"]
            if any(a["detail"]["code"]["coding"][0]["code"] == r["code"] for a in plan.get("activity", []))
        ]
        for activity in plan.get("activity", []):
            detail = activity["detail"]
            assert detail["status"] == "not-started"
            assert detail["code"]["coding"][0]["system"] == "http://oligocds.org/fhir/CodeSystem/oligocds"
            for ref in detail.get("reasonReference", []):
                assert ref["reference"].split("/")[0] in {
                    "Condition",
                    "Observation",
                    "DiagnosticReport",
                    "DocumentReference",
                }
        assert len(actionable) >= len(plan.get("activity", []))


def test_mdt_review_is_an_activity_data_conflict_is_not(results: list[dict[str, Any]]) -> None:
    for result in results:
        activity_codes = {a["detail"]["code"]["coding"][0]["code"] for a in result["carePlan"].get("activity", [])}
        assert "data-conflict" not in activity_codes
        mdt = [r for r in result["recommendations"] if r["code"] == "mdt-review"]
        if mdt and mdt[0]["indicator"] == "warning":
            assert "mdt-review" in activity_codes


def test_cards_follow_the_cds_hooks_card_rules(results: list[dict[str, Any]]) -> None:
    checked = 0
    for result in results:
        for card in result["cards"]:
            _no_empty(card)
            assert len(card["summary"]) < 140
            assert card["indicator"] in {"info", "warning", "critical"}
            assert card["source"]["label"].startswith("OligoCDS ")
            assert {"system", "code"} <= card["source"]["topic"].keys()
            if card["indicator"] == "critical":
                assert all(r.get("display") for r in card["overrideReasons"])  # cds-resp-4
            if "suggestions" in card:
                assert card["selectionBehavior"] in {"at-most-one", "any"}  # cds-resp-6
                assert sum(1 for s in card["suggestions"] if s.get("isRecommended")) <= 1  # cds-resp-1
                for s in card["suggestions"]:
                    assert all(a.get("description") for a in s["actions"])  # cds-resp-5
            checked += 1
    assert checked > 20


def test_summary_card_first_then_by_indicator(results: list[dict[str, Any]]) -> None:
    rank = {"critical": 0, "warning": 1, "info": 2}
    for result in results:
        cards = result["cards"]
        if result["assessment"]["omdState"] == "not-applicable":
            assert all(c["source"]["label"].split()[1] != "OMD-01" for c in cards)
            continue
        assert cards[0]["source"]["topic"]["code"] == "oligometastatic-assessment"
        ranks = [rank[c["indicator"]] for c in cards[1:]]
        assert ranks == sorted(ranks)


def test_recommendation_details_explain_themselves(results: list[dict[str, Any]]) -> None:
    for result in results:
        for rec in result["recommendations"]:
            assert len(rec["summary"]) < 140
            assert rec["detail"].rstrip().endswith("For discussion at tumor board.")
            assert f"(rule {rec['rule']})" in rec["detail"] and rec["citation"]


def test_reevaluation_is_byte_for_byte_stable(container: Container) -> None:
    body = EXAMPLE.read_bytes()
    first, second = (container.evaluator.evaluate_bytes(body, AS_OF)[0] for _ in range(2))
    for result in (first, second):
        result.pop("evaluatedAt")
    assert orjson.dumps(first) == orjson.dumps(second)
    assert first["carePlan"]["id"].startswith("oligocds-")


def test_card_uuids_are_stable_per_patient_rule_and_code(container: Container) -> None:
    (result,) = container.evaluator.evaluate_bytes(EXAMPLE.read_bytes(), AS_OF)
    later = container.evaluator.evaluate_bytes(EXAMPLE.read_bytes(), date(2026, 11, 27))[0]
    assert [c["uuid"] for c in result["cards"]] == [c["uuid"] for c in later["cards"]]
    assert len({c["uuid"] for c in result["cards"]}) == len(result["cards"])


def test_a_patient_with_many_rules_gets_every_activity_in_a_stable_order(container: Container) -> None:
    bundle = (FIXTURES / "tx-multi-rule-breast-omd" / "bundle.json").read_bytes()
    (result,) = container.evaluator.evaluate_bytes(bundle, AS_OF)
    activities = result["carePlan"]["activity"]
    codes = [a["detail"]["code"]["coding"][0]["code"] for a in activities]
    by_code = {r["code"]: r["rule"] for r in result["recommendations"]}
    keys = [(by_code[c], c) for c in codes]
    assert keys == sorted(keys) and len(codes) >= 5
    again = container.evaluator.evaluate_bytes(bundle, AS_OF)[0]["carePlan"]
    assert again == result["carePlan"]


def test_recommendation_cards_offer_their_own_care_plan_proposal_and_link_their_source(container: Container) -> None:
    bundle = (FIXTURES / "tx-multi-rule-breast-omd" / "bundle.json").read_bytes()
    (result,) = container.evaluator.evaluate_bytes(bundle, AS_OF)
    activity_codes = {a["detail"]["code"]["coding"][0]["code"] for a in result["carePlan"]["activity"]}
    by_code = {r["code"]: r for r in result["recommendations"]}
    with_plan = linked = 0
    for card in result["cards"][1:]:  # the summary card first
        _no_empty(card)
        code = card["source"]["topic"]["code"]
        if code in activity_codes:
            (suggestion,) = card["suggestions"]
            assert card["selectionBehavior"] == "at-most-one"
            assert suggestion["label"] == "Add to draft care plan" and suggestion["isRecommended"] is False
            assert suggestion["uuid"] not in {c["uuid"] for c in result["cards"]}
            (action,) = suggestion["actions"]
            assert action["type"] == "create" and action["description"]
            plan = action["resource"]
            CarePlan.model_validate(plan)
            assert plan["status"] == "draft" and plan["intent"] == "proposal"
            assert plan["subject"] == {"reference": result["patient"]}
            (activity,) = plan["activity"]
            assert activity["detail"]["code"]["coding"][0]["code"] == code
            assert plan["id"] != result["carePlan"]["id"]
            with_plan += 1
        else:
            assert "suggestions" not in card and "selectionBehavior" not in card
        url = card["source"].get("url")
        if url:
            (link,) = card["links"]
            assert link == {"label": link["label"], "url": url, "type": "absolute"}
            assert link["label"].startswith("Source: ") and len(link["label"]) <= len("Source: ") + 80
            assert by_code[code]["citation"][:20] in link["label"]
            linked += 1
        else:
            assert "links" not in card
    assert with_plan == len(activity_codes) >= 5 and linked >= 1
    again = container.evaluator.evaluate_bytes(bundle, date(2026, 11, 27))[0]
    suggested = [s for c in again["cards"][1:] for s in c.get("suggestions", [])]
    assert suggested == [s for c in result["cards"][1:] for s in c.get("suggestions", [])]  # stable ids and uuids
