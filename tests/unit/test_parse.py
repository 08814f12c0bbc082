"""Bundle parsing: JSON and Bundle errors, per-resource validation, patient grouping, duplicates (DQ-06)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from service.fhir.parse import USED_TYPES, BundleError, ParsedBundle, parse_bundle, read_bundle
from tests.conftest import shared_dir

MCODE = shared_dir() / "conformance" / "mcode"
Json = dict[str, Any]


def patient(pid: str | None = "p1", **extra: Any) -> Json:
    return {"resourceType": "Patient", **({"id": pid} if pid else {}), **extra}


def observation(oid: str, subject: str | None = "Patient/p1", **extra: Any) -> Json:
    obs: Json = {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "ECOG"}}
    if subject is not None:
        obs["subject"] = {"reference": subject}
    return {**obs, **extra}


def bundle(*resources: Any, kind: str = "collection", full_urls: list[str] | None = None) -> Json:
    entries = []
    for i, resource in enumerate(resources):
        entry: Json = {"resource": resource}
        if full_urls and full_urls[i]:
            entry["fullUrl"] = full_urls[i]
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def groups(parsed: ParsedBundle) -> dict[str, list[str]]:
    """patient -> the "Type/id" of its resources, in order."""
    return {g.patient: [f"{r['resourceType']}/{r.get('id')}" for r in g.resources] for g in parsed.patients}


def details(parsed: ParsedBundle) -> list[str]:
    return [i.detail for i in parsed.issues]


# --- input that cannot be used at all -------------------------------------------------------------


def test_malformed_json_is_400_with_its_position() -> None:
    with pytest.raises(BundleError) as err:
        parse_bundle(b'{"resourceType": "Bundle",\n "entry": [,]}')
    assert (err.value.status, err.value.code) == (400, "invalid")
    assert "line 2 column 12" in err.value.diagnostics


def test_empty_body_is_400() -> None:
    with pytest.raises(BundleError) as err:
        parse_bundle(b"")
    assert err.value.status == 400 and "empty" in err.value.diagnostics


def test_a_json_array_is_422_naming_bundle() -> None:
    with pytest.raises(BundleError) as err:
        parse_bundle(b"[1, 2]")
    assert (err.value.status, err.value.code) == (422, "structure")
    assert "Bundle" in err.value.diagnostics and "array" in err.value.diagnostics


def test_a_lone_patient_is_422_naming_bundle_and_what_was_sent() -> None:
    with pytest.raises(BundleError) as err:
        read_bundle(patient())
    assert (err.value.status, err.value.code) == (422, "structure")
    assert "Bundle" in err.value.diagnostics and "Patient" in err.value.diagnostics


@pytest.mark.parametrize("data", [{"resourceType": "Bundle", "type": "collection"}, bundle()])
def test_a_bundle_without_entries_is_422(data: Json) -> None:
    with pytest.raises(BundleError) as err:
        read_bundle(data)
    assert err.value.status == 422
    assert "Bundle has no entries" in err.value.diagnostics


def test_bundle_error_message_carries_status_and_diagnostics() -> None:
    exc = BundleError(422, "processing", "Bundle.entry[3].resource.subject: missing")
    assert str(exc) == "422 processing: Bundle.entry[3].resource.subject: missing"


def test_a_bundle_with_nothing_patient_linked_is_422_saying_why() -> None:
    data = bundle(observation("o1", subject=None), {"resourceType": "Encounter", "id": "e1"}, [])
    with pytest.raises(BundleError) as err:
        read_bundle(data)
    assert (err.value.status, err.value.code) == (422, "processing")
    diagnostics = err.value.diagnostics
    assert diagnostics.startswith("Bundle has no patient-linked resources (3 entries:")
    assert "1 invalid" in diagnostics and "1 without a patient link" in diagnostics
    assert "1 of types the rules do not use" in diagnostics


# --- validation -----------------------------------------------------------------------------------


def test_an_invalid_observation_is_an_issue_and_the_rest_is_kept() -> None:
    parsed = read_bundle(bundle(patient(), observation("bad", valueInteger="abc"), observation("ok")))
    (issue,) = parsed.issues
    assert (issue.code, issue.input, issue.rules) == ("invalid-value", "Observation", ())
    assert issue.detail.startswith("Bundle.entry[1].resource.valueInteger: ")
    assert "'abc'" in issue.detail
    assert groups(parsed) == {"Patient/p1": ["Patient/p1", "Observation/ok"]}


def test_a_wrongly_typed_status_names_the_element() -> None:
    parsed = read_bundle(bundle(patient(), observation("bad", status=5)))
    assert details(parsed) == ["Bundle.entry[1].resource.status: Input should be a valid string (got 5)"]


def test_a_status_outside_the_r4_codes_is_an_invalid_value_not_a_silent_drop() -> None:
    # FHIR R4 binds `status` to a required value set, which the R4B models do not check: "not-a-status" is reported
    # (the sender did send an ECOG, so "missing" alone would mislead) and the resource is not used
    parsed = read_bundle(bundle(patient(), observation("bad", status="not-a-status"), observation("ok")))
    assert details(parsed) == ["Bundle.entry[1].resource.status: 'not-a-status' is not a FHIR R4 Observation status"]
    assert groups(parsed) == {"Patient/p1": ["Patient/p1", "Observation/ok"]}
    for status in ("registered", "preliminary", "amended", "corrected", "cancelled", "entered-in-error", "unknown"):
        assert not read_bundle(bundle(patient(), observation("s", status=status))).issues, status


def test_nested_errors_get_a_dotted_fhir_path() -> None:
    component = {"code": {"text": "x"}, "valueQuantity": {"value": "many"}}
    parsed = read_bundle(bundle(patient(), observation("bad", component=[component])))
    (detail,) = details(parsed)
    assert detail.startswith("Bundle.entry[1].resource.component[0].valueQuantity.value: ")


def test_two_value_types_are_reported_as_one_choice_element() -> None:
    parsed = read_bundle(bundle(patient(), observation("bad", valueInteger=1, valueString="one")))
    assert details(parsed) == [
        "Bundle.entry[1].resource.value[x]: only one type allowed, got valueInteger, valueString"
    ]


def test_a_missing_required_element_says_missing() -> None:
    obs = observation("bad")
    del obs["status"]
    parsed = read_bundle(bundle(patient(), obs))
    assert details(parsed) == ["Bundle.entry[1].resource.status: missing"]


def test_at_most_three_errors_are_spelled_out() -> None:
    bad = observation("bad", status=5, category={"text": "x"}, issued="yesterday", bogus=1, valueInteger="x")
    (detail,) = details(read_bundle(bundle(patient(), bad)))
    assert detail.count("Bundle.entry[1].resource.") == 3
    assert detail.endswith("(and 2 more)")


def test_unknown_extensions_are_accepted_and_kept() -> None:
    ext = [{"url": "http://example.org/fhir/StructureDefinition/never-heard-of-it", "valueString": "x"}]
    obs = observation(
        "o1",
        extension=ext,
        modifierExtension=ext,
        _status={"extension": ext},
        code={"text": "ECOG", "extension": ext},
    )
    parsed = read_bundle(bundle(patient(extension=ext), obs))
    assert parsed.issues == ()
    assert parsed.patients[0].resources[1]["extension"] == ext


def test_resources_come_back_raw_and_unchanged() -> None:
    obs = observation("o1", valueQuantity={"value": 1.50, "unit": "mg"}, effectiveDateTime="2024-01-02")
    data = bundle(patient(), obs)
    before = copy.deepcopy(data)
    parsed = read_bundle(data)
    assert parsed.patients[0].resources[1] is obs
    assert data == before


def test_unused_types_are_ignored_counted_and_not_validated() -> None:
    encounter = {"resourceType": "Encounter", "id": "e1", "status": 42}  # invalid, but never looked at
    parsed = read_bundle(bundle(patient(), encounter, {"resourceType": "Organization", "id": "org"}))
    assert parsed.ignored == 2
    assert parsed.issues == ()
    assert groups(parsed) == {"Patient/p1": ["Patient/p1"]}


def test_used_types_are_the_ten_the_rules_read() -> None:
    assert {"Patient", "Condition", "Observation", "BodyStructure", "RiskAssessment", "ServiceRequest"} <= USED_TYPES
    assert "Encounter" not in USED_TYPES and len(USED_TYPES) == 10


def test_entries_that_are_not_resources_are_issues_and_entries_without_one_are_skipped() -> None:
    data = bundle(patient(), ["not", "a", "resource"], {"id": "x"})
    data["entry"].append({"request": {"method": "DELETE", "url": "Observation/old"}})
    data["entry"].append("junk")
    parsed = read_bundle(data)
    assert details(parsed) == [
        "Bundle.entry[1].resource: not a JSON object",
        "Bundle.entry[2].resource.resourceType: missing",
        "Bundle.entry[4]: not a JSON object",
    ]
    assert groups(parsed) == {"Patient/p1": ["Patient/p1"]}


# --- grouping by patient --------------------------------------------------------------------------


def test_transaction_urn_uuid_references_group_under_the_patient_id() -> None:
    p_urn, q_urn = (
        "urn:uuid:0b1c8d2e-0000-4000-8000-000000000001",
        "urn:uuid:0b1c8d2e-0000-4000-8000-000000000002",
    )
    data = bundle(
        patient("p1"),
        observation("o1", subject=q_urn),
        observation("o2", subject=p_urn),
        patient(None),  # no id yet (the server assigns it): its fullUrl is its key
        kind="transaction",
        full_urls=[p_urn, "urn:uuid:o1", "urn:uuid:o2", q_urn],
    )
    assert groups(read_bundle(data)) == {
        q_urn: ["Observation/o1", "Patient/None"],
        "Patient/p1": ["Patient/p1", "Observation/o2"],
    }


def test_absolute_and_versioned_references_reduce_to_patient_id() -> None:
    data = bundle(
        patient("7"),
        observation("o1", subject="http://ehr.example.org/fhir/Patient/7"),
        observation("o2", subject="https://other.example.org/base/Patient/7/_history/3"),
        full_urls=["http://ehr.example.org/fhir/Patient/7", "", ""],
    )
    assert groups(read_bundle(data)) == {"Patient/7": ["Patient/7", "Observation/o1", "Observation/o2"]}


def test_a_urn_for_a_patient_outside_the_bundle_is_kept_as_its_key() -> None:
    parsed = read_bundle(bundle(observation("o1", subject="urn:uuid:mrn-1")))
    assert groups(parsed) == {"urn:uuid:mrn-1": ["Observation/o1"]}


def test_two_patients_give_two_groups_in_order_of_first_appearance() -> None:
    data = bundle(
        observation("o2", subject="Patient/p2"),
        patient("p1"),
        patient("p2"),
        observation("o1", subject="Patient/p1"),
        {"resourceType": "BodyStructure", "id": "b1", "patient": {"reference": "Patient/p2"}},
    )
    assert groups(read_bundle(data)) == {
        "Patient/p2": ["Observation/o2", "Patient/p2", "BodyStructure/b1"],
        "Patient/p1": ["Patient/p1", "Observation/o1"],
    }


def test_a_resource_without_patient_link_is_an_issue() -> None:
    unlinked = observation("o1", subject=None)
    parsed = read_bundle(bundle(patient(), unlinked, observation("o2", subject="Group/g")))
    assert details(parsed) == [
        "Bundle.entry[1].resource.subject: missing",
        "Bundle.entry[2].resource.subject: not a Patient reference ('Group/g')",
    ]
    assert [i.input for i in parsed.issues] == ["Observation", "Observation"]
    assert groups(parsed) == {"Patient/p1": ["Patient/p1"]}


def test_a_urn_pointing_at_a_non_patient_entry_is_not_a_patient_link() -> None:
    group = {"resourceType": "Group", "id": "g", "type": "person", "actual": True}
    data = bundle(patient(), group, observation("o1", subject="urn:uuid:g"), full_urls=["", "urn:uuid:g", ""])
    # the urn resolves to the Bundle's Group entry (FHIR Bundle reference resolution), which is not a Patient
    expected = "Bundle.entry[2].resource.subject: not a Patient reference ('Group/g')"
    assert details(read_bundle(data)) == [expected]


def test_urn_references_resolve_to_the_entries_they_name() -> None:
    """A POST transaction names new resources by urn only: references to them resolve, and an entry without an id
    takes the urn's last part as its id, as the receiving server assigns one."""
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}
    focused = observation("o1", focus=[{"reference": "urn:uuid:c-1"}])
    data = bundle(patient(), condition, focused, full_urls=["", "urn:uuid:c-1", ""])
    parsed = read_bundle(data)
    (group,) = parsed.patients
    read = {r["resourceType"]: r for r in group.resources}
    assert read["Condition"]["id"] == "c-1"
    assert read["Observation"]["focus"] == [{"reference": "Condition/c-1"}]
    assert "id" not in condition and focused["focus"] == [{"reference": "urn:uuid:c-1"}]  # the input is not changed


