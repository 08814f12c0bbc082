"""CDS Hooks with JWT verification on (production settings), through a running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.bootstrap import Container
from service.config import Settings
from tests.jwt_keys import KeyPair, bearer, claims, es384_key, mint, rs384_key, write_jwks
from tests.server import free_port, running_server

ISSUER = "https://ehr.example.org"


@pytest.fixture(scope="module")
def keys() -> tuple[KeyPair, KeyPair]:
    return es384_key(), rs384_key()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[KeyPair, KeyPair], container: Container
) -> Iterator[str]:
    jwks = write_jwks(tmp_path_factory.mktemp("jwks"), *keys)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        env="production",
        public_base_url=base,
        cds_trusted_issuers=json.dumps({ISSUER: str(jwks)}),
        cors_origins="https://ehr.example.org",
        rules_reload_seconds=0,
    )
    with running_server(settings, container, port=port) as url:
        yield url


def _token(key: KeyPair, aud: str, **overrides: object) -> dict[str, str]:
    return {"Authorization": bearer(mint(key, claims(iss=ISSUER, aud=aud, **overrides)))}


def test_discovery_needs_a_valid_token(server: str, keys: tuple[KeyPair, KeyPair]) -> None:
    es, rs = keys
    with httpx.Client(base_url=server) as client:
        assert client.get("/cds-services", headers=_token(es, f"{server}/cds-services")).status_code == 200
        assert client.get("/cds-services", headers=_token(rs, f"{server}/cds-services")).status_code == 200
        refused = client.get("/cds-services")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert "diagnostics" not in refused.text
        wrong_aud = client.get("/cds-services", headers=_token(es, f"{server}/cds-services/oligocds-orders"))
        assert wrong_aud.status_code == 401
        expired = client.get("/cds-services", headers=_token(es, f"{server}/cds-services", exp=1))
        assert expired.status_code == 401


def test_a_replayed_token_is_refused(server: str, keys: tuple[KeyPair, KeyPair]) -> None:
    headers = _token(keys[0], f"{server}/cds-services")
    with httpx.Client(base_url=server) as client:
        assert client.get("/cds-services", headers=headers).status_code == 200
        assert client.get("/cds-services", headers=headers).status_code == 401


def test_evaluate_is_not_behind_the_cds_jwt(server: str) -> None:
    example = (Path(__file__).resolve().parents[2] / "examples" / "oligo-breast.json").read_bytes()
    with httpx.Client(base_url=server) as client:
        r = client.post("/evaluate", content=example, headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 200


def test_cors_preflight_needs_no_token_and_names_only_configured_origins(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        ok = client.options(
            "/cds-services/oligocds-patient-view",
            headers={"Origin": "https://ehr.example.org", "Access-Control-Request-Method": "POST"},
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://ehr.example.org"
        other = client.options(
            "/cds-services", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in other.headers
        # refused with an OperationOutcome, like every non-2xx answer but 401 (cds-hooks.md §10)
        assert other.status_code == 400 and other.json()["resourceType"] == "OperationOutcome"
        assert "Disallowed CORS origin" in other.json()["issue"][0]["diagnostics"]


def test_production_without_issuers_refuses_cds_calls(container: Container) -> None:
    settings = Settings(env="production", rules_reload_seconds=0)
    with running_server(settings, container) as url, httpx.Client(base_url=url) as client:
        assert client.get("/cds-services").status_code == 401
        assert client.get("/healthz").status_code == 200
