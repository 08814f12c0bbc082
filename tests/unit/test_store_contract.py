"""The same contract for both stores: SQLite (a file in tmp_path) and PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.store import Merge, Store, StoredResult, StoreError, open_store
from service.store.schema import current_version

P1, P2 = "Patient/p1", "Patient/p2"
EIE_CODING = {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}


def obs(rid: str = "o1", updated: str | None = None, version: str | None = None, **extra: Any) -> dict[str, Any]:
    meta = {k: v for k, v in (("lastUpdated", updated), ("versionId", version)) if v is not None}
    return {"resourceType": "Observation", "id": rid, "meta": meta, "status": "final", **extra}


def condition(rid: str = "c1", updated: str | None = None, eie: bool = False) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Condition", "id": rid, "subject": {"reference": P1}}
    if updated:
        resource["meta"] = {"lastUpdated": updated}
    if eie:
        resource["verificationStatus"] = {"coding": [EIE_CODING]}
    return resource


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("fresh_pg_dsn"))


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    opened = open_store(url)
    yield opened
    opened.close()


def upsert(store: Store, patient: str, resource: dict[str, Any]) -> Merge:
    with store.transaction() as tx:
        return tx.upsert(patient, resource)


def resources(store: Store, patient: str) -> list[dict[str, Any]]:
    with store.transaction() as tx:
        return tx.resources(patient)


# --- merge outcomes -----------------------------------------------------------------------------------------------
def test_added_unchanged_updated(store: Store) -> None:
    assert upsert(store, P1, obs()) is Merge.ADDED
    assert upsert(store, P1, obs()) is Merge.UNCHANGED
    assert upsert(store, P1, obs(valueString="x")) is Merge.UPDATED
    assert resources(store, P1) == [obs(valueString="x")]


def test_older_lastupdated_is_ignored_after_utc_normalisation(store: Store) -> None:
    assert upsert(store, P1, obs(updated="2026-01-01T09:00:00Z")) is Merge.ADDED
    assert upsert(store, P1, obs(updated="2026-01-01T10:00:00+02:00", valueString="old")) is Merge.IGNORED_OLDER
    assert upsert(store, P1, obs(updated="2026-01-01T11:30:00+02:00", valueString="new")) is Merge.UPDATED
    assert resources(store, P1)[0]["valueString"] == "new"


def test_lastupdated_takes_precedence_over_versionid(store: Store) -> None:
    assert upsert(store, P1, obs(updated="2026-01-02T00:00:00Z", version="5")) is Merge.ADDED
    assert upsert(store, P1, obs(updated="2026-01-01T00:00:00Z", version="9")) is Merge.IGNORED_OLDER
    assert upsert(store, P1, obs(updated="2026-01-03T00:00:00Z", version="1")) is Merge.UPDATED
    # equal instants: versionId decides, numerically ("10" > "9")
    assert upsert(store, P1, obs(updated="2026-01-03T00:00:00Z", version="0")) is Merge.IGNORED_OLDER
    assert upsert(store, P1, obs(updated="2026-01-03T00:00:00Z", version="10")) is Merge.UPDATED
    # lastUpdated missing on one side: versionId decides
    assert upsert(store, P1, obs(version="9")) is Merge.IGNORED_OLDER
    assert upsert(store, P1, obs(version="11")) is Merge.UPDATED


def test_when_nothing_decides_the_later_arrival_wins(store: Store) -> None:
    assert upsert(store, P1, obs(version="b")) is Merge.ADDED
    assert upsert(store, P1, obs(version="a")) is Merge.UPDATED
    assert upsert(store, P1, obs(updated="2026-01-01T00:00:00Z")) is Merge.UPDATED
    assert upsert(store, P1, obs(valueString="unversioned")) is Merge.UPDATED


def test_entered_in_error_condition_removes_the_stored_copy(store: Store) -> None:
    assert upsert(store, P1, condition(updated="2026-01-01T00:00:00Z")) is Merge.ADDED
    assert upsert(store, P1, condition(updated="2026-01-02T00:00:00Z", eie=True)) is Merge.DELETED
    assert resources(store, P1) == []
    assert upsert(store, P1, condition(updated="2026-01-02T00:00:00Z", eie=True)) is Merge.IGNORED_DELETED


def test_entered_in_error_observation(store: Store) -> None:
    assert upsert(store, P1, obs(status="entered-in-error")) is Merge.IGNORED_DELETED
    assert upsert(store, P1, obs("o2", updated="2026-01-02T00:00:00Z")) is Merge.ADDED
    late = obs("o2", updated="2026-01-01T00:00:00Z", status="entered-in-error")
    assert upsert(store, P1, late) is Merge.IGNORED_OLDER
    assert upsert(store, P1, obs("o2", status="entered-in-error")) is Merge.DELETED
    assert resources(store, P1) == []


def test_tombstone_keeps_an_older_copy_from_coming_back(store: Store) -> None:
    assert upsert(store, P1, condition(updated="2026-01-02T00:00:00Z", eie=True)) is Merge.IGNORED_DELETED
    assert upsert(store, P1, condition(updated="2026-01-01T00:00:00Z")) is Merge.IGNORED_OLDER
    assert resources(store, P1) == []
    assert upsert(store, P1, condition(updated="2026-01-03T00:00:00Z")) is Merge.ADDED
    assert resources(store, P1) == [condition(updated="2026-01-03T00:00:00Z")]


def test_resource_without_id_is_keyed_by_content(store: Store) -> None:
    anonymous = {"resourceType": "Observation", "status": "final", "code": {"text": "PSA"}}
    assert upsert(store, P1, anonymous) is Merge.ADDED
    assert upsert(store, P1, dict(reversed(anonymous.items()))) is Merge.UNCHANGED
    assert upsert(store, P1, {**anonymous, "valueString": "other"}) is Merge.ADDED
    assert len(resources(store, P1)) == 2


def test_delete(store: Store) -> None:
    upsert(store, P1, obs())
    upsert(store, P1, obs("o2", status="entered-in-error"))  # a tombstone is not a resource of the patient
    with store.transaction() as tx:
        assert tx.delete("Observation", "o1") == P1
        assert tx.delete("Observation", "o1") is None
        assert tx.delete("Observation", "o2") is None
        assert tx.delete("Condition", "nope") is None
    assert resources(store, P1) == []


def test_patient_move(store: Store) -> None:
    upsert(store, P1, obs())
    assert upsert(store, P2, obs()) is Merge.UPDATED
    assert resources(store, P1) == []
    assert resources(store, P2) == [obs()]
    with store.transaction() as tx:
        assert tx.delete("Observation", "o1") == P2


def test_resources_in_type_then_key_order(store: Store) -> None:
    given = [obs("b"), condition("z"), obs("a"), {"resourceType": "Patient", "id": "p1"}, obs("B"), condition("a")]
    with store.transaction() as tx:
        for resource in given:
            tx.upsert(P1, resource)
        assert [(r["resourceType"], r["id"]) for r in tx.resources(P1)] == [
            ("Condition", "a"),
            ("Condition", "z"),
            ("Observation", "B"),
            ("Observation", "a"),
            ("Observation", "b"),
            ("Patient", "p1"),
        ]


# --- results, offsets, transactions -------------------------------------------------------------------------------
def test_results_and_offsets_round_trip(store: Store) -> None:
    assert store.result(P1) is None and store.offset("t", 0) is None
    with store.transaction() as tx:
        tx.save_result(P1, b'{"a":1}', "sha256:1")
        tx.save_offset("t", 0, 41)
        assert tx.result(P1) == StoredResult(P1, b'{"a":1}', "sha256:1")
        assert tx.offset("t", 0) == 41
    with store.transaction() as tx:
        tx.save_result(P1, b'{"a":2}', "sha256:2")
        tx.save_offset("t", 0, 2**40)
        tx.save_offset("t", 1, 7)
    assert store.result(P1) == StoredResult(P1, b'{"a":2}', "sha256:2")
    assert (store.offset("t", 0), store.offset("t", 1), store.offset("u", 0)) == (2**40, 7, None)


def test_rollback_when_the_block_raises(store: Store) -> None:
    class Boom(Exception):
        pass

    boom = Boom()
    with pytest.raises(Boom) as raised, store.transaction() as tx:
        tx.upsert(P1, obs())
        tx.save_result(P1, b"{}", "sha256:0")
        tx.save_offset("t", 0, 10)
        raise boom
    assert raised.value is boom
    assert store.offset("t", 0) is None and store.result(P1) is None
    assert resources(store, P1) == []


def test_savepoint_undoes_only_its_block(store: Store) -> None:
    with store.transaction() as tx:
        tx.upsert(P1, obs("o1"))
        with pytest.raises(ZeroDivisionError), tx.savepoint():
            tx.upsert(P1, obs("o2"))
            _ = 1 / 0
        with tx.savepoint():
            tx.upsert(P1, obs("o3"))
    assert [r["id"] for r in resources(store, P1)] == ["o1", "o3"]


def test_driver_errors_surface_as_store_error(store: Store) -> None:
    with pytest.raises(StoreError) as raised, store.transaction() as tx:
        tx.save_offset("t", 0, 1)
        tx.save_result(P1, None, "sha256:0")  # type: ignore[arg-type]  # NOT NULL
    assert isinstance(raised.value.__cause__, (sqlite3.Error, psycopg.Error))
    assert store.offset("t", 0) is None


def test_reopen_keeps_data_and_does_not_migrate_again(url: str) -> None:
    first = open_store(url)
    upsert(first, P1, obs())
    first.close()
    before = schema_versions(url)
    assert [v for v, _ in before] == list(range(1, current_version() + 1))
    second = open_store(url)
    try:
        assert resources(second, P1) == [obs()]
    finally:
        second.close()
    assert schema_versions(url) == before


def schema_versions(url: str) -> list[tuple[int, str]]:
    query = "SELECT version, applied_at FROM schema_version ORDER BY version"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [tuple(row) for row in conn.execute(query)]
    with psycopg.connect(url) as conn:
        return [tuple(row) for row in conn.execute(query)]


def test_concurrent_writers(url: str) -> None:
    stores = [open_store(url), open_store(url)]  # two connections/pools, as two processes would have
    errors: list[BaseException] = []

    def write(n: int) -> None:
        patient = f"Patient/t{n}"
        try:
            for i in range(25):
                with stores[n % 2].transaction() as tx:
                    tx.lock_patient(patient)
                    for j in range(5):
                        tx.upsert(patient, obs(f"t{n}-{i}-{j}"))
                    tx.save_offset("t", n, i + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert [stores[0].offset("t", n) for n in range(4)] == [25] * 4
        assert all(len(resources(stores[1], f"Patient/t{n}")) == 125 for n in range(4))
    finally:
        for opened in stores:
            opened.close()


# --- health and URLs ----------------------------------------------------------------------------------------------
def test_ping_and_closed_store(url: str) -> None:
    opened = open_store(url)
    opened.ping()
    opened.close()
    with pytest.raises(StoreError):
        opened.ping()


def test_unreachable_postgresql_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    start = time.monotonic()
    with pytest.raises(StoreError):
        open_store(f"postgresql://postgres@127.0.0.1:{port}/oligocds")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "bad", ["mysql://x/y", "oligocds.db", "sqlite://host/x.db", "sqlite:///", "postgresql://h/db?foo=bar"]
)
def test_bad_urls_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        open_store(bad)


def test_sqlite_memory_and_relative_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///:memory:", "sqlite:///./rel.db", "sqlite:///sub.db"):
        opened = open_store(url)
        assert opened.kind == "sqlite"
        assert upsert(opened, P1, obs()) is Merge.ADDED
        opened.close()
    assert (tmp_path / "rel.db").exists() and (tmp_path / "sub.db").exists()
