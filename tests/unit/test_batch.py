"""The Kafka batch against a real SQLite store, without Kafka: an evaluation error dead-letters only the message
that caused it (docs/streaming.md), and the rest of the batch is merged and published."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson

from service.bootstrap import Container
from service.ingest import Ingestor
from service.store import open_store
from service.store.base import StoreTx
from service.stream.batch import BatchProcessor, Message

DAY = date(2026, 11, 26)


class FailsFor(Ingestor):
    """A real ingestor whose evaluation raises for one patient (standing in for an engine error)."""

    def evaluate(self, tx: StoreTx, patient: str, day: date) -> dict[str, Any] | None:
        if patient == "Patient/bad":
            raise RuntimeError("engine error")
        return super().evaluate(tx, patient, day)


def bundle(patient: str) -> bytes:
    resource = {"resourceType": "Patient", "id": patient, "gender": "female", "birthDate": "1960-01-01"}
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]})


def test_an_evaluation_error_dead_letters_only_its_message(container: Container, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    processor = BatchProcessor(store, FailsFor(container.evaluator), "in", lambda: DAY)
    messages = [Message(10, b"a", bundle("a")), Message(11, b"bad", bundle("bad")), Message(12, b"c", bundle("c"))]
    try:
        pending = processor.prepare(0, messages)
        pending.commit()
        assert [(d.message.offset, d.code) for d in pending.dead] == [(11, "exception")]
        assert "RuntimeError" in pending.dead[0].detail
        assert sorted(c.patient for c in pending.changes) == ["Patient/a", "Patient/c"]
        assert pending.next_offset == 13 and store.offset("in", 0) == 13
        assert store.result("Patient/bad") is None
        with store.transaction() as tx:
            assert tx.resources("Patient/bad") == [], "the failing message's merge was undone"
            assert len(tx.resources("Patient/a")) == 1
    finally:
        store.close()
