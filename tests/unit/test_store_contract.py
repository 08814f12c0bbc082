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
from service.store.base import ISSUED_CARDS_KEPT_S, SHARED, FeedbackRecord, IssuedCardRecord
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
        return tx.upsert(patient, resource).merge


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


def test_a_move_names_the_patient_left_behind(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.upsert(P1, obs()).left is None  # first copy
        assert tx.upsert(P1, obs(valueString="x")).left is None  # same patient
        moved = tx.upsert(P2, obs(valueString="x"))
        assert (moved.merge, moved.left) == (Merge.UPDATED, P1)
        assert tx.upsert(P1, obs("o9", "2020-01-01T00:00:00Z")).left is None
        older = tx.upsert(P2, obs("o9", "2019-01-01T00:00:00Z"))
        assert (older.merge, older.left) == (Merge.IGNORED_OLDER, None)  # ignored: P1 keeps it
        removed = tx.upsert(P2, obs("o9", "2021-01-01T00:00:00Z", status="entered-in-error"))
        assert (removed.merge, removed.left) == (Merge.DELETED, P1)
    assert resources(store, P1) == []
    assert resources(store, P2) == [obs(valueString="x")]


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


def medication(rid: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": rid, "code": {"text": name}}


def test_shared_resources_come_with_the_patients_that_refer_to_them(store: Store) -> None:
    with store.transaction() as tx:
        for resource in (medication("m1", "leuprolide"), medication("m2", "letrozole"), medication("m3", "x")):
            assert tx.upsert(SHARED, resource).merge is Merge.ADDED
        tx.upsert(P1, obs("o1"))
        tx.upsert(P2, obs("o2"))
        assert tx.refer(P1, ["Medication/m2", "Medication/m1", "Medication/absent"]) is True
        assert tx.refer(P1, ["Medication/m1"]) is False  # known already
        assert tx.refer(P2, ["Medication/m1"]) is True
        assert [r["id"] for r in tx.resources(P1)] == ["o1", "m1", "m2"]  # own first, then shared by key
        assert [r["id"] for r in tx.resources(P2)] == ["o2", "m1"]
        assert tx.referrers("Medication/m1") == [P1, P2]
        assert tx.referrers("Medication/m3") == []
        assert tx.delete("Medication", "m2") == SHARED
        assert [r["id"] for r in tx.resources(P1)] == ["o1", "m1"]
        tx.refer("Patient/p3", ["Medication/m1"])
        assert tx.resources("Patient/p3") == []  # references alone are no patient state


def test_fresh_resources_only_after_the_patient_was_seen(store: Store) -> None:
    with store.transaction() as tx:
        tx.upsert(P1, obs("o1"))
        assert tx.fresh_resources(P1, since=0) is None  # never seen: no state to stand in for a query
        tx.seen(P1, 1_000.0)
        assert [r["id"] for r in tx.fresh_resources(P1, since=1_000.0) or []] == ["o1"]
        assert tx.fresh_resources(P1, since=1_001.0) is None  # older than asked
        tx.seen(P1, 2_000.0)
        assert tx.fresh_resources(P1, since=1_001.0) is not None


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


# --- CDS Hooks: jti replay store and feedback (cds-hooks.md §7, §8 check 8) ---------------------------------------
def test_jti_new_replayed_and_per_issuer(store: Store) -> None:
    assert store.remember_jti("iss-a", "j1", expires_at=1_000.0, now=900.0) is True
    assert store.remember_jti("iss-a", "j1", expires_at=1_100.0, now=950.0) is False  # replay
    assert store.remember_jti("iss-b", "j1", expires_at=1_000.0, now=950.0) is True  # another issuer
    assert store.remember_jti("iss-a", "j2", expires_at=1_000.0, now=950.0) is True
    long = "x" * 10_000  # any length: stored as a digest (a PostgreSQL index entry holds at most ~2.7 kB)
    assert store.remember_jti(long, long, expires_at=1_000.0, now=950.0) is True
    assert store.remember_jti(long, long, expires_at=1_000.0, now=950.0) is False


def test_jti_kept_until_it_expires_then_reusable(store: Store) -> None:
    assert store.remember_jti("iss", "j", expires_at=1_000.5, now=900.0) is True
    assert store.remember_jti("iss", "j", expires_at=2_000.0, now=1_000.9) is False  # kept at least until 1000.5
    assert store.remember_jti("iss", "j", expires_at=3_000.0, now=1_001.0) is False  # still kept (whole seconds)
    assert store.remember_jti("iss", "j", expires_at=3_000.0, now=1_002.0) is True  # expired: taken over
    assert store.remember_jti("iss", "j", expires_at=3_000.0, now=2_500.0) is False  # with the new expiry
    assert store.remember_jti("iss", "late", expires_at=10_000.0, now=2_500.0) is True
    # later: the opportunistic purge deletes the expired "j", never the unexpired "late"
    assert store.remember_jti("iss", "other", expires_at=10_000.0, now=5_000.0) is True
    assert store.remember_jti("iss", "late", expires_at=10_000.0, now=5_001.0) is False
    assert store.remember_jti("iss", "j", expires_at=10_000.0, now=5_001.0) is True


def test_jti_concurrent_first_use_is_granted_once(url: str) -> None:
    stores = [open_store(url), open_store(url)]  # two connections/pools, as two replicas would have
    try:
        for round_ in range(20):
            barrier, results = threading.Barrier(4), []

            def claim(n: int, jti: str, barrier: threading.Barrier, results: list[bool]) -> None:
                barrier.wait()
                results.append(stores[n % 2].remember_jti("iss", jti, expires_at=2_000.0, now=1_000.0))

            args = [(n, f"j-{round_}", barrier, results) for n in range(4)]
            threads = [threading.Thread(target=claim, args=a) for a in args]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(results) == [False, False, False, True], round_
    finally:
        for opened in stores:
            opened.close()


def feedback(card: str = "c1", outcome: str = "overridden", **extra: Any) -> FeedbackRecord:
    fields: dict[str, Any] = {
        "service": "svc",
        "card": card,
        "outcome": outcome,
        "outcome_timestamp": "2026-11-26T10:00:00.000000Z",
        "reason": None,
        "accepted_suggestions": (),
        "user_comment": None,
        "rule": "MDT-01",
        "code": "mdt-review",
        "ruleset_version": "1.0.0",
    }
    return FeedbackRecord(**{**fields, **extra})


def test_feedback_is_stored_once_per_identical_item(store: Store) -> None:
    reason = ("http://oligocds.org/fhir/CodeSystem/oligocds", "already-addressed")
    items = [
        feedback(),
        feedback(user_comment="a comment does not make it another item"),  # same item, same batch
        feedback(reason=reason),
        feedback(outcome_timestamp="2026-11-26T11:00:00.000000Z"),
        feedback(outcome="accepted", accepted_suggestions=("s1",)),
        feedback(card="c2", rule=None, code=None, ruleset_version=None),  # unmatched
        feedback(service="other"),
    ]
    assert store.add_feedback(items) == 6
    assert store.add_feedback(items) == 0
    assert store.add_feedback([feedback(accepted_suggestions=("different",))]) == 0
    assert store.add_feedback([]) == 0
    counts = {(c.rule, c.code, c.outcome, c.reason): c.count for c in store.feedback_counts("svc")}
    assert counts == {
        ("MDT-01", "mdt-review", "overridden", None): 2,
        ("MDT-01", "mdt-review", "overridden", reason): 1,
        ("MDT-01", "mdt-review", "accepted", None): 1,
        (None, None, "overridden", None): 1,
    }
    assert [(c.outcome, c.count) for c in store.feedback_counts("other")] == [("overridden", 1)]
    assert store.feedback_counts("none") == []


def test_feedback_batch_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(StoreError):
        store.add_feedback([feedback("ok"), feedback("bad", outcome=None)])  # NOT NULL
    assert store.feedback_counts("svc") == []


def card(uuid: str = "u1", rule: str = "MDT-01", issued_at: int | None = None, **extra: Any) -> IssuedCardRecord:
    when = int(time.time()) if issued_at is None else issued_at
    fields: dict[str, Any] = {"service": "svc", "patient": P1, "code": "mdt-review", "ruleset_version": "1.0.0"}
    return IssuedCardRecord(uuid=uuid, rule=rule, issued_at=when, **{**fields, **extra})


def test_issued_cards_remembered_and_found(store: Store) -> None:
    cards = [card("u1"), card("u2", rule="OMD-01", code="omd", service=None, patient=P2)]
    store.remember_cards(cards)
    assert store.issued_card("u1") == cards[0]
    assert store.issued_card("u2") == cards[1]
    assert store.issued_card("unknown") is None
    store.remember_cards([])


def test_issued_cards_duplicates_are_ignored(store: Store) -> None:
    first, other = card("u1"), card("u3")
    store.remember_cards([first, card("u1", rule="in-the-same-batch")])
    store.remember_cards([card("u1", rule="later"), other])  # a held uuid does not fail the batch
    assert store.issued_card("u1") == first
    assert store.issued_card("u3") == other


def test_issued_cards_in_batches_larger_than_one_statement(store: Store) -> None:
    cards = [card(f"u{n}") for n in range(250)]
    store.remember_cards(cards)
    assert [store.issued_card(f"u{n}") for n in (0, 99, 100, 249)] == [cards[n] for n in (0, 99, 100, 249)]


def test_old_issued_cards_are_deleted(url: str) -> None:
    old = int(time.time()) - ISSUED_CARDS_KEPT_S - 60
    first = open_store(url)
    try:
        first.remember_cards([card("old", issued_at=old)])  # the first call purges before inserting
        first.remember_cards([card("new")])  # no purge within the hour on one store object
        assert first.issued_card("old") is not None
    finally:
        first.close()
    second = open_store(url)  # another store object: purges on its first call
    try:
        second.remember_cards([card("newer")])
        assert second.issued_card("old") is None
        assert second.issued_card("new") is not None and second.issued_card("newer") is not None
    finally:
        second.close()


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