@pytest.mark.parametrize("kind", ["collection", "transaction", "batch", "searchset", "message", "document"])
def test_every_bundle_type_is_read(kind: str) -> None:
    header = {"resourceType": "MessageHeader", "id": "m"} if kind == "message" else {"resourceType": "Basic"}
    parsed = read_bundle(bundle(header, patient(), observation("o1"), kind=kind))
    assert groups(parsed) == {"Patient/p1": ["Patient/p1", "Observation/o1"]}
    assert parsed.ignored == 1


# --- duplicates (DQ-06) ---------------------------------------------------------------------------


def test_identical_duplicates_are_merged_silently() -> None:
    first = observation("o1", valueInteger=1)
    reordered = dict(reversed(list(copy.deepcopy(first).items())))  # same content, other key order
    parsed = read_bundle(bundle(patient(), first, reordered))
    assert groups(parsed) == {"Patient/p1": ["Patient/p1", "Observation/o1"]}
    assert parsed.duplicate_conflicts == {} and parsed.issues == ()


def test_differing_duplicates_are_both_kept_and_reported() -> None:
    parsed = read_bundle(
        bundle(patient(), observation("o1", valueInteger=1), observation("o1", valueInteger=2), patient("p2"))
    )
    assert groups(parsed)["Patient/p1"] == ["Patient/p1", "Observation/o1", "Observation/o1"]
    values = [r.get("valueInteger") for r in parsed.patients[0].resources]
    assert values == [None, 1, 2]
    assert parsed.duplicate_conflicts == {"Patient/p1": ("Observation/o1",)}


