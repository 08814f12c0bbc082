"""POST /ingest and GET /patients/{id}/evaluation over real HTTP, on a SQLite file store (contract.md §5)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.bootstrap import bootstrap
from service.config import Settings
from service.rules.engine import RulesEngine
from service.store import open_store
from tests.server import running_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oligo-breast.json"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def client(settings: Settings, engine: RulesEngine, tmp_path: Path) -> Iterator[httpx.Client]:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    container = bootstrap(settings, engine=engine, store=store)
    try:
        with running_server(settings, container) as url, httpx.Client(base_url=url, timeout=30) as c:
            yield c
    finally:
        store.close()


def _bundle() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


def _patient(bundle: dict[str, Any]) -> str:
    return next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def _ingest(client: httpx.Client, bundle: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/ingest", content=json.dumps(bundle), headers=FHIR)
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return dict(result)


def _stored(client: httpx.Client, pid: str) -> httpx.Response:
    return client.get(f"/patients/{pid}/evaluation")


def _without_time(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "evaluatedAt"}


def test_ingest_stores_the_same_result_evaluate_gives(client: httpx.Client) -> None:
    bundle = _bundle()
    pid = _patient(bundle)
    assert _stored(client, pid).status_code == 404
    ingested = _ingest(client, bundle)
    [evaluated] = client.post("/evaluate", content=json.dumps(bundle), headers=FHIR).json()["results"]
    assert _without_time(ingested) == _without_time(evaluated)
    stored = _stored(client, pid)
    assert stored.status_code == 200
    assert _without_time(stored.json()) == _without_time(ingested)


def test_resending_the_same_bundle_changes_nothing(client: httpx.Client) -> None:
    bundle = _bundle()
    pid = _patient(bundle)
    _ingest(client, bundle)
    first = _stored(client, pid).content
    again = _ingest(client, bundle)
    assert _stored(client, pid).content == first, "an unchanged result is not saved (nor published) again"
    assert _without_time(again) == _without_time(json.loads(first))


def test_bundles_in_parts_add_up_to_the_whole(client: httpx.Client) -> None:
    bundle = _bundle()
    pid = _patient(bundle)
    entries = bundle["entry"]
    for part in (entries[::2], entries[1::2]):
        _ingest(client, {**bundle, "entry": part})
    [whole] = client.post("/evaluate", content=json.dumps(bundle), headers=FHIR).json()["results"]
    assert _without_time(_stored(client, pid).json()) == _without_time(whole)


MEDREF = Path(__file__).resolve().parents[1] / "fixtures" / "tx-horm-pc-on-leuprolide-by-medication-reference"


def _codes(result: dict[str, Any]) -> set[str]:
    return {r["code"] for r in result["recommendations"]}


def test_a_medication_named_by_reference_is_kept_with_the_patient(client: httpx.Client) -> None:
    """A Medication resource has no patient: it is stored once, shared, and comes back with every patient whose
    MedicationRequest names it, also when it arrives in another message (before or after) or changes later."""
    bundle = json.loads((MEDREF / "bundle.json").read_text())
    pid = _patient(bundle)
    [evaluated] = client.post("/evaluate", content=json.dumps(bundle), headers=FHIR).json()["results"]
    assert "adt" not in _codes(evaluated)  # ADT active through the Medication resource
    medication = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Medication"]
    rest = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Medication"]
    without = _ingest(client, {**bundle, "entry": rest})
    assert "adt" in _codes(without), "the request alone names no drug"
    response = client.post("/ingest", content=json.dumps({**bundle, "entry": medication}), headers=FHIR)
    assert response.status_code == 200, response.text
    [after] = response.json()["results"]  # the patient that refers to it is re-evaluated
    assert _without_time(after) == _without_time(evaluated)
    assert _without_time(_stored(client, pid).json()) == _without_time(evaluated)
    changed = copy.deepcopy(medication)
    changed[0]["resource"]["code"] = {"text": "paracetamol"}
    [again] = client.post("/ingest", content=json.dumps({**bundle, "entry": changed}), headers=FHIR).json()["results"]
    assert "adt" in _codes(again)


def _metastases(result: dict[str, Any]) -> Any:
    return result["assessment"]


def _metastasis_entry(bundle: dict[str, Any]) -> dict[str, Any]:
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Condition" and "met" in r["id"]:
            return entry
    raise AssertionError("the example has a metastasis Condition")


Json = dict[str, Any]


def _with_extra_metastasis(client: httpx.Client, rid: str) -> tuple[Json, str, Json, Json]:
    """Ingest the example, then one more metastasis Condition (`rid`): (example bundle, patient id, the first
    result, the extra entry)."""
    bundle = _bundle()
    pid = _patient(bundle)
    base = _ingest(client, bundle)
    extra = copy.deepcopy(_metastasis_entry(bundle))
    extra["resource"]["id"] = rid
    grown = _ingest(client, {"resourceType": "Bundle", "type": "collection", "entry": [extra]})
    assert grown["assessment"] != base["assessment"], "one more metastasis changes the assessment"
    return bundle, pid, base, extra


def _delete(client: httpx.Client, reference: str) -> Json:
    """POST /ingest of a transaction with one DELETE entry; the response body."""
    delete = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": reference}}],
    }
    response = client.post("/ingest", content=json.dumps(delete), headers=FHIR)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def test_delete_entry_and_entered_in_error_remove_a_resource(client: httpx.Client) -> None:
    _, pid, base, extra = _with_extra_metastasis(client, "extra-met")
    _delete(client, "Condition/extra-met")
    assert _without_time(_stored(client, pid).json())["assessment"] == base["assessment"]
    # The same Condition again, then withdrawn as entered-in-error.
    _ingest(client, {"resourceType": "Bundle", "type": "collection", "entry": [extra]})
    withdrawn = copy.deepcopy(extra)
    withdrawn["resource"]["verificationStatus"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]
    }
    _ingest(client, {"resourceType": "Bundle", "type": "collection", "entry": [withdrawn]})
    assert _stored(client, pid).json()["assessment"] == base["assessment"]


def test_a_patient_whose_last_resource_is_removed_is_evaluated_again(client: httpx.Client) -> None:
    """docs/streaming.md merge rules 1 and 4: a deleted or withdrawn resource is gone, also from the stored (and
    published) result when it was the patient's last one; the result is the empty record's, not the old one."""
    condition = copy.deepcopy(_metastasis_entry(_bundle()))
    condition["resource"]["id"] = "lonely-met"
    condition["resource"]["subject"] = {"reference": "Patient/lonely"}
    condition.pop("fullUrl", None)
    before = _ingest(client, {"resourceType": "Bundle", "type": "collection", "entry": [condition]})
    assert [lesion["condition"] for lesion in before["assessment"]["lesions"]] == ["Condition/lonely-met"]
    (answered,) = _delete(client, "Condition/lonely-met")["results"]
    stored = _stored(client, "lonely").json()
    for result in (answered, stored):
        assert result["assessment"]["lesions"] == [] and result["assessment"]["omdState"] == "not-applicable"


def test_a_resource_that_moves_to_another_patient_leaves_the_first_one(client: httpx.Client) -> None:
    bundle, pid, base, extra = _with_extra_metastasis(client, "moving-met")
    # The same Condition id, now recorded for another patient (a corrected patient link).
    other = copy.deepcopy(next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"))
    other["resource"]["id"] = "moved-to"
    other.pop("fullUrl", None)
    moved = copy.deepcopy(extra)
    moved["resource"]["subject"] = {"reference": "Patient/moved-to"}
    moved.pop("fullUrl", None)
    response = client.post(
        "/ingest",
        content=json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [other, moved]}),
        headers=FHIR,
    )
    assert response.status_code == 200, response.text
    results = {r["patient"]: r for r in response.json()["results"]}
    assert set(results) == {"Patient/moved-to", f"Patient/{pid}"}, "the patient left behind is re-evaluated too"
    assert results[f"Patient/{pid}"]["assessment"] == base["assessment"]
    assert _stored(client, pid).json()["assessment"] == base["assessment"]


def test_an_older_version_is_ignored(client: httpx.Client) -> None:
    bundle = _bundle()
    pid = _patient(bundle)
    entry = _metastasis_entry(bundle)
    entry["resource"]["meta"] = {"versionId": "3", "lastUpdated": "2026-03-01T00:00:00Z"}
    _ingest(client, bundle)
    before = _stored(client, pid).content
    old = copy.deepcopy(entry)
    old["resource"]["meta"] = {"versionId": "2", "lastUpdated": "2026-02-01T00:00:00Z"}
    old["resource"]["verificationStatus"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]
    }
    _ingest(client, {"resourceType": "Bundle", "type": "collection", "entry": [old]})
    assert _stored(client, pid).content == before


def test_ingest_reports_skipped_resources_and_uses_the_rest(client: httpx.Client) -> None:
    bundle = _bundle()
    bundle["entry"].append({"resource": {"resourceType": "Observation", "id": "broken", "status": "nonsense"}})
    result = _ingest(client, bundle)
    assert any(i["code"] == "invalid-value" and "Bundle.entry[" in i["detail"] for i in result["issues"])


@pytest.mark.parametrize(
    ("body", "media", "status"),
    [
        (b"{oops", "application/fhir+json", 400),
        (b'{"resourceType": "Patient"}', "application/json", 422),
        (b"{}", "text/plain", 415),
    ],
)
def test_bad_input_gets_an_operation_outcome(client: httpx.Client, body: bytes, media: str, status: int) -> None:
    response = client.post("/ingest", content=body, headers={"Content-Type": media})
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_patient_is_a_404_operation_outcome(client: httpx.Client) -> None:
    response = _stored(client, "nobody")
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def _patient_view(pid: str, prefetch: dict[str, Any]) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/x", "patientId": pid},
        "prefetch": prefetch,
    }


def _full_prefetch(bundle: dict[str, Any]) -> dict[str, Any]:
    resources = [e["resource"] for e in bundle["entry"]]
    prefetch: dict[str, Any] = {"Patient": next(r for r in resources if r["resourceType"] == "Patient")}
    for key in ("Condition", "Observation", "Procedure", "MedicationRequest"):
        found = [{"resource": r} for r in resources if r["resourceType"] == key]
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": found}
    return prefetch


def test_hooks_use_fresh_stored_state_for_absent_keys(client: httpx.Client) -> None:
    """cds-hooks.md §5/§11.8: with the patient's state ingested, an absent prefetch key needs no FHIR query and is
    no 412: the call is answered over the stored state, as a full prefetch would be."""
    bundle = _bundle()
    pid = _patient(bundle)
    service = "/cds-services/oligocds-patient-view"
    patient_only = {"Patient": _full_prefetch(bundle)["Patient"]}
    assert client.post(service, json=_patient_view(pid, patient_only)).status_code == 412  # nothing stored yet
    _ingest(client, bundle)
    full = client.post(service, json=_patient_view(pid, _full_prefetch(bundle)))
    stored = client.post(service, json=_patient_view(pid, patient_only))
    assert full.status_code == stored.status_code == 200
    summaries = [sorted(c["summary"] for c in r.json()["cards"]) for r in (full, stored)]
    assert summaries[0] == summaries[1] and summaries[0]


def test_hooks_evaluate_a_full_prefetch_over_the_stored_state(client: httpx.Client) -> None:
    """cds-hooks.md §11.8: "a hook call evaluates the request's prefetch and draft orders over that state": a
    resource that arrived through /ingest and that the EHR's prefetch lacks (every key present) is used too."""
    bundle = _bundle()
    pid = _patient(bundle)
    service = "/cds-services/oligocds-patient-view"
    # every declared key present (`null`: no data of that kind), so no key is missing and nothing else applies
    declared = client.get("/cds-services").json()["services"]
    keys = {k for s in declared if s["id"] == "oligocds-patient-view" for k in s["prefetch"]}
    full = {**dict.fromkeys(keys), **_full_prefetch(bundle)}
    lacking = json.loads(json.dumps(full))
    observations = lacking["Observation"]["entry"]
    dropped = observations.pop(0)["resource"]
    assert dropped["resourceType"] == "Observation"
    before = client.post(service, json=_patient_view(pid, lacking)).json()["cards"]  # nothing stored yet
    _ingest(client, bundle)
    answers = [client.post(service, json=_patient_view(pid, p)).json()["cards"] for p in (full, lacking)]
    summaries = [sorted(c["summary"] for c in cards) for cards in (before, *answers)]
    assert summaries[1] == summaries[2] != summaries[0]


def test_stored_state_is_not_used_when_the_setting_is_zero(
    settings: Settings, engine: RulesEngine, tmp_path: Path
) -> None:
    never = settings.model_copy(update={"cds_stored_state_max_age_s": 0.0})
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    container = bootstrap(never, engine=engine, store=store)
    try:
        with running_server(never, container) as url, httpx.Client(base_url=url, timeout=30) as c:
            bundle = _bundle()
            pid = _patient(bundle)
            _ingest(c, bundle)
            request = _patient_view(pid, {"Patient": _full_prefetch(bundle)["Patient"]})
            assert c.post("/cds-services/oligocds-patient-view", json=request).status_code == 412
    finally:
        store.close()
