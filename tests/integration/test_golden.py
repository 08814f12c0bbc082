"""Golden scenarios: tests/fixtures/<scenario>/bundle.json → expected.json (a subset of the result object),
written from the specification alone. The same cases run with `oligocds rules test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bootstrap import Container
from service.cases import find_cases, run_case
from tests.conftest import FIXTURES

CASES = find_cases(FIXTURES)


def test_there_are_enough_scenarios() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("folder", CASES, ids=lambda p: p.name)
def test_scenario(container: Container, folder: Path) -> None:
    result = run_case(folder, container.evaluator)
    assert result.failures == ()
