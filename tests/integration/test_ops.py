"""Operations: rule hot reload under load, Prometheus metrics, JSON logs without PHI."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.bootstrap import bootstrap
from service.config import Settings
from service.rules.engine import RulesEngine
from service.rules.loader import default_rules_dir
from tests.server import running_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oligo-breast.json"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target)
    return target


@pytest.fixture
def served(rules_dir: Path, engine: RulesEngine) -> Iterator[tuple[str, object]]:
    settings = Settings(env="development", rules_dir=rules_dir, rules_reload_seconds=0)
    container = bootstrap(settings, engine=engine)
    with running_server(settings, container) as url:
        yield url, container


def _digest(client: httpx.Client) -> str:
    r = client.post("/evaluate", params={"asOf": "2026-11-26"}, content=EXAMPLE.read_bytes(), headers=FHIR)
    assert r.status_code == 200, r.text
    return str(r.json()["results"][0]["ruleset"]["digest"])


def test_hot_reload_swaps_rules_without_failing_requests(served: tuple[str, object], rules_dir: Path) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as client:
        before = _digest(client)
        failures: list[int] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    r = c.post("/evaluate", content=EXAMPLE.read_bytes(), headers=FHIR)
                    if r.status_code != 200:
                        failures.append(r.status_code)

        worker = threading.Thread(target=load)
        worker.start()
        manifest = rules_dir / "ruleset.yaml"
        manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
        reload_result = _reload(url)
        stop.set()
        worker.join()
        assert reload_result == "reloaded"
        assert failures == []
        after = _digest(client)
        assert after != before
        rules = client.get("/rules").json()
        assert rules["version"] == "1.0.1" and rules["digest"] == after

        (rules_dir / "mdt.yaml").write_text("area: mdt\nrules: []\n")  # invalid: rejected, old set kept
        assert _reload(url) == "rejected"
        assert _digest(client) == after
        assert client.get("/readyz").status_code == 200
        assert "mdt.yaml" in client.get("/rules").json()["lastReloadError"]
        metrics = client.get("/metrics").text
        assert 'oligocds_rules_reload_total{result="reloaded"} 1.0' in metrics
        assert 'oligocds_rules_reload_total{result="rejected"} 1.0' in metrics


def _reload(url: str) -> str:
    """Trigger one reload round through the running app (the watcher thread is off in this test)."""
    from tests.server import app_of

    return str(app_of(url).state.reloader.check())


def test_metrics_count_requests_rules_and_cards(served: tuple[str, object]) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(2):
            assert client.post("/evaluate", content=EXAMPLE.read_bytes(), headers=FHIR).status_code == 200
        assert client.post("/evaluate", content=b"{", headers=FHIR).status_code == 400
        text = client.get("/metrics").text
    assert 'oligocds_http_requests_total{method="POST",route="/evaluate",status="200"} 2.0' in text
    assert 'oligocds_http_requests_total{method="POST",route="/evaluate",status="400"} 1.0' in text
    assert 'oligocds_rules_fired_total{rule="MDT-01"} 2.0' in text
    assert 'oligocds_cards_total{indicator="warning"}' in text
    assert "oligocds_evaluation_seconds_count 2.0" in text


def test_logs_are_json_and_carry_no_phi(served: tuple[str, object], caplog: pytest.LogCaptureFixture) -> None:
    url, _ = served
    bundle = json.loads(EXAMPLE.read_text())
    patient = bundle["entry"][0]["resource"]
    patient["name"] = [{"family": "Zzyzxquist", "given": ["Philomena"]}]
    patient["identifier"] = [{"system": "urn:mrn", "value": "MRN-99887766"}]
    caplog.set_level(logging.INFO, logger="oligocds")
    with httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/evaluate", content=json.dumps(bundle), headers={**FHIR, "X-Request-Id": "req-123"})
        assert r.headers["X-Request-Id"] == "req-123"
        client.post("/evaluate", content=b"{", headers=FHIR)
    text = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert any(getattr(r, "route", None) == "/evaluate" for r in caplog.records)
    for secret in ("Zzyzxquist", "Philomena", "MRN-99887766", "1968-04-12", "example-1"):
        assert secret not in text
