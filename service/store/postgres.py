"""The PostgreSQL store (state shared by replicas): psycopg 3, a pool of 1–4 connections, one per transaction.

Writers of one patient serialise on a transaction-scoped advisory lock (`lock_patient`); migrations serialise
on another, so replicas that start together migrate once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from service.store import sqltx
from service.store.base import FeedbackCount, FeedbackRecord, IssuedCardRecord, StoredResult, StoreError, StoreTx
from service.store.schema import POSTGRESQL, migrate
from service.store.sqltx import PurgeClock, Queries, Rows, SqlTx, cursor_rows, read_offset, read_result

CONNECT_TIMEOUT_S = 5  # libpq connect_timeout, unless the DSN sets one
POOL_TIMEOUT_S = 10.0  # wait for a pooled connection
PING_TIMEOUT_S = 3.0
MIGRATION_LOCK = 0x6F6C69676F  # advisory lock key held while migrating ("oligo")
_ERRORS: tuple[type[Exception], ...] = (psycopg.Error,)
_QUERIES = Queries.of(POSTGRESQL, lock_patient="SELECT pg_advisory_xact_lock(hashtextextended(?::text, 0))")


def conninfo(dsn: str) -> str:
    """The DSN with a connect_timeout (so an unreachable server fails fast); ValueError when unparseable."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"invalid PostgreSQL store URL: {exc}") from None
    if "connect_timeout" in params:
        return dsn
    return make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT_S)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL store: {exc}") from exc


def _migrate(info: str) -> None:
    with _translated(), psycopg.connect(info, autocommit=True) as conn, conn.transaction():
        rows = cursor_rows(conn.cursor(), _ERRORS)
        rows(POSTGRESQL.sql("SELECT pg_advisory_xact_lock(?)"), (MIGRATION_LOCK,))
        migrate(rows, POSTGRESQL)


class PostgresStore:
    kind = "postgresql"

    def __init__(self, dsn: str) -> None:
        info = conninfo(dsn)
        _migrate(info)
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            info,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_S,
            name="oligocds-store",
        )
        self._pool.open(wait=False)
        self._jti_purge = PurgeClock()
        self._cards_purge = PurgeClock(sqltx.CARDS_PURGE_INTERVAL_S)

    @contextmanager
    def transaction(self) -> Iterator[StoreTx]:
        with _translated(), self._pool.connection() as conn, conn.transaction():
            yield SqlTx(cursor_rows(conn.cursor(), _ERRORS), _QUERIES)

    @contextmanager
    def _reader(self, timeout: float = POOL_TIMEOUT_S) -> Iterator[Rows]:
        with _translated(), self._pool.connection(timeout) as conn:
            yield cursor_rows(conn.cursor(), _ERRORS)

    def result(self, patient: str) -> StoredResult | None:
        with self._reader() as rows:
            return read_result(rows, _QUERIES, patient)

    def offset(self, topic: str, partition: int) -> int | None:
        with self._reader() as rows:
            return read_offset(rows, _QUERIES, topic, partition)

    def remember_jti(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        # autocommit: the purge and the insert are one statement each (the insert alone decides, atomically)
        with self._reader() as rows:
            if self._jti_purge.due(now):
                sqltx.purge_jti(rows, _QUERIES, now)
            return sqltx.remember_jti(rows, _QUERIES, issuer, jti, expires_at, now)

    def add_feedback(self, items: Sequence[FeedbackRecord]) -> int:
        with _translated(), self._pool.connection() as conn, conn.transaction():
            return sqltx.add_feedback(cursor_rows(conn.cursor(), _ERRORS), _QUERIES, items)

    def feedback_counts(self, service: str) -> list[FeedbackCount]:
        with self._reader() as rows:
            return sqltx.feedback_counts(rows, _QUERIES, service)

    def remember_cards(self, cards: Sequence[IssuedCardRecord]) -> None:
        with _translated(), self._pool.connection() as conn, conn.transaction():
            rows = cursor_rows(conn.cursor(), _ERRORS)
            if self._cards_purge.due(time.time()):
                sqltx.purge_cards(rows, _QUERIES, time.time())
            sqltx.remember_cards(rows, _QUERIES, cards)

    def issued_card(self, uuid: str) -> IssuedCardRecord | None:
        with self._reader() as rows:
            return sqltx.issued_card(rows, _QUERIES, uuid)

    def ping(self) -> None:
        with self._reader(PING_TIMEOUT_S) as rows:
            rows("SELECT 1", ())

    def close(self) -> None:
        self._pool.close()