def test_one_id_under_two_patients_is_a_conflict_for_both() -> None:
    data = bundle(observation("o1", subject="Patient/a"), observation("o1", subject="Patient/b"))
    parsed = read_bundle(data)
    assert parsed.duplicate_conflicts == {"Patient/a": ("Observation/o1",), "Patient/b": ("Observation/o1",)}


# --- real payloads (../shared/conformance/mcode) --------------------------------------------------


def test_patient_data_json_merges_its_identical_copies_and_reports_its_invalid_observations() -> None:
    raw = (MCODE / "clinical-trial-matching-service" / "patient_data.json").read_bytes()
    parsed = parse_bundle(raw)
    main = "Patient/1e208b6b-77f1-4808-a32b-9f9caf1ec334"
    assert [g.patient for g in parsed.patients] == [
        main,
        "Patient/mCODEPatientExample01",
        "Patient/mCODEMassiveBioPatientExample1004",
    ]
    assert parsed.duplicate_conflicts == {}
    # 25 entries: 3 invalid, 5 identical second copies merged → 17 resources
    assert sum(len(g.resources) for g in parsed.patients) == 17
    kept = [f"{r['resourceType']}/{r['id']}" for r in parsed.patients[0].resources]
    assert len(kept) == len(set(kept)) == 14
    assert details(parsed) == [
        "Bundle.entry[2].resource.value[x]: only one type allowed, got valueCodeableConcept, valueQuantity",
        "Bundle.entry[3].resource.value[x]: only one type allowed, got valueCodeableConcept, valueRatio",
        "Bundle.entry[4].resource.value[x]: only one type allowed, got valueCodeableConcept, valueQuantity",
    ]


def test_csv_condition_bundle_with_placeholder_values_has_nothing_usable() -> None:
    raw = (MCODE / "mcode-extraction-framework" / "csv-condition-bundle.json").read_bytes()
    assert orjson.loads(raw)["entry"][0]["resource"]["extension"][0]["valueDateTime"] == "YYYY-MM-DD"
    with pytest.raises(BundleError) as err:
        parse_bundle(raw)
    assert (err.value.status, err.value.code) == (422, "processing")
    assert err.value.diagnostics == (
        "Bundle has no patient-linked resources (1 entry: 1 invalid); first problem: "
        "Bundle.entry[0].resource.extension[0].valueDateTime: "
        "DateTime value string does not match spec regex (got 'YYYY-MM-DD')"
    )
