"""Feedback on cards (cds-hooks.md §7, §11.7): stored idempotently, joined to the issued cards, counted per rule.

`FeedbackStore` and `IssuedCards` are the ports. Feedback lives in the state store shared by replicas
(`OLIGOCDS_STORE_URL`, `StoreFeedback`), each item with the rule and code of its card, looked up when it arrives;
issued cards are held in memory by the replica that issued them."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.store.base import FeedbackCount, FeedbackRecord, Store


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
    def record(self, patient: str, cards: Iterable[Mapping[str, Any]]) -> None: ...

    def find(self, card_uuid: str) -> IssuedCard | None: ...


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
    """Card uuid → (patient, rule, code, ruleset version); the oldest entries go beyond `limit`."""

    def __init__(self, limit: int = 100_000) -> None:
        self._cards: OrderedDict[str, IssuedCard] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def record(self, patient: str, cards: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            for card in cards:
                self._cards[card["uuid"]] = issued(patient, card)
                self._cards.move_to_end(card["uuid"])
            while len(self._cards) > self._limit:
                self._cards.popitem(last=False)

    def find(self, card_uuid: str) -> IssuedCard | None:
        with self._lock:
            return self._cards.get(card_uuid)


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
