"""The public mCODE payloads of ../shared/conformance/mcode/, sent as an outside client would send them."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.bootstrap import Container
from service.fhir.parse import BundleError
from tests.conftest import shared_dir

MCODE = shared_dir() / "conformance" / "mcode"
AS_OF = date(2026, 11, 26)


def _evaluate(container: Container, path: Path, patient: str | None = None) -> dict[str, Any]:
    results = container.evaluator.evaluate_bytes(path.read_bytes(), AS_OF)
    if patient is None:
        (result,) = results
        return result
    return next(r for r in results if r["patient"] == patient)


def _codes(result: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["rule"], r["code"]) for r in result["recommendations"]}


def _issues(result: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["code"], i["input"]) for i in result["issues"]}


ALL_JSON = sorted(MCODE.glob("*/*.json"))


@pytest.mark.parametrize("path", ALL_JSON, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_payload_gets_a_result_or_a_precise_422(container: Container, path: Path) -> None:
    data = json.loads(path.read_text())
    if data.get("resourceType") != "Bundle":
        with pytest.raises(BundleError) as err:
            container.evaluator.evaluate_bytes(path.read_bytes(), AS_OF)
        assert err.value.status == 422
        assert "Bundle" in err.value.diagnostics and data["resourceType"] in err.value.diagnostics
        return
    try:
        results = container.evaluator.evaluate_bytes(path.read_bytes(), AS_OF)
    except BundleError as exc:  # a bundle with no usable patient-linked resource
        assert exc.status == 422 and exc.diagnostics
        return
    for result in results:
        assert result["assessment"]["omdState"] in {
            "oligometastatic",
            "possible",
            "polymetastatic",
            "not-applicable",
            "unknown",
        }
        assert result["carePlan"]["resourceType"] == "CarePlan"


def test_m0_staging_against_a_lung_metastasis_is_a_data_conflict(container: Container) -> None:
    result = _evaluate(container, MCODE / "clinical-trial-matching-service" / "eom_patient_1.json")
    assert result["patient"] == "Patient/Ancora-13"
    assert ("DQ-01", "data-conflict") in _codes(result)
    assert ("conflicting-input", "cm_category") in _issues(result)
    assert result["assessment"]["organs"] == ["lung"]
    assert result["assessment"]["visceral"] is True


def test_newer_receptor_result_supersedes_the_older_one(container: Container) -> None:
    result = _evaluate(container, MCODE / "clinical-trial-matching-service" / "eom_patient_1.json")
    assert ("DQ-03", "data-conflict") not in _codes(result)
    assert ("conflicting-input", "er") not in _issues(result)


def test_ecog_3_against_karnofsky_90_is_a_data_conflict(container: Container) -> None:
    # The file's ECOG 3 and KPS 90 name another subject than its Patient: they are grouped under that patient.
    path = MCODE / "clinical-trial-matching-service" / "patient_data.json"
    result = _evaluate(container, path, "Patient/mCODEMassiveBioPatientExample1004")
    assert ("DQ-02", "data-conflict") in _codes(result)
    assert ("conflicting-input", "ecog") in _issues(result)
    assert result["assessment"]["ecog"] is None
    # the file repeats several resources with identical contents: merged silently, no DQ-06 conflict
    main = _evaluate(container, path, "Patient/1e208b6b-77f1-4808-a32b-9f9caf1ec334")
    assert ("DQ-06", "data-conflict") not in _codes(main)
    assert len(main["assessment"]["lesions"]) == 1  # the two copies of the secondary condition are one


def test_out_of_range_ecog_and_karnofsky_are_rejected(container: Container) -> None:
    path = MCODE / "clinical-trial-matching-service" / "patient_data_missing_birthdate_invalid_ecog_karnofsky.json"
    result = _evaluate(container, path, "Patient/mCODEMassiveBioPatientExample1004")
    invalid = {i["input"] for i in result["issues"] if i["code"] == "invalid-value"}
    assert {"ecog", "kps"} <= invalid
    assert result["assessment"]["ecog"] is None


@pytest.mark.parametrize("name", ["TrialMatching_Patient01.json", "TrialMatching_Patient02.json"])
def test_missing_onset_dates_give_class_unknown(container: Container, name: str) -> None:
    result = _evaluate(container, MCODE / "clinical-trial-matching-app" / name)
    assert result["assessment"]["omdClass"] in {"unknown", "not-applicable"}
    assert "bone" in result["assessment"]["organs"]


def test_bone_only_patient_without_body_site(container: Container) -> None:
    result = _evaluate(container, MCODE / "clinical-trial-matching-app" / "TrialMatching_Patient02.json")
    assert result["assessment"]["boneOnly"] is True
    (lesion,) = result["assessment"]["lesions"]
    assert lesion["organ"] == "bone" and lesion["siteClass"] == "unknown"
    assert result["assessment"]["omdState"] == "possible"  # one site, no lesion count → only a lower bound
    assert ("OMD-01", "confirm-lesion-count") in _codes(result)


def test_stu1_examples_assembled_into_a_bundle_are_recognised_by_code(container: Container) -> None:
    folder = MCODE / "hl7-fhir-mCODE-ig-stu1-json"
    entries = [{"resource": json.loads(p.read_text())} for p in sorted(folder.glob("*.json"))]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    (result,) = container.evaluator.evaluate_json(bundle, AS_OF)
    assert result["assessment"]["organs"] == ["brain"]
    assert result["assessment"]["ecog"] == 0
    # the STU1 TNM example says cM0 although a brain metastasis is recorded
    assert ("DQ-01", "data-conflict") in _codes(result)
