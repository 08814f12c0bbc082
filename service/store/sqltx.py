"""`StoreTx` over a DB-API cursor, shared by the SQLite and PostgreSQL stores (the merge policy is in merge.py)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from service.store import merge
from service.store.base import (
    ISSUED_CARDS_KEPT_S,
    SHARED,
    FeedbackCount,
    FeedbackRecord,
    IssuedCardRecord,
    StoredResult,
    StoreError,
    Upserted,
)
from service.store.merge import Write
from service.store.schema import Dialect

Rows = Callable[[str, Sequence[Any]], list[Any]]  # runs one statement, returns its rows ([] if it has none)

_GET_RESOURCE = "SELECT patient, last_updated, version_id, live, body FROM resources WHERE key = ?"
_PUT_RESOURCE = (
    "INSERT INTO resources (key, patient, resource_type, last_updated, version_id, live, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET patient = excluded.patient,"
    " resource_type = excluded.resource_type, last_updated = excluded.last_updated,"
    " version_id = excluded.version_id, live = excluded.live, body = excluded.body"
)
_DELETE_RESOURCE = "DELETE FROM resources WHERE key = ? AND live = 1 RETURNING patient"
_PATIENT_RESOURCES = "SELECT body FROM resources WHERE patient = ? AND live = 1 ORDER BY resource_type, key"
_SHARED_OF = (
    "SELECT r.body FROM shared_refs s JOIN resources r ON r.key = s.key"
    " WHERE s.patient = ? AND r.patient = '' AND r.live = 1 ORDER BY r.key"
)
_ADD_REF = "INSERT INTO shared_refs (key, patient) VALUES (?, ?) ON CONFLICT (key, patient) DO NOTHING RETURNING 1"
_REFERRERS = "SELECT patient FROM shared_refs WHERE key = ? ORDER BY patient"
_SEEN = (
    "INSERT INTO patient_seen (patient, seen_at) VALUES (?, ?) ON CONFLICT (patient)"
    " DO UPDATE SET seen_at = excluded.seen_at"
)
_SEEN_AT = "SELECT seen_at FROM patient_seen WHERE patient = ?"
_GET_RESULT = "SELECT body, digest FROM results WHERE patient = ?"
_PUT_RESULT = (
    "INSERT INTO results (patient, body, digest, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (patient)"
    " DO UPDATE SET body = excluded.body, digest = excluded.digest, updated_at = excluded.updated_at"
)
_GET_OFFSET = "SELECT next_offset FROM offsets WHERE topic = ? AND kafka_partition = ?"
_PUT_OFFSET = (
    "INSERT INTO offsets (topic, kafka_partition, next_offset) VALUES (?, ?, ?)"
    " ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset"
)
# one statement: inserted, or taken over when expired (a row back means "first use"); atomic on both databases
_REMEMBER_JTI = (
    "INSERT INTO cds_jti (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
    " SET expires_at = excluded.expires_at WHERE cds_jti.expires_at < ? RETURNING 1"
)
_PURGE_JTI = "DELETE FROM cds_jti WHERE expires_at < ?"
_ADD_FEEDBACK = (
    "INSERT INTO cds_feedback (service, item_key, card, outcome, outcome_timestamp, reason_system, reason_code,"
    " accepted_suggestions, user_comment, rule, code, ruleset_version, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (service, item_key) DO NOTHING RETURNING 1"
)
_FEEDBACK_COUNTS = (
    "SELECT rule, code, outcome, reason_system, reason_code, COUNT(*) FROM cds_feedback WHERE service = ?"
    " GROUP BY rule, code, outcome, reason_system, reason_code"
)
_INSERT_CARDS = (
    "INSERT INTO cds_issued_cards (uuid, service, patient, rule, code, ruleset_version, issued_at) VALUES {values}"
    " ON CONFLICT (uuid) DO NOTHING"
)
_ISSUED_CARD = (
    "SELECT uuid, service, patient, rule, code, ruleset_version, issued_at FROM cds_issued_cards WHERE uuid = ?"
)
_PURGE_CARDS = "DELETE FROM cds_issued_cards WHERE issued_at < ?"
JTI_PURGE_INTERVAL_S = 60.0
CARDS_PURGE_INTERVAL_S = 3600.0
CARDS_PER_INSERT = 100  # rows per INSERT statement (SQLite allows 32766 parameters, 7 per row)


@dataclass(frozen=True, slots=True)
class Queries:
    """The store's statements in one dialect."""

    dialect: Dialect
    get_resource: str
    put_resource: str
    delete_resource: str
    patient_resources: str
    shared_of: str
    add_ref: str
    referrers: str
    seen: str
    seen_at: str
    get_result: str
    put_result: str
    get_offset: str
    put_offset: str
    lock_patient: str | None
    remember_jti: str
    purge_jti: str
    add_feedback: str
    feedback_counts: str
    issued_card: str
    purge_cards: str

    @classmethod
    def of(cls, dialect: Dialect, lock_patient: str | None = None) -> Queries:
        raw = (
            *(_GET_RESOURCE, _PUT_RESOURCE, _DELETE_RESOURCE, _PATIENT_RESOURCES),
            *(_SHARED_OF, _ADD_REF, _REFERRERS, _SEEN, _SEEN_AT),
        )
        more = (_GET_RESULT, _PUT_RESULT, _GET_OFFSET, _PUT_OFFSET, lock_patient)
        cds = (_REMEMBER_JTI, _PURGE_JTI, _ADD_FEEDBACK, _FEEDBACK_COUNTS, _ISSUED_CARD, _PURGE_CARDS)
        return cls(
            dialect,
            *(dialect.sql(q) for q in raw),
            *(dialect.sql(q) if q else None for q in more),
            *(dialect.sql(q) for q in cds),
        )

    def insert_cards(self, n: int) -> str:
        """The INSERT of `n` issued cards in one statement."""
        return self.dialect.sql(_INSERT_CARDS.format(values=", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n)))


class Cursor(Protocol):
    """The part of a DB-API cursor both sqlite3 and psycopg provide."""

    @property
    def description(self) -> Any: ...

    def execute(self, query: str, params: Sequence[Any] = ..., /) -> object: ...

    def fetchall(self) -> list[Any]: ...


def cursor_rows(cursor: Cursor, errors: tuple[type[Exception], ...]) -> Rows:
    """A `Rows` on `cursor` that raises driver errors as StoreError."""

    def rows(statement: str, params: Sequence[Any]) -> list[Any]:
        try:
            cursor.execute(statement, params)
            return list(cursor.fetchall()) if cursor.description is not None else []
        except errors as exc:
            raise StoreError(f"store statement failed: {exc}") from exc

    return rows


def read_result(rows: Rows, queries: Queries, patient: str) -> StoredResult | None:
    found = rows(queries.get_result, (patient,))
    return StoredResult(patient, bytes(found[0][0]), str(found[0][1])) if found else None


def read_offset(rows: Rows, queries: Queries, topic: str, partition: int) -> int | None:
    found = rows(queries.get_offset, (topic, partition))
    return int(found[0][0]) if found else None


def _digest(*parts: str | None) -> str:
    """sha256 hex of the parts (JSON array: unambiguous, None distinct from ""): a fixed-size key for any length."""
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


class PurgeClock:
    """When to delete expired `jti` rows: at most once per interval per store object (thread-safe enough: an extra
    purge is harmless)."""

    def __init__(self, interval_s: float = JTI_PURGE_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._next = -math.inf

    def due(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self._interval_s
        return True


def remember_jti(rows: Rows, queries: Queries, issuer: str, jti: str, expires_at: float, now: float) -> bool:
    """`Store.remember_jti` on `rows` (whole seconds: kept at least until `expires_at`)."""
    params = (_digest(issuer, jti), math.ceil(expires_at), math.floor(now))
    return bool(rows(queries.remember_jti, params))


def purge_jti(rows: Rows, queries: Queries, now: float) -> None:
    rows(queries.purge_jti, (math.floor(now),))


def add_feedback(rows: Rows, queries: Queries, items: Sequence[FeedbackRecord]) -> int:
    """`Store.add_feedback` on `rows`, inside the caller's transaction."""
    received = datetime.now(UTC).isoformat()
    new = 0
    for item in items:
        system, code = item.reason if item.reason else (None, None)
        key = _digest(item.card, item.outcome, item.outcome_timestamp, system, code)
        suggestions = orjson.dumps(list(item.accepted_suggestions)).decode()
        params = (item.service, key, item.card, item.outcome, item.outcome_timestamp, system, code, suggestions)
        more = (item.user_comment, item.rule, item.code, item.ruleset_version, received)
        new += len(rows(queries.add_feedback, (*params, *more)))
    return new


def feedback_counts(rows: Rows, queries: Queries, service: str) -> list[FeedbackCount]:
    found = rows(queries.feedback_counts, (service,))
    return [
        FeedbackCount(rule, code, outcome, (system, reason) if system is not None else None, int(n))
        for rule, code, outcome, system, reason, n in found
    ]


def remember_cards(rows: Rows, queries: Queries, cards: Sequence[IssuedCardRecord]) -> None:
    """`Store.remember_cards` on `rows`, inside the caller's transaction (a statement per `CARDS_PER_INSERT`)."""
    for start in range(0, len(cards), CARDS_PER_INSERT):
        chunk = cards[start : start + CARDS_PER_INSERT]
        params = [
            value
            for c in chunk
            for value in (c.uuid, c.service, c.patient, c.rule, c.code, c.ruleset_version, int(c.issued_at))
        ]
        rows(queries.insert_cards(len(chunk)), params)


def purge_cards(rows: Rows, queries: Queries, now: float) -> None:
    """Delete the issued cards older than `ISSUED_CARDS_KEPT_S`."""
    rows(queries.purge_cards, (math.floor(now - ISSUED_CARDS_KEPT_S),))


def issued_card(rows: Rows, queries: Queries, uuid: str) -> IssuedCardRecord | None:
    found = rows(queries.issued_card, (uuid,))
    if not found:
        return None
    card, service, patient, rule, code, version, issued_at = found[0]
    return IssuedCardRecord(card, service, patient, rule, code, version, int(issued_at))


class SqlTx:
    """One open transaction; every statement runs through `rows` (see base.StoreTx for the contract)."""

    def __init__(self, rows: Rows, queries: Queries) -> None:
        self._rows = rows
        self._q = queries
        self._savepoints = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"oligocds_{self._savepoints}"
        self._rows(f"SAVEPOINT {name}", ())
        try:
            yield
        except BaseException:
            self._rows(f"ROLLBACK TO SAVEPOINT {name}", ())
            self._rows(f"RELEASE SAVEPOINT {name}", ())
            raise
        else:
            self._rows(f"RELEASE SAVEPOINT {name}", ())
        finally:
            self._savepoints -= 1

    def lock_patient(self, patient: str) -> None:
        if self._q.lock_patient is not None:
            self._rows(self._q.lock_patient, (patient,))

    def upsert(self, patient: str, resource: Mapping[str, Any]) -> Upserted:
        new = merge.incoming(patient, resource)
        old = self._stored(new.key)
        decision = merge.decide(new, old)
        if decision.write is Write.NOTHING:
            return Upserted(decision.merge)
        self._put(new, live=decision.write is Write.LIVE)
        left = old.patient if old is not None and old.live and old.patient != new.patient else None
        return Upserted(decision.merge, left)

    def delete(self, resource_type: str, resource_id: str) -> str | None:
        found = self._rows(self._q.delete_resource, (f"{resource_type}/{resource_id}",))
        return str(found[0][0]) if found else None

    def resources(self, patient: str) -> list[dict[str, Any]]:
        own = [orjson.loads(row[0]) for row in self._rows(self._q.patient_resources, (patient,))]
        if not own or patient == SHARED:
            return own
        return own + [orjson.loads(row[0]) for row in self._rows(self._q.shared_of, (patient,))]

    def refer(self, patient: str, keys: Sequence[str]) -> bool:
        return any([bool(self._rows(self._q.add_ref, (key, patient))) for key in sorted(set(keys))])

    def referrers(self, key: str) -> list[str]:
        return [str(row[0]) for row in self._rows(self._q.referrers, (key,))]

    def seen(self, patient: str, at: float) -> None:
        self._rows(self._q.seen, (patient, math.floor(at)))

    def fresh_resources(self, patient: str, since: float) -> list[dict[str, Any]] | None:
        found = self._rows(self._q.seen_at, (patient,))
        if not found or int(found[0][0]) < math.floor(since):
            return None
        return self.resources(patient)

    def result(self, patient: str) -> StoredResult | None:
        return read_result(self._rows, self._q, patient)

    def save_result(self, patient: str, body: bytes, digest: str) -> None:
        self._rows(self._q.put_result, (patient, body, digest, datetime.now(UTC).isoformat()))

    def offset(self, topic: str, partition: int) -> int | None:
        return read_offset(self._rows, self._q, topic, partition)

    def save_offset(self, topic: str, partition: int, next_offset: int) -> None:
        self._rows(self._q.put_offset, (topic, partition, next_offset))

    def _stored(self, key: str) -> merge.Stored | None:
        found = self._rows(self._q.get_resource, (key,))
        if not found:
            return None
        patient, last_updated, version_id, live, body = found[0]
        stamp = merge.Stamp(merge.read_instant(last_updated), version_id)
        return merge.Stored(str(patient), stamp, bytes(body), bool(live))

    def _put(self, new: merge.Incoming, *, live: bool) -> None:
        updated = merge.format_instant(new.stamp.last_updated)
        params = (new.key, new.patient, new.resource_type, updated, new.stamp.version_id, int(live), new.body)
        self._rows(self._q.put_resource, params)
