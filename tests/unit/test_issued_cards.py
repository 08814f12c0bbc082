"""`StoreIssuedCards`: the cards issued by this replica reach the shared store in the background, coalesced."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from service.cdshooks.feedback import IssuedCard, StoreIssuedCards
from service.store.base import IssuedCardRecord
from service.store.sqlite import SqliteStore


class GatedStore(SqliteStore):
    """A real SQLite store whose first `remember_cards` waits until the test opens the gate."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.writes: list[int] = []

    def remember_cards(self, cards: Sequence[IssuedCardRecord]) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.writes.append(len(cards))
        super().remember_cards(cards)


def card(uuid: str, rule: str = "MDT-01", code: str = "tumor-board-review") -> dict[str, Any]:
    return {
        "uuid": uuid,
        "source": {"topic": {"code": code}},
        "extension": {
            "org.oligocds.explanation": {"rule": rule, "code": code},
            "org.oligocds.ruleset": {"version": "1"},
        },
    }


@pytest.fixture
def store(tmp_path: Path) -> GatedStore:
    return GatedStore(tmp_path / "state.db")


def test_calls_queued_during_a_write_share_the_next_one(store: GatedStore) -> None:
    issued = StoreIssuedCards(lambda: store)
    issued.record("Patient/p0", [card("u-0")], "oligocds-patient-view")
    assert store.entered.wait(10)  # the first write has started and waits at the gate
    for n in range(1, 6):
        issued.record(f"Patient/p{n}", [card(f"u-{n}a"), card(f"u-{n}b")], "oligocds-patient-view")
    store.gate.set()
    issued.close()
    assert store.writes == [1, 10]  # five calls, one write
    for n in range(1, 6):
        for suffix in ("a", "b"):
            row = store.issued_card(f"u-{n}{suffix}")
            assert row is not None and row.patient == f"Patient/p{n}" and row.rule == "MDT-01"


def test_recent_cards_are_found_before_they_are_written(store: GatedStore) -> None:
    issued = StoreIssuedCards(lambda: store)
    issued.record("Patient/p1", [card("u-1", "SABR-01", "sabr-candidate")], "oligocds-patient-view")
    assert store.entered.wait(10)
    assert store.issued_card("u-1") is None  # not yet in the store
    assert issued.find("u-1") == IssuedCard("Patient/p1", "SABR-01", "sabr-candidate", "1")
    store.gate.set()
    issued.close()
    assert store.issued_card("u-1") is not None


def test_a_full_backlog_drops_new_rows_with_a_warning(store: GatedStore, caplog: pytest.LogCaptureFixture) -> None:
    issued = StoreIssuedCards(lambda: store, max_pending=3)
    issued.record("Patient/p0", [card("u-0")])
    assert store.entered.wait(10)
    issued.record("Patient/p1", [card("u-1a"), card("u-1b")])
    issued.record("Patient/p2", [card("u-2a"), card("u-2b")])  # 2 queued + 2 > 3: dropped
    issued.record("Patient/p3", [card("u-3")])
    store.gate.set()
    issued.close()
    assert "write backlog full" in caplog.text
    assert store.writes == [1, 3]
    assert store.issued_card("u-2a") is None and store.issued_card("u-3") is not None


def test_a_failed_write_is_logged_and_later_cards_are_still_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class FailingOnce(SqliteStore):
        failed = False

        def remember_cards(self, cards: Sequence[IssuedCardRecord]) -> None:
            if not self.failed:
                self.failed = True
                raise OSError("disk full")
            super().remember_cards(cards)

    store = FailingOnce(str(tmp_path / "state.db"))
    issued = StoreIssuedCards(lambda: store)
    issued.record("Patient/p1", [card("u-1")])
    issued.close()
    issued = StoreIssuedCards(lambda: store)
    issued.record("Patient/p2", [card("u-2")])
    issued.close()
    assert "issued cards not stored (1 cards): OSError" in caplog.text
    assert "Patient/p1" not in caplog.text  # no patient in the log
    assert store.issued_card("u-1") is None and store.issued_card("u-2") is not None
