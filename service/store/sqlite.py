"""The SQLite store (the default): one connection shared by all threads behind a lock, WAL journal.

A write transaction holds the lock from `BEGIN IMMEDIATE` to `COMMIT`, so threads of this process take turns and
other processes wait up to the busy timeout for SQLite's write lock instead of failing with "database is locked".
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

from service.store import sqltx
from service.store.base import FeedbackCount, FeedbackRecord, IssuedCardRecord, StoredResult, StoreError, StoreTx
from service.store.schema import SQLITE, migrate
from service.store.sqltx import PurgeClock, Queries, Rows, SqlTx, cursor_rows, read_offset, read_result

BUSY_TIMEOUT_MS = 30_000
_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)
_QUERIES = Queries.of(SQLITE)


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///path` URL ("sqlite:////abs/path.db", "sqlite:///rel.db", "sqlite:///:memory:")."""
    prefix = "sqlite:///"
    path = url[len(prefix) :] if url.startswith(prefix) else ""
    if not path or "?" in path:
        raise ValueError(f"a SQLite store URL looks like sqlite:///relative.db or sqlite:////absolute.db, not {url!r}")
    return path


class SqliteStore:
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store: {exc}") from exc
        self._rows = cursor_rows(self._conn.cursor(), _ERRORS)
        self._jti_purge = PurgeClock()
        self._cards_purge = PurgeClock(sqltx.CARDS_PURGE_INTERVAL_S)
        self._configure()
        with self._write() as rows:
            migrate(rows, SQLITE)

    def _configure(self) -> None:
        self._rows(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", ())
        self._rows("PRAGMA journal_mode = WAL", ())
        # WAL + NORMAL: no fsync per commit (a commit survives a crash of the process, not of the machine). What a
        # power loss can take back is the last commits: the Kafka worker replays them from the topic (the offsets
        # live in the same database), a CDS Hooks jti is accepted once more (docs/streaming.md).
        self._rows("PRAGMA synchronous = NORMAL", ())

    @contextmanager
    def _write(self) -> Iterator[Rows]:
        with self._lock:
            rows = cursor_rows(self._conn.cursor(), _ERRORS)
            rows("BEGIN IMMEDIATE", ())
            try:
                yield rows
                rows("COMMIT", ())
            except BaseException:
                with suppress(StoreError):
                    rows("ROLLBACK", ())
                raise

    @contextmanager
    def transaction(self) -> Iterator[StoreTx]:
        with self._write() as rows:
            yield SqlTx(rows, _QUERIES)

    def result(self, patient: str) -> StoredResult | None:
        with self._lock:
            return read_result(self._rows, _QUERIES, patient)

    def offset(self, topic: str, partition: int) -> int | None:
        with self._lock:
            return read_offset(self._rows, _QUERIES, topic, partition)

    def remember_jti(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        with self._write() as rows:
            if self._jti_purge.due(now):
                sqltx.purge_jti(rows, _QUERIES, now)
            return sqltx.remember_jti(rows, _QUERIES, issuer, jti, expires_at, now)

    def add_feedback(self, items: Sequence[FeedbackRecord]) -> int:
        with self._write() as rows:
            return sqltx.add_feedback(rows, _QUERIES, items)

    def feedback_counts(self, service: str) -> list[FeedbackCount]:
        with self._lock:
            return sqltx.feedback_counts(self._rows, _QUERIES, service)

    def remember_cards(self, cards: Sequence[IssuedCardRecord]) -> None:
        with self._write() as rows:
            if self._cards_purge.due(time.time()):
                sqltx.purge_cards(rows, _QUERIES, time.time())
            sqltx.remember_cards(rows, _QUERIES, cards)

    def issued_card(self, uuid: str) -> IssuedCardRecord | None:
        with self._lock:
            return sqltx.issued_card(self._rows, _QUERIES, uuid)

    def ping(self) -> None:
        with self._lock:
            self._rows("SELECT 1", ())

    def close(self) -> None:
        with self._lock:
            self._conn.close()
