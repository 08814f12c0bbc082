"""The use case: FHIR bundle → facts → rules → result objects (contract.md §3).

The only module that joins `fhir/` and `rules/`. Parsing, validation and fact reading run on the caller's
thread; the rules run on the engine's owner thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from service.domain.assessment import assessment, class_answers
from service.domain.facts import InputIssue, PatientFacts
from service.domain.result import Issue, Recommendation, RulesetInfo
from service.fhir.cards import cards
from service.fhir.careplan import care_plan
from service.fhir.facts import FactOptions, patient_facts
from service.fhir.parse import ParsedBundle, PatientResources, parse_bundle, read_bundle
from service.fhir.util import canonical, has_id
from service.rules.engine import RulesEngine
from service.rules.evaluator import RuleResults, RuleRunner


@dataclass(frozen=True, slots=True)
class Evaluator:
    engine: RulesEngine
    runner: Callable[[], RuleRunner]  # the current ruleset (hot reload swaps it)
    options: FactOptions
    canonical_base: str

    def evaluate_bytes(self, body: bytes, as_of: date | None = None) -> list[dict[str, Any]]:
        return self.evaluate_parsed(parse_bundle(body), as_of)

    def evaluate_json(self, data: Any, as_of: date | None = None) -> list[dict[str, Any]]:
        return self.evaluate_parsed(read_bundle(data), as_of)

    def evaluate_parsed(self, parsed: ParsedBundle, as_of: date | None = None) -> list[dict[str, Any]]:
        day = as_of or datetime.now(UTC).date()
        issues = list(parsed.issues)
        results = []
        for group in parsed.patients:
            if parsed.shared:  # Medications the patient's medication records may reference
                group = PatientResources(group.patient, (*group.resources, *parsed.shared))
            results.append(self.evaluate_patient(group, day, parsed.duplicate_conflicts.get(group.patient, ())))
        if issues:
            for result in results:
                result["issues"] = merged_issues([*result["issues"], *(issue_json(i) for i in issues)])
        return results

    def evaluate_patient(
        self, group: PatientResources, as_of: date, duplicates: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        resources = [_with_content_id(r) if _needs_id(r) else r for r in group.resources]
        pf = patient_facts(group.patient, resources, as_of, self.options, duplicates)
        runner = self.runner()
        outcome = self.engine.call(runner.evaluate, pf)
        return render(pf, outcome, runner, self.canonical_base)


def _needs_id(resource: dict[str, Any]) -> bool:
    """Not a Patient (an id-less Patient is keyed by its fullUrl) and without an id."""
    return resource.get("resourceType") != "Patient" and not has_id(resource)


def _with_content_id(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource sent without id (valid in a collection Bundle, and not named by a `urn:` fullUrl) with an id of
    its content for the evaluation: two such metastasis Conditions stay two lesions with two references in the
    evidence and the CarePlan, instead of one "Condition/None". The same content always gets the same id."""
    return {**resource, "id": f"sha256-{hashlib.sha256(canonical(resource)).hexdigest()[:24]}"}


def render(pf: PatientFacts, outcome: RuleResults, runner: RuleRunner, canonical_base: str) -> dict[str, Any]:
    rs = runner.ruleset
    info = RulesetInfo(rs.name, rs.version, rs.digest)
    summary = assessment(pf)
    plan = care_plan(pf.patient, info, outcome.recommendations, pf.cancer_conditions, canonical_base)
    return {
        "patient": pf.patient,
        "evaluatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "asOf": pf.as_of.isoformat(),
        "ruleset": {"name": info.name, "version": info.version, "digest": info.digest},
        "assessment": summary,
        "recommendations": [_rec_json(r) for r in outcome.recommendations],
        "issues": [_issue_json(i) for i in outcome.issues],
        "carePlan": plan,
        "cards": cards(
            pf.patient, summary, outcome.recommendations, outcome.issues, info, canonical_base, plan, class_answers(pf)
        ),
    }


def _rec_json(rec: Recommendation) -> dict[str, Any]:
    return {
        "code": rec.code,
        "rule": rec.rule,
        "indicator": rec.indicator,
        "summary": rec.summary,
        "detail": rec.detail,
        "evidence": list(rec.evidence),
        "citation": rec.citation,
    }


def issue_json(issue: InputIssue) -> dict[str, Any]:
    """A finding about the input, as an `issues` entry of the result."""
    return _issue_json(Issue(issue.code, issue.input, issue.rules, issue.detail))


def merged_issues(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (code, input) (clinical-rules §1.1), also across the Bundle-level findings: rules united,
    the details of different findings joined with "; "."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        key = (entry["code"], entry["input"])
        old = merged.get(key)
        if old is None:
            merged[key] = {**entry, "rules": list(entry["rules"])}
            continue
        old["rules"] += [r for r in entry["rules"] if r not in old["rules"]]
        if entry["detail"] not in old["detail"].split("; "):
            old["detail"] = f"{old['detail']}; {entry['detail']}"
    return sorted(merged.values(), key=lambda e: (e["code"], e["input"]))


def _issue_json(issue: Issue) -> dict[str, Any]:
    return {"code": issue.code, "input": issue.input, "rules": list(issue.rules), "detail": issue.detail}
