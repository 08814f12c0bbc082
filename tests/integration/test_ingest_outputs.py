"""Where `POST /ingest` writes besides the store: the Kafka output topic and a FHIR server (CarePlan write-back);
and `/readyz` when a dependency is down. Real broker, real FHIR server (Medplum, tests/fhirserver), real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
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
from tests.infra import create_topics
from tests.integration.test_fhir_fallback import FhirServer, node_packages, start  # noqa: F401 (fixture)
from tests.server import free_port, running_server
from tests.streaming import read_all

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oligo-breast.json"
FHIR = {"Content-Type": "application/fhir+json"}


def _serve(settings: Settings, engine: RulesEngine, db: Path) -> Any:
    store = open_store(f"sqlite:///{db}")
    return store, bootstrap(settings, engine=engine, store=store)


def test_ingest_publishes_only_changed_results_to_the_output_topic(
    kafka_broker: Any, settings: Settings, engine: RulesEngine, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {"kafka_input_topic": f"in-{run}", "kafka_output_topic": f"out-{run}", "kafka_dlq_topic": f"dlq-{run}"}
    asyncio.run(create_topics(kafka_broker.bootstrap, list(topics.values())))
    configured = settings.model_copy(
        update={"kafka_bootstrap": kafka_broker.bootstrap, "kafka_group_id": f"g-{run}", **topics}
    )
    store, container = _serve(configured, engine, tmp_path / "state.db")
    body = EXAMPLE.read_bytes()
    try:
        with running_server(configured, container) as url, httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/ingest", content=body, headers=FHIR).status_code == 200
            assert client.post("/ingest", content=body, headers=FHIR).status_code == 200
            assert client.get("/readyz").status_code == 200
    finally:
        store.close()
    records = asyncio.run(read_all(kafka_broker.bootstrap, topics["kafka_output_topic"]))
    assert [r.key for r in records] == [b"example-1"], "one result; the re-sent Bundle changed nothing"
    assert json.loads(records[0].value)["patient"] == "Patient/example-1"
    assert records[0].headers["content-type"] == b"application/json"


def test_without_a_broker_readyz_is_503_and_ingest_stores_nothing(
    settings: Settings, engine: RulesEngine, tmp_path: Path
) -> None:
    nowhere = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    store, container = _serve(nowhere, engine, tmp_path / "state.db")
    try:
        with running_server(nowhere, container) as url, httpx.Client(base_url=url, timeout=60) as client:
            ready = client.get("/readyz")
            ingest = client.post("/ingest", content=EXAMPLE.read_bytes(), headers=FHIR)
            stored = client.get("/patients/example-1/evaluation")
    finally:
        store.close()
    assert ready.status_code == 503
    assert ready.json()["problems"] == ["kafka: broker not reachable"]
    assert ingest.status_code == 503 and ingest.json()["issue"][0]["code"] == "transient"
    assert stored.status_code == 404, "a result that could not be published is not stored either"


@pytest.fixture
def fhir_server(node_packages: float) -> Iterator[FhirServer]:  # noqa: F811
    server = start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _careplans(server: FhirServer) -> list[dict[str, Any]]:
    bundle = httpx.get(f"{server.base}/CarePlan", timeout=10).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_careplan_is_written_back_once_per_patient_and_replaced_when_it_changes(
    fhir_server: FhirServer, settings: Settings, engine: RulesEngine, tmp_path: Path
) -> None:
    configured = settings.model_copy(update={"fhir_writeback_url": fhir_server.base})
    store, container = _serve(configured, engine, tmp_path / "state.db")
    bundle = json.loads(EXAMPLE.read_text())
    try:
        with running_server(configured, container) as url, httpx.Client(base_url=url, timeout=30) as client:
            client.post("/ingest", content=json.dumps(bundle), headers=FHIR).raise_for_status()
            _wait(lambda: len(_careplans(fhir_server)) == 1)
            [first] = _careplans(fhir_server)
            ecog = next(e for e in bundle["entry"] if e["resource"]["id"] == "ecog-1")
            ecog["resource"]["valueInteger"] = 3
            ecog["resource"].pop("valueCodeableConcept", None)
            changed = client.post("/ingest", content=json.dumps({**bundle, "entry": [ecog]}), headers=FHIR)
            changed.raise_for_status()
            _wait(lambda: _careplans(fhir_server)[0]["meta"]["versionId"] != first["meta"]["versionId"])
            ok = 'oligocds_fhir_writeback_total{result="ok"} 2.0'
            _wait(lambda: ok in client.get("/metrics").text)
    finally:
        store.close()
    [plan] = _careplans(fhir_server)
    assert plan["id"] == first["id"], "a conditional update replaces the patient's proposal in place"
    assert plan["identifier"] == [{"system": "http://oligocds.org/fhir/careplan-subject", "value": "Patient/example-1"}]
    assert plan["status"] == "draft" and plan["intent"] == "proposal"
    puts = [r for r in fhir_server.requests() if r["method"] == "PUT"]
    assert len(puts) == 2 and all("CarePlan?identifier=" in r["url"] for r in puts)


def test_writeback_to_a_failing_server_is_retried_then_counted_not_fatal(
    node_packages: float,  # noqa: F811
    settings: Settings,
    engine: RulesEngine,
    tmp_path: Path,
) -> None:
    failing = start("--fail500")
    failing.wait_ready()
    configured = settings.model_copy(update={"fhir_writeback_url": failing.base})
    store, container = _serve(configured, engine, tmp_path / "state.db")
    try:
        with running_server(configured, container) as url, httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/ingest", content=EXAMPLE.read_bytes(), headers=FHIR).status_code == 200
            assert client.get("/patients/example-1/evaluation").status_code == 200, "the store kept the result"
            failed = 'oligocds_fhir_writeback_total{result="failed"} 1.0'
            _wait(lambda: failed in client.get("/metrics").text, timeout=30)
        attempts = [r for r in failing.requests() if r["method"] == "PUT"]
    finally:
        store.close()
        failing.stop()
    assert len(attempts) == 4, "4 attempts with backoff"
