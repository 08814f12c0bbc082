"""Feedback on cards (cds-hooks.md §7, §11.7): stored idempotently, joined to the issued cards, counted per rule.

`FeedbackStore` and `IssuedCards` are the ports. Feedback lives in the state store shared by replicas
(`OLIGOCDS_STORE_URL`, `StoreFeedback`), each item with the rule and code of its card, looked up when it arrives
among the cards issued by any replica (`StoreIssuedCards`: the same store, written in the background)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from service.store.base import FeedbackCount, FeedbackRecord, IssuedCardRecord, Store

log = logging.getLogger("oligocds.cdshooks")


@dataclass(frozen=True, slots=True)
class Feedback:
    """One feedback item as received; `userComment` is kept for review and never logged."""

    card: str
    outcome: str  # "accepted" | "overridden"
    outcome_timestamp: str  # ISO 8601, normalised to UTC
    reason: tuple[str, str] | None = None  # (system, code) of overrideReason.reason
    accepted_suggestions: tuple[str, ...] = ()
    user_comment: str | None = None

    @property
    def key(self) -> tuple[str, str, str, tuple[str, str] | None]:
        """Identical items (same card, outcome, time and reason) are stored once."""
        return (self.card, self.outcome, self.outcome_timestamp, self.reason)


@dataclass(frozen=True, slots=True)
class IssuedCard:
    patient: str
    rule: str
    code: str
    ruleset_version: str


class FeedbackStore(Protocol):
    def add(self, service_id: str, items: Sequence[tuple[Feedback, IssuedCard | None]]) -> int:
        """Store the items (each with its card, None when unmatched) not stored before; return how many were new."""
        ...

    def counts(self, service_id: str) -> list[FeedbackCount]:
        """The service's stored items counted per (rule, code, outcome, reason); rule None = unmatched."""
        ...


class IssuedCards(Protocol):
    def record(self, patient: str, cards: Iterable[Mapping[str, Any]], service: str | None = None) -> None:
        """Remember the cards of one response (never blocks on I/O: called on the event loop)."""
        ...

    def find(self, card_uuid: str) -> IssuedCard | None:
        """The card issued with this uuid, or None (may block on the store: call it from a worker thread)."""
        ...

    def close(self) -> None:
        """Finish pending writes and release resources (app shutdown)."""
        ...


class StoreFeedback:
    """`FeedbackStore` in the state store (`store` opens it on first use). Blocks on database I/O: call it from a
    worker thread in async code. Identical items (`Feedback.key`) are stored once, across replicas."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def add(self, service_id: str, items: Sequence[tuple[Feedback, IssuedCard | None]]) -> int:
        return self._store().add_feedback([record(service_id, item, card) for item, card in items])

    def counts(self, service_id: str) -> list[FeedbackCount]:
        return self._store().feedback_counts(service_id)


def record(service_id: str, item: Feedback, card: IssuedCard | None) -> FeedbackRecord:
    """What the store keeps of one item: the item, and the rule and code of its card (None: unmatched)."""
    return FeedbackRecord(
        service=service_id,
        card=item.card,
        outcome=item.outcome,
        outcome_timestamp=item.outcome_timestamp,
        reason=item.reason,
        accepted_suggestions=item.accepted_suggestions,
        user_comment=item.user_comment,
        rule=card.rule if card else None,
        code=card.code if card else None,
        ruleset_version=card.ruleset_version if card else None,
    )


class MemoryIssuedCards:
    """Card uuid → (patient, rule, code, ruleset version) in this process; the oldest entries go beyond `limit`.
    Alone, for tests and single-process use; in `StoreIssuedCards`, the cache of this replica's recent cards."""

    def __init__(self, limit: int = 100_000) -> None:
        self._cards: OrderedDict[str, IssuedCard] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def record(self, patient: str, cards: Iterable[Mapping[str, Any]], service: str | None = None) -> None:
        self.put([(card["uuid"], issued(patient, card)) for card in cards])

    def put(self, cards: Iterable[tuple[str, IssuedCard]]) -> None:
        with self._lock:
            for uuid, card in cards:
                self._cards[uuid] = card
                self._cards.move_to_end(uuid)
            while len(self._cards) > self._limit:
                self._cards.popitem(last=False)

    def find(self, card_uuid: str) -> IssuedCard | None:
        with self._lock:
            return self._cards.get(card_uuid)

    def close(self) -> None:
        pass


