"""The fact readers keep the promise the rule manifest relies on: every closed-world fact is always known."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from service.config import Settings
from service.fhir.facts import FactOptions, patient_facts
from service.fhir.parse import parse_bundle
from service.rules.loader import default_rules_dir, load_ruleset
from tests.conftest import FIXTURES, ROOT

CLOSED = load_ruleset(default_rules_dir(), Settings().rule_settings()).closed_world
LESION = {"lesion_organ", "lesion_painful"}  # the lesion-level ones; the rest are patient facts
BUNDLES = [*sorted(FIXTURES.glob("*/bundle.json")), ROOT / "examples" / "oligo-breast.json"]
MINIMAL = (
    b'{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]}'
)


def _check(body: bytes) -> None:
    for group in parse_bundle(body).patients:
        pf = patient_facts(group.patient, group.resources, date(2026, 11, 26), FactOptions())
        missing = {n for n in CLOSED - LESION if not pf.get(n).usable}
        assert missing == set(), group.patient
        for lesion in pf.lesions:
            assert {n for n in LESION if not (lesion.facts.get(n) and lesion.facts[n].usable)} == set()


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.parent.name)
def test_closed_world_facts_are_always_known(path: Path) -> None:
    _check(path.read_bytes())


def test_closed_world_facts_are_known_for_an_empty_record() -> None:
    _check(MINIMAL)
