"""Shared fixtures: one rules engine for the session (durable-rules state is per owner thread)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.bootstrap import Container, bootstrap
from service.config import Settings
from service.rules.engine import RulesEngine

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
