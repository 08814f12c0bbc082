"""POST /evaluate and health through a running server over real HTTP (contract.md §5, §6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.bootstrap import Container
from service.config import Settings
from tests.server import running_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oligo-breast.json"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def base_url(settings: Settings, container: Container) -> Iterator[str]:
    small = settings.model_copy(update={"max_body_bytes": 200_000})
    with running_server(small, container) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def _outcome(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["code"]
    return str(issue.get("diagnostics", ""))


def test_health(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_evaluate_example(client: httpx.Client) -> None:
    r = client.post("/evaluate", params={"asOf": "2026-11-26"}, content=EXAMPLE.read_bytes(), headers=FHIR)
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["patient"] == "Patient/example-1"
    assert result["assessment"]["omdState"] == "oligometastatic"
    assert result["assessment"]["lesionCount"] == {"value": 2, "exact": True}
    assert {rec["code"] for rec in result["recommendations"]} >= {"mdt-review"}
    assert result["carePlan"]["status"] == "draft" and result["carePlan"]["intent"] == "proposal"
    assert result["ruleset"]["digest"].startswith("sha256:")


def test_plain_json_content_type_is_accepted(client: httpx.Client) -> None:
    r = client.post("/evaluate", content=EXAMPLE.read_bytes(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200


def test_malformed_json_is_400(client: httpx.Client) -> None:
    r = client.post("/evaluate", content=b'{"resourceType": "Bundle", "entry": [', headers=FHIR)
    assert r.status_code == 400
    assert _outcome(r)


def test_non_bundle_is_422(client: httpx.Client) -> None:
    r = client.post("/evaluate", content=b'{"resourceType": "Patient", "id": "p"}', headers=FHIR)
    assert r.status_code == 422
    assert "Bundle" in _outcome(r)


def test_empty_bundle_is_422(client: httpx.Client) -> None:
    r = client.post("/evaluate", content=b'{"resourceType": "Bundle", "type": "collection"}', headers=FHIR)
    assert r.status_code == 422
    assert _outcome(r)


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    r = client.post("/evaluate", content=EXAMPLE.read_bytes(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert "text/plain" in _outcome(r)


def test_oversize_body_is_413(client: httpx.Client) -> None:
    r = client.post("/evaluate", content=b" " * 250_000 + EXAMPLE.read_bytes(), headers=FHIR)
    assert r.status_code == 413
    assert "limit" in _outcome(r)


def test_bad_as_of_is_400(client: httpx.Client) -> None:
    r = client.post("/evaluate", params={"asOf": "26/11/2026"}, content=EXAMPLE.read_bytes(), headers=FHIR)
    assert r.status_code == 400
    assert "asOf" in _outcome(r)


def test_wrong_type_in_a_field_skips_that_resource_only(client: httpx.Client) -> None:
    bundle = json.loads(EXAMPLE.read_text())
    ecog = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "ecog-1")
    ecog["valueInteger"] = "one"
    r = client.post("/evaluate", params={"asOf": "2026-11-26"}, content=json.dumps(bundle), headers=FHIR)
    assert r.status_code == 200
    (result,) = r.json()["results"]
    invalid = [i for i in result["issues"] if i["code"] == "invalid-value"]
    assert any("valueInteger" in i["detail"] for i in invalid)
    assert result["assessment"]["ecog"] is None
    assert result["assessment"]["omdState"] == "oligometastatic"


def test_server_keeps_serving_after_bad_input(client: httpx.Client) -> None:
    for body in (b"{", b"[]", b'{"resourceType": "Bundle", "entry": [{"resource": 5}]}'):
        client.post("/evaluate", content=body, headers=FHIR)
    assert client.get("/healthz").status_code == 200
    r = client.post("/evaluate", content=EXAMPLE.read_bytes(), headers=FHIR)
    assert r.status_code == 200
