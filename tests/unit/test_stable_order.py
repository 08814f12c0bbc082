"""The same data in another Bundle order gives the same CarePlan, byte for byte (contract.md §3; fhir-mapping §6.3
"stable order of every list"). DQ-06 Bundles (one id, differing copies: the first copy stands) are left out."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import orjson
import pytest

from service.bootstrap import Container
from tests.conftest import FIXTURES

BUNDLES = sorted(p for p in FIXTURES.glob("*/bundle.json") if not p.parent.name.startswith("dq06"))


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.parent.name)
def test_reversed_bundle_gives_the_same_care_plan_and_recommendations(container: Container, path: Path) -> None:
    bundle = json.loads(path.read_text())
    reversed_bundle = {**bundle, "entry": list(reversed(bundle["entry"]))}
    as_of = date(2026, 11, 26)
    first = container.evaluator.evaluate_json(bundle, as_of)
    second = container.evaluator.evaluate_json(reversed_bundle, as_of)
    by_patient = {r["patient"]: r for r in second}
    for result in first:
        other = by_patient[result["patient"]]
        assert orjson.dumps(result["carePlan"]) == orjson.dumps(other["carePlan"])
        assert orjson.dumps(result["recommendations"]) == orjson.dumps(other["recommendations"])
        assert result["assessment"] == other["assessment"]