class StoreIssuedCards:
    """`IssuedCards` in the state store (`store` opens it on first use), shared by replicas.

    `record` adds no latency to the hook response: it queues the rows for one background thread, which writes
    everything queued since its last write in one `Store.remember_cards` call (under load, the cards of several
    calls share one transaction). A failed write is logged (count and error type only, never card content or
    patient) and its cards stay unknown to other replicas. Until written, this replica finds its recent cards in
    memory. At most `max_pending` rows wait; beyond that new rows are dropped with a warning. `find` blocks on the
    store: call it from a worker thread. `close` waits for the pending writes."""

    def __init__(self, store: Callable[[], Store], recent: int = 10_000, max_pending: int = 100_000) -> None:
        self._store = store
        self._recent = MemoryIssuedCards(recent)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="oligocds-issued-cards")
        self._queued: list[IssuedCardRecord] = []
        self._draining = False  # a drain is submitted and has not yet taken the last queued rows
        self._max_pending = max_pending
        self._lock = threading.Lock()

    def record(self, patient: str, cards: Iterable[Mapping[str, Any]], service: str | None = None) -> None:
        now = int(time.time())
        found = [(card["uuid"], issued(patient, card)) for card in cards]
        if not found:
            return
        self._recent.put(found)
        rows = [IssuedCardRecord(uuid, service, c.patient, c.rule, c.code, c.ruleset_version, now) for uuid, c in found]
        with self._lock:
            if len(self._queued) + len(rows) > self._max_pending:
                log.warning("issued cards not stored (%d cards): write backlog full", len(rows))
                return
            self._queued.extend(rows)
            if self._draining:
                return  # the running drain takes them
            self._draining = True
        try:
            self._writer.submit(self._drain)
        except RuntimeError:  # shut down
            with self._lock:
                dropped, self._queued, self._draining = len(self._queued), [], False
            log.warning("issued cards not stored (%d cards): shutting down", dropped)

    def _drain(self) -> None:
        while True:
            with self._lock:
                rows, self._queued = self._queued, []
                if not rows:
                    self._draining = False
                    return
            try:
                self._store().remember_cards(rows)
            except Exception as exc:  # logged, never raised: nobody waits for this write
                log.warning("issued cards not stored (%d cards): %s", len(rows), type(exc).__name__)

    def find(self, card_uuid: str) -> IssuedCard | None:
        recent = self._recent.find(card_uuid)
        if recent is not None:
            return recent
        row = self._store().issued_card(card_uuid)
        return IssuedCard(row.patient, row.rule, row.code, row.ruleset_version) if row else None

    def close(self) -> None:
        self._writer.shutdown(wait=True)


def issued(patient: str, card: Mapping[str, Any]) -> IssuedCard:
    """The (rule, code) a card stands for: its explanation, or OMD-01 for the summary card."""
    extension = card.get("extension", {})
    why = extension.get("org.oligocds.explanation") or {"rule": "OMD-01", "code": card["source"]["topic"]["code"]}
    version = extension.get("org.oligocds.ruleset", {}).get("version", "")
    return IssuedCard(patient, why["rule"], why["code"], version)


def summary(counts: Iterable[FeedbackCount]) -> dict[str, Any]:
    """Counts of accepted / overridden (and override reasons) per (rule, code); unknown card uuids apart."""
    outcomes: Counter[tuple[str, str, str]] = Counter()
    reasons: Counter[tuple[str, str, str]] = Counter()
    unmatched: Counter[str] = Counter()
    for row in counts:
        if row.rule is None or row.code is None:
            unmatched[row.outcome] += row.count
            continue
        outcomes[(row.rule, row.code, row.outcome)] += row.count
        if row.reason:
            reasons[(row.rule, row.code, f"{row.reason[0]}|{row.reason[1]}")] += row.count
    pairs = sorted({(rule, code) for rule, code, _ in outcomes})
    return {
        "rules": [_counts(rule, code, outcomes, reasons) for rule, code in pairs],
        "unmatched": {o: unmatched[o] for o in ("accepted", "overridden")},
    }


def _counts(
    rule: str, code: str, outcomes: Counter[tuple[str, str, str]], reasons: Counter[tuple[str, str, str]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule, "code": code}
    out.update({o: outcomes[(rule, code, o)] for o in ("accepted", "overridden")})
    mine = {reason: n for (r, c, reason), n in sorted(reasons.items()) if (r, c) == (rule, code)}
    if mine:
        out["overrideReasons"] = mine
    return out
