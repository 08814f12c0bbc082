"""Card identifiers (the UUIDv5 shortcut gives what the standard library gives) and the summary card's detail."""

from __future__ import annotations

import json
import uuid
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from service.bootstrap import Container
from service.fhir.cards import card_uuid, uuid5_text
from tests.conftest import FIXTURES


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.text())
def test_uuid5_text_equals_the_standard_library(namespace: bytes, name: str) -> None:
    assert uuid5_text(namespace, name) == str(uuid.uuid5(uuid.UUID(bytes=namespace), name))


def test_card_uuid_is_the_uuid5_of_contract_section_3() -> None:
    # Stable per (patient, rule, code, lesion) (contract.md §3): UUIDv5 of "<patient>#<rule>#<code>[#<lesion>]" in the
    # namespace UUIDv5(URL, canonical base), as the cards have always been named.
    base = "https://oligocds.example/fhir"
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, base)
    assert card_uuid(base, "Patient/1", "SABR-01", "sabr") == str(uuid.uuid5(namespace, "Patient/1#SABR-01#sabr"))
    lesion = card_uuid(base, "Patient/1", "SURG-MIRELS", "fixation", "Condition/m1")
    assert lesion == str(uuid.uuid5(namespace, "Patient/1#SURG-MIRELS#fixation#Condition/m1"))


def test_the_summary_card_lists_the_five_classification_answers(container: Container) -> None:
    # clinical-rules §2.5: "the detail lists the five answers and which were derived". Here the OMD date comes from
    # an imaging CancerDiseaseStatus (derived), the other answers are recorded or read from the medication list.
    bundle = json.loads(
        (FIXTURES / "class-metachronous-omd-date-from-imaging-disease-status" / "bundle.json").read_text()
    )
    (result,) = container.evaluator.evaluate_json(bundle, date(2026, 11, 26))
    detail = result["cards"][0]["detail"]
    answers = detail.split("**Classification answers (ESTRO/EORTC 2020)**\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert answers == [
        "1. Polymetastatic disease before this OMD diagnosis: **no**",
        "2. Previous diagnosis of OMD: **no**",
        "3. Primary diagnosis → OMD diagnosis (months; ≤ 6 = synchronous): **22 (2025-01-10 → 2026-10-20)** (derived)",
        "4. OMD diagnosed during active systemic therapy: **no**",
        "5. Any OMD lesion progressing on current imaging: **no**",
    ]


def test_every_recommendation_code_of_the_rule_files_has_a_care_plan_display() -> None:
    # fhir-mapping §6.3: activity.detail.code = {system, code, display}
    import re

    from service.domain.catalogue import CODE_DISPLAY

    files = (FIXTURES.parent.parent / "service" / "rules" / "files").glob("*.yaml")
    emitted = {code for path in files for code in re.findall(r"^\s+- code: ([a-z0-9-]+)", path.read_text(), re.M)}
    assert emitted and emitted <= CODE_DISPLAY.keys(), sorted(emitted - CODE_DISPLAY.keys())
