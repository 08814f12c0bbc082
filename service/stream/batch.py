"""One Kafka batch of one input partition, processed against the store (no Kafka I/O here).

`prepare` runs on the worker's store thread: it opens a store transaction, merges every decodable message,
re-evaluates the patients whose state changed once per batch, and records the partition's next offset — all
uncommitted. The worker then commits the Kafka transaction (offsets, dead letters, results) and only after that
commits the store transaction (`Pending.commit`); if Kafka fails, `Pending.rollback` undoes the store. Why this
order keeps store and topic in agreement after a crash is explained in docs/streaming.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

from service.fhir.parse import BundleError
from service.ingest import Change, Decoded, Ingestor, decode
from service.store.base import OpenTransaction, Store, StoreError, StoreTx

log = logging.getLogger("oligocds.stream")


@dataclass(frozen=True, slots=True)
class Message:
    """What the batch needs of a consumer record (decoupled from aiokafka's type)."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Pending:
    """A prepared batch: the outputs to publish and the store transaction still open for them."""

    changes: list[Change]
    dead: list[DeadLetter]
    next_offset: int
    invalid_resources: int
    transaction: OpenTransaction = field(repr=False)

    def commit(self) -> None:
        self.transaction.commit()

    def rollback(self) -> None:
        self.transaction.rollback()


@dataclass(frozen=True, slots=True)
class BatchProcessor:
    store: Store
    ingestor: Ingestor
    topic: str
    today: Callable[[], date]

    def prepare(self, partition: int, messages: Sequence[Message]) -> Pending:
        """Merge and evaluate a batch inside an open store transaction (see the module docstring)."""
        try:
            return self._open(partition, messages, careful=False)
        except StoreError:
            raise
        except Exception as exc:
            # An evaluation failed. Do the batch again one message at a time to dead-letter only the culprit.
            log.warning("batch evaluation failed (%s); retrying message by message", type(exc).__name__)
            return self._open(partition, messages, careful=True)

    def replay(self, partition: int, messages: Sequence[Message]) -> None:
        """Re-apply messages whose results Kafka already committed but the store lost (a crash between the two
        commits): the store catches up and nothing is published again."""
        self.prepare(partition, messages).commit()

    def _open(self, partition: int, messages: Sequence[Message], careful: bool) -> Pending:
        transaction = OpenTransaction(self.store)
        try:
            return self._fill(transaction, partition, messages, careful)
        except BaseException as exc:
            transaction.rollback(exc)
            raise

    def _fill(
        self, transaction: OpenTransaction, partition: int, messages: Sequence[Message], careful: bool
    ) -> Pending:
        tx = transaction.tx
        touched: dict[str, None] = {}
        dead: list[DeadLetter] = []
        invalid = 0
        day = self.today()
        for message in messages:
            decoded = _decode(message, dead)
            if decoded is None:
                continue
            invalid += len(decoded.issues)
            if careful:
                patients = self._merge_checked(tx, message, decoded, day, dead)
            else:
                patients = self.ingestor.merge(tx, decoded)
            touched.update(dict.fromkeys(patients))
        changes = self.ingestor.refresh(tx, list(touched), day)
        next_offset = messages[-1].offset + 1
        tx.save_offset(self.topic, partition, next_offset)
        return Pending(changes, dead, next_offset, invalid, transaction)

    def _merge_checked(
        self, tx: StoreTx, message: Message, decoded: Decoded, day: date, dead: list[DeadLetter]
    ) -> list[str]:
        """Merge one message under a savepoint and evaluate what it touched; undo it if an evaluation fails."""
        try:
            with tx.savepoint():
                patients = self.ingestor.merge(tx, decoded)
                for patient in patients:
                    self.ingestor.evaluate(tx, patient, day)
        except StoreError:
            raise
        except Exception as exc:
            dead.append(DeadLetter(message, "exception", f"evaluation failed: {type(exc).__name__}: {exc}"[:500]))
            return []
        return patients


def _decode(message: Message, dead: list[DeadLetter]) -> Decoded | None:
    if message.value is None:
        dead.append(DeadLetter(message, "invalid", "message has no value (a tombstone is not a Bundle)"))
        return None
    try:
        return decode(message.value)
    except BundleError as exc:
        dead.append(DeadLetter(message, exc.code, exc.diagnostics))
        return None


def dlq_headers(letter: DeadLetter, topic: str, partition: int) -> list[tuple[str, bytes]]:
    """The original headers plus the five of contract.md §5 (error-code, error-detail, source-*)."""
    ours = {
        "error-code": letter.code,
        "error-detail": letter.detail[:2000],
        "source-topic": topic,
        "source-partition": str(partition),
        "source-offset": str(letter.message.offset),
    }
    kept = [(k, v) for k, v in letter.message.headers if k not in ours]
    return kept + [(k, v.encode()) for k, v in ours.items()]
