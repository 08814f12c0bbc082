"""Feedback on cards (cds-hooks.md §7, §11.7): stored idempotently, joined to the issued cards, counted per rule.

`FeedbackStore` and `IssuedCards` are the ports; the in-memory versions here serve development and tests
(SQLite comes later behind the same methods)."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


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
    def add(self, service_id: str, items: Sequence[Feedback]) -> int:
        """Store the items not stored before; return how many were new."""
        ...

    def items(self, service_id: str) -> list[Feedback]: ...


class IssuedCards(Protocol):
    def record(self, patient: str, cards: Iterable[Mapping[str, Any]]) -> None: ...

    def find(self, card_uuid: str) -> IssuedCard | None: ...


class MemoryFeedbackStore:
    def __init__(self) -> None:
        self._items: dict[str, dict[tuple[Any, ...], Feedback]] = {}
        self._lock = threading.Lock()

    def add(self, service_id: str, items: Sequence[Feedback]) -> int:
        with self._lock:
            stored = self._items.setdefault(service_id, {})
            new = {i.key: i for i in items if i.key not in stored}
            stored.update(new)
            return len(new)

    def items(self, service_id: str) -> list[Feedback]:
        with self._lock:
            return list(self._items.get(service_id, {}).values())


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


def summary(items: Iterable[Feedback], cards: IssuedCards) -> dict[str, Any]:
    """Counts of accepted / overridden (and override reasons) per (rule, code); unknown card uuids apart."""
    outcomes: Counter[tuple[str, str, str]] = Counter()
    reasons: Counter[tuple[str, str, str]] = Counter()
    unmatched: Counter[str] = Counter()
    for item in items:
        card = cards.find(item.card)
        if card is None:
            unmatched[item.outcome] += 1
            continue
        outcomes[(card.rule, card.code, item.outcome)] += 1
        if item.reason:
            reasons[(card.rule, card.code, f"{item.reason[0]}|{item.reason[1]}")] += 1
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
