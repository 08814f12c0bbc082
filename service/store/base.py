"""The patient state store's port: one small interface, SQLite and PostgreSQL behind it.

A store holds, per patient key ("Patient/<id>", or a urn for a Patient without id), the latest version of each
FHIR resource received for that patient, the latest published result (the per-patient object of contract.md §3)
with its digest, and, per Kafka input partition, the next offset whose effects are not yet in the store. All
writes happen inside `Store.transaction()`: the effects of one Kafka batch or one `POST /ingest` commit together
or not at all.

The same database holds what CDS Hooks replicas must share (cds-hooks.md §7, §8 check 8): the client-JWT `jti`
values seen per issuer, card feedback, and the cards issued (to match feedback to its card on any replica).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

SHARED = ""  # the patient key of resources that belong to no patient (Medication), shared by their referrers
ISSUED_CARDS_KEPT_S = 30 * 24 * 3600  # issued cards older than this are deleted (their feedback: unmatched)


class StoreError(Exception):
    """The store cannot be reached or refused a statement (readiness fails; the caller retries)."""


class Merge(enum.Enum):
    """What `StoreTx.upsert` did with an incoming resource."""

    ADDED = "added"  # no earlier copy
    UPDATED = "updated"  # replaced an older or unversioned copy with different content
    UNCHANGED = "unchanged"  # same content as the stored copy (re-sent bundle)
    IGNORED_OLDER = "ignored-older"  # strictly older meta.lastUpdated / meta.versionId than the stored copy
    DELETED = "deleted"  # the incoming copy is entered-in-error: the stored copy was removed
    IGNORED_DELETED = "ignored-deleted"  # entered-in-error and nothing stored (nothing to remove)

    @property
    def changed(self) -> bool:
        return self in (Merge.ADDED, Merge.UPDATED, Merge.DELETED)


@dataclass(frozen=True, slots=True)
class Upserted:
    """What `StoreTx.upsert` did; `left` is the patient the resource was stored under before when this copy took it
    away from them (it now belongs to another patient, or an entered-in-error copy sent for another patient removed
    it): that patient's state changed too."""

    merge: Merge
    left: str | None = None

    @property
    def changed(self) -> bool:
        return self.merge.changed


@dataclass(frozen=True, slots=True)
class StoredResult:
    patient: str
    body: bytes  # the per-patient JSON object, exactly as published
    digest: str  # "sha256:<hex>" of the object without its time stamps (evaluatedAt, asOf)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One CDS Hooks feedback item to store (cds-hooks.md §7). Items are identical, and stored once, when service,
    card, outcome, outcome time and override reason are equal; `user_comment` is stored and never logged."""

    service: str
    card: str  # the card uuid as received
    outcome: str  # "accepted" | "overridden"
    outcome_timestamp: str  # ISO 8601, normalised to UTC
    reason: tuple[str, str] | None  # (system, code) of overrideReason.reason
    accepted_suggestions: tuple[str, ...]
    user_comment: str | None
    rule: str | None  # rule and code of the card, None when the card uuid is not one we issued (unmatched)
    code: str | None
    ruleset_version: str | None


@dataclass(frozen=True, slots=True)
class FeedbackCount:
    """How many stored feedback items of one service share rule, code, outcome and override reason."""

    rule: str | None  # None: unmatched card uuids
    code: str | None
    outcome: str
    reason: tuple[str, str] | None
    count: int


@dataclass(frozen=True, slots=True)
class IssuedCardRecord:
    """A card issued by a replica, kept so that feedback about it is matched by any replica (cds-hooks.md §7)."""

    uuid: str
    service: str | None
    patient: str  # "Patient/<id>"
    rule: str
    code: str
    ruleset_version: str
    issued_at: int  # epoch seconds


class StoreTx(Protocol):
    """One open database transaction."""

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested unit: rolled back to its start when the block raises (the exception propagates)."""

    def lock_patient(self, patient: str) -> None:
        """Serialise writers of one patient until the transaction ends (PostgreSQL advisory lock)."""

    def upsert(self, patient: str, resource: Mapping[str, Any]) -> Upserted:
        """Merge one validated resource into the patient's state (rules in docs/streaming.md)."""

    def delete(self, resource_type: str, resource_id: str) -> str | None:
        """Remove a resource (a transaction's DELETE entry); the patient key it belonged to, or None."""

    def resources(self, patient: str) -> list[dict[str, Any]]:
        """The patient's current resources, in a stable order (resource type, then key), followed by the live
        shared resources (stored under `SHARED`) the patient refers to, by key."""

    def refer(self, patient: str, keys: Sequence[str]) -> bool:
        """Record that the patient's resources refer to the shared resources `keys` ("Medication/7"); True when
        a reference was new."""

    def referrers(self, key: str) -> list[str]:
        """The patients whose resources refer to the shared resource `key`, in order."""

    def seen(self, patient: str, at: float) -> None:
        """Record that data for the patient arrived at `at` (epoch seconds)."""

    def fresh_resources(self, patient: str, since: float) -> list[dict[str, Any]] | None:
        """The patient's resources (as `resources`) when data for them arrived at or after `since`, else None."""

    def result(self, patient: str) -> StoredResult | None: ...

    def save_result(self, patient: str, body: bytes, digest: str) -> None: ...

    def offset(self, topic: str, partition: int) -> int | None: ...

    def save_offset(self, topic: str, partition: int, next_offset: int) -> None: ...


class Store(Protocol):
    kind: str  # "sqlite" or "postgresql"

    def transaction(self) -> AbstractContextManager[StoreTx]:
        """A write transaction: committed when the block ends normally, rolled back when it raises."""

    def result(self, patient: str) -> StoredResult | None:
        """The latest stored result, read outside any write transaction."""

    def offset(self, topic: str, partition: int) -> int | None: ...

    def remember_jti(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        """Record a JWT `jti` of `issuer`, kept until `expires_at` (epoch seconds), and return True; return False
        when it is held already and not expired at `now` (a replay). Atomic across threads, processes and
        replicas: of concurrent calls with one (issuer, jti), exactly one gets True. Expired entries are deleted
        now and then."""

    def add_feedback(self, items: Sequence[FeedbackRecord]) -> int:
        """Store, in one transaction, the items not stored before (see FeedbackRecord); return how many were new."""

    def feedback_counts(self, service: str) -> list[FeedbackCount]:
        """The stored feedback of `service`, counted per (rule, code, outcome, reason)."""

    def remember_cards(self, cards: Sequence[IssuedCardRecord]) -> None:
        """Store the issued cards in one transaction; a uuid held already is kept as it is. Rows issued more than
        `ISSUED_CARDS_KEPT_S` ago are deleted now and then (at most once an hour per store object)."""

    def issued_card(self, uuid: str) -> IssuedCardRecord | None:
        """The issued card with this uuid, or None."""

    def ping(self) -> None:
        """Raise StoreError unless the database answers."""

    def close(self) -> None: ...


class OpenTransaction:
    """A store transaction kept open across an await (e.g. a Kafka commit), closed later on the same thread.

    `begin()` and `commit()`/`rollback()` must run on one thread: the SQLite store holds a thread-owned lock for
    the length of a transaction.
    """

    def __init__(self, store: Store) -> None:
        self._cm: AbstractContextManager[StoreTx] | None = store.transaction()
        self.tx: StoreTx = self._cm.__enter__()

    def commit(self) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def rollback(self, reason: BaseException | None = None) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            error = reason or RuntimeError("transaction abandoned")
            cm.__exit__(type(error), error, error.__traceback__)
