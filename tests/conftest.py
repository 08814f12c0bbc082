"""Shared fixtures: one rules engine for the session (durable-rules state is per owner thread)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.bootstrap import Container, bootstrap
from service.config import Settings
from service.rules.engine import RulesEngine
from tests.infra import fresh_pg_dsn, kafka_broker, postgres_dsn  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "tests" / "fixtures"


def shared_dir() -> Path:
    """../shared next to the checkout (CI lays a copy beside the clone)."""
    for candidate in (SHARED, Path("/work/shared")):
        if (candidate / "spec").is_dir():
            return candidate
    raise RuntimeError("the shared/ folder (spec and conformance payloads) is not next to the checkout")


@pytest.fixture(scope="session")
def engine() -> Iterator[RulesEngine]:
    eng = RulesEngine()
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(env="development", store_url="sqlite:///:memory:")


@pytest.fixture(scope="session")
def container(settings: Settings, engine: RulesEngine) -> Container:
    return bootstrap(settings, engine=engine)


# --- no PHI in any log line of the whole run (docs/operations.md) ------------------------------------------------
class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.__dict__.get('args')}")


_LOGS = _Collector()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_LOGS)
    logging.getLogger("oligocds").addHandler(_LOGS)


def phi_markers() -> set[str]:
    """Names and birth dates of every test patient in the fixtures and examples."""
    markers: set[str] = set()
    for path in [*FIXTURES.glob("*/bundle.json"), *(ROOT / "examples").glob("*.json")]:
        for entry in json.loads(path.read_text()).get("entry", []):
            patient = entry.get("resource", {})
            if patient.get("resourceType") != "Patient":
                continue
            if patient.get("birthDate"):
                markers.add(patient["birthDate"])
            for name in patient.get("name", []):
                markers.update(n for n in [name.get("family"), *name.get("given", [])] if n and len(n) > 3)
    return markers


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    markers = phi_markers()
    leaks = sorted({m for line in _LOGS.lines for m in markers if m in line})
    if leaks:
        print(f"\nPHI found in log lines of this run: {leaks}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
