"""Rule test cases as data: a folder with `bundle.json`, `scenario.json` (asOf, description) and
`expected.json` (a subset of the result object). Used by `oligocds rules test` and by pytest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from service.evaluate import Evaluator


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def find_cases(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/expected.json") if (p.parent / "bundle.json").is_file())


def run_case(folder: Path, evaluator: Evaluator) -> CaseResult:
    scenario = _load(folder / "scenario.json") if (folder / "scenario.json").is_file() else {}
    expected = _load(folder / "expected.json")
    as_of = date.fromisoformat(scenario["asOf"]) if "asOf" in scenario else None
    results = evaluator.evaluate_bytes((folder / "bundle.json").read_bytes(), as_of)
    if len(results) != 1:
        return CaseResult(folder.name, (f"expected one patient result, got {len(results)}",))
    return CaseResult(folder.name, tuple(compare(expected, results[0])))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def compare(expected: dict[str, Any], result: dict[str, Any]) -> list[str]:
    failures: list[str] = []
    for key, want in expected.get("assessment", {}).items():
        got = result["assessment"].get(key)
        if got != want:
            failures.append(f"assessment.{key}: expected {want!r}, got {got!r}")
    recs = result["recommendations"]
    for want in expected.get("recommendations", []):
        match = [r for r in recs if r["code"] == want["code"] and r["rule"] == want.get("rule", r["rule"])]
        if not match:
            failures.append(f"missing recommendation {want['code']} ({want.get('rule')})")
        elif "indicator" in want and all(r["indicator"] != want["indicator"] for r in match):
            failures.append(f"{want['code']}: indicator {match[0]['indicator']}, expected {want['indicator']}")
    for code in expected.get("absentRecommendations", []):
        if any(r["code"] == code for r in recs):
            failures.append(f"unexpected recommendation {code}")
    for want in expected.get("issues", []):
        found = [i for i in result["issues"] if i["code"] == want["code"] and i["input"] == want["input"]]
        if not found:
            failures.append(f"missing issue {want['code']} / {want['input']}")
        elif not any(set(want.get("rulesContain", [])) <= set(i["rules"]) for i in found):
            failures.append(
                f"issue {want['code']} / {want['input']}: rules {found[0]['rules']} lack {want['rulesContain']}"
            )
    for want in expected.get("absentIssues", []):
        if any(i["code"] == want["code"] and i["input"] == want["input"] for i in result["issues"]):
            failures.append(f"unexpected issue {want['code']} / {want['input']}")
    return failures
