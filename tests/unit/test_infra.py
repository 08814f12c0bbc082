"""The test infrastructure itself (tests/infra.py): a real PostgreSQL and a real Kafka broker with transactions."""

from __future__ import annotations

import asyncio
import time

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.infra import KafkaBroker, create_topics, unique_topics


# --- PostgreSQL ----------------------------------------------------------------------------------------------------
def test_postgres_answers(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_fresh_pg_dsn_is_an_empty_database_of_its_own(postgres_dsn: str, fresh_pg_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as main, psycopg.connect(fresh_pg_dsn) as fresh:
        main_db = main.execute("select current_database()").fetchone()
        fresh_db = fresh.execute("select current_database()").fetchone()
        assert fresh_db is not None and main_db is not None
        assert fresh_db[0].startswith("t_") and fresh_db[0] != main_db[0]
        tables = fresh.execute(
            "select count(*) from information_schema.tables"
            " where table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchone()
        assert tables == (0,)
        fresh.execute("create table t (id int primary key)")
        fresh.execute("insert into t values (1)")
        assert fresh.execute("select id from t").fetchall() == [(1,)]


# --- Kafka ---------------------------------------------------------------------------------------------------------
async def _produce(bootstrap: str, topic: str, value: bytes, *, commit: bool) -> None:
    """One record in one transaction, committed or aborted."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx")
    await producer.start()
    try:
        if commit:
            async with producer.transaction():
                await producer.send_and_wait(topic, value, partition=0)
        else:
            await producer.begin_transaction()
            await producer.send_and_wait(topic, value, partition=0)
            await producer.abort_transaction()
    finally:
        await producer.stop()


async def _read_until(
    bootstrap: str, topic: str, last: bytes, isolation_level: str, timeout: float = 30.0
) -> list[bytes]:
    """The values of partition 0 from the beginning up to and including ``last``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    await consumer.start()
    values: list[bytes] = []
    try:
        await consumer.seek_to_beginning(partition)
        deadline = time.monotonic() + timeout
        while last not in values:
            assert time.monotonic() < deadline, f"{last!r} not read within {timeout}s; got {values}"
            batches = await consumer.getmany(partition, timeout_ms=500)
            values += [record.value for record in batches.get(partition, []) if record.value is not None]
    finally:
        await consumer.stop()
    return values


async def test_transactions_commit_visible_abort_invisible(kafka_broker: KafkaBroker) -> None:
    [topic] = unique_topics("infra-tx")
    await create_topics(kafka_broker.bootstrap, [topic], partitions=2)

    await _produce(kafka_broker.bootstrap, topic, b"committed-1", commit=True)
    await _produce(kafka_broker.bootstrap, topic, b"aborted", commit=False)
    await _produce(kafka_broker.bootstrap, topic, b"committed-2", commit=True)

    committed = await _read_until(kafka_broker.bootstrap, topic, b"committed-2", "read_committed")
    assert committed == [b"committed-1", b"committed-2"]
    # the aborted record was written: it is isolation that hides it
    everything = await _read_until(kafka_broker.bootstrap, topic, b"committed-2", "read_uncommitted")
    assert everything == [b"committed-1", b"aborted", b"committed-2"]


async def test_broker_restart_keeps_committed_records(kafka_broker: KafkaBroker) -> None:
    [topic] = unique_topics("infra-restart")
    await create_topics(kafka_broker.bootstrap, [topic])
    await _produce(kafka_broker.bootstrap, topic, b"before-restart", commit=True)

    await asyncio.to_thread(kafka_broker.restart)  # raises for an external broker: this test needs a managed one

    assert await _read_until(kafka_broker.bootstrap, topic, b"before-restart", "read_committed") == [b"before-restart"]
    await _produce(kafka_broker.bootstrap, topic, b"after-restart", commit=True)
    assert await _read_until(kafka_broker.bootstrap, topic, b"after-restart", "read_committed") == [
        b"before-restart",
        b"after-restart",
    ]


def test_unique_topics() -> None:
    a, b = unique_topics("x y", "in", "out")
    assert a.endswith("-in") and b.endswith("-out") and a.startswith("x-y-")
    assert unique_topics("x") != unique_topics("x")
