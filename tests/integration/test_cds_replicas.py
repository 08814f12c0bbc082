"""Two replicas behind one public URL share the replay store, the feedback and the issued cards (cds-hooks.md §7,
§8 check 8): two running servers, each with its own container and store connection pool, on ONE PostgreSQL database."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.bootstrap import bootstrap
from service.config import Settings
from service.rules.engine import RulesEngine
from service.store import open_store
from tests.integration.test_cds_hooks import code_of, hook_request, omd_prefetch
from tests.jwt_keys import KeyPair, bearer, claims, es384_key, mint, write_jwks
from tests.server import running_server

ISSUER = "https://ehr.example.org"
PUBLIC = "https://cds.example.org"  # the load balancer's URL: the `aud` of every replica
PV = "/cds-services/oligocds-patient-view"


@pytest.fixture
def key() -> KeyPair:
    return es384_key()


@pytest.fixture
def replicas(fresh_pg_dsn: str, engine: RulesEngine, key: KeyPair, tmp_path: Path) -> Iterator[tuple[str, str]]:
    settings = Settings(
        env="production",
        public_base_url=PUBLIC,
        cds_trusted_issuers=json.dumps({ISSUER: str(write_jwks(tmp_path, key))}),
        store_url=fresh_pg_dsn,
        rules_reload_seconds=0,
    )
    with ExitStack() as stack:
        urls = []
        for _ in range(2):
            store = open_store(fresh_pg_dsn)
            stack.callback(store.close)
            container = bootstrap(settings, engine=engine, store=store)
            urls.append(stack.enter_context(running_server(settings, container)))
        yield urls[0], urls[1]


def auth(key: KeyPair, path: str, jti: str | None = None) -> dict[str, str]:
    minted = claims(iss=ISSUER, aud=f"{PUBLIC}{path}", **({"jti": jti} if jti else {}))
    return {"Authorization": bearer(mint(key, minted))}


def test_a_token_accepted_by_one_replica_is_refused_by_the_other(replicas: tuple[str, str], key: KeyPair) -> None:
    a, b = replicas
    headers = auth(key, "/cds-services")
    assert httpx.get(f"{a}/cds-services", headers=headers).status_code == 200
    refused = httpx.get(f"{b}/cds-services", headers=headers)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert httpx.get(f"{a}/cds-services", headers=headers).status_code == 401
    # a new token with the same jti is a replay too; another jti is not
    assert httpx.get(f"{b}/cds-services", headers=auth(key, "/cds-services", "j-1")).status_code == 200
    assert httpx.get(f"{a}/cds-services", headers=auth(key, "/cds-services", "j-1")).status_code == 401
    assert httpx.get(f"{a}/cds-services", headers=auth(key, "/cds-services")).status_code == 200


def test_feedback_posted_to_one_replica_is_counted_by_the_other(replicas: tuple[str, str], key: KeyPair) -> None:
    a, b = replicas
    response = httpx.post(f"{a}{PV}", json=hook_request("patient-view", omd_prefetch()), headers=auth(key, PV))
    assert response.status_code == 200, response.text
    mdt = next(c for c in response.json()["cards"] if code_of(c) == "mdt-review")
    reason = {"system": "http://oligocds.org/fhir/CodeSystem/oligocds", "code": "already-addressed"}
    item: dict[str, Any] = {
        "card": mdt["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-26T10:00:00Z",
        "overrideReason": {"reason": reason, "userComment": "discussed at tumor board"},
    }
    unknown = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}
    for url in (a, a, b):  # the same items again, on either replica: stored once
        posted = httpx.post(f"{url}{PV}/feedback", json={"feedback": [item, unknown]}, headers=auth(key, PV))
        assert posted.status_code == 200, posted.text
    path = f"{PV}/feedback/summary"
    summaries = [httpx.get(f"{url}{path}", headers=auth(key, path)) for url in (a, b)]
    assert [s.status_code for s in summaries] == [200, 200]
    assert (
        summaries[0].json()
        == summaries[1].json()
        == {
            "service": "oligocds-patient-view",
            "rules": [
                {
                    "rule": "MDT-01",
                    "code": "mdt-review",
                    "accepted": 0,
                    "overridden": 1,
                    "overrideReasons": {f"{reason['system']}|{reason['code']}": 1},
                }
            ],
            "unmatched": {"accepted": 0, "overridden": 1},
        }
    )
    labels = 'code="mdt-review",outcome="overridden",rule="MDT-01",service="oligocds-patient-view"'
    assert f"oligocds_cds_feedback_total{{{labels}}} 1.0" in httpx.get(f"{b}/metrics").text


def test_feedback_on_a_card_of_one_replica_is_matched_by_the_other(
    replicas: tuple[str, str], key: KeyPair, fresh_pg_dsn: str
) -> None:
    a, b = replicas
    response = httpx.post(f"{a}{PV}", json=hook_request("patient-view", omd_prefetch()), headers=auth(key, PV))
    assert response.status_code == 200, response.text
    mdt = next(c for c in response.json()["cards"] if code_of(c) == "mdt-review")
    wait_for_card(fresh_pg_dsn, mdt["uuid"])  # A writes its issued cards in the background
    item = {"card": mdt["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}
    posted = httpx.post(f"{b}{PV}/feedback", json={"feedback": [item]}, headers=auth(key, PV))
    assert posted.status_code == 200, posted.text
    path = f"{PV}/feedback/summary"
    summary = httpx.get(f"{b}{path}", headers=auth(key, path))
    assert summary.status_code == 200, summary.text
    assert summary.json()["rules"] == [
        {"rule": "MDT-01", "code": "mdt-review", "accepted": 0, "overridden": 1},
    ]
    assert summary.json()["unmatched"] == {"accepted": 0, "overridden": 0}


def wait_for_card(dsn: str, card_uuid: str, timeout_s: float = 10.0) -> None:
    """Poll the shared store until the card issued by a replica is there (its write is asynchronous)."""
    store = open_store(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while store.issued_card(card_uuid) is None:
            assert time.monotonic() < deadline, f"card {card_uuid} not stored within {timeout_s} s"
            time.sleep(0.02)
    finally:
        store.close()
