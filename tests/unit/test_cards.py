"""Card identifiers: the UUIDv5 shortcut gives what the standard library gives."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from service.fhir.cards import card_uuid, uuid5_text


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
