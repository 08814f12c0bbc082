"""The Kafka worker: consume bundles, keep patient state, publish changed results exactly once.

Read-process-write per input partition: one transactional producer per assigned partition (aiokafka has no
KIP-447, so the transactional id names the partition and a restarted worker fences its dead predecessor), a
`read_committed` consumer without auto-commit, and per batch one Kafka transaction holding the consumed offsets
(sent first: aiokafka #1004), the dead letters and the changed results. The store transaction of the batch
commits right after the Kafka one; on partition assignment the worker replays whatever the store missed.
docs/streaming.md explains the design; any Kafka or store error tears the session down and starts it again, which
is the same path as a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from service.ingest import Change, patient_id
from service.stream.batch import BatchProcessor, Message, Pending, dlq_headers
from service.stream.metrics import StreamMetrics

log = logging.getLogger("oligocds.stream")
JSON_HEADER = [("content-type", b"application/json")]
AfterCommit = Callable[[list[Change]], Awaitable[None]]  # e.g. the CarePlan write-back


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    bootstrap: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    group_id: str = "oligocds"
    max_records: int = 2000  # per fetch; results are coalesced per patient within one batch
    client: dict[str, object] = field(default_factory=dict)  # security settings passed to every client


class Worker:
    def __init__(
        self,
        options: KafkaOptions,
        processor: BatchProcessor,
        metrics: StreamMetrics,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.options = options
        self._after_commit = after_commit
        self.processor = processor
        self.metrics = metrics
        self.connected = False
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._replay_until: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()  # held while a batch is processed; rebalances wait for it
        self._db = ThreadPoolExecutor(1, thread_name_prefix="oligocds-store")
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; reconnect with backoff after any failure."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff = 0.5
            except Exception as exc:
                self.connected = False
                self.metrics.restarts.labels(reason=type(exc).__name__).inc()
                log.warning(
                    "kafka worker session failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, backoff
                )
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 10.0)
        self._db.shutdown(wait=True)
        log.info("kafka worker stopped")

    async def _session(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.options.bootstrap,
            group_id=self.options.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            **self.options.client,
        )
        self._consumer = consumer
        try:
            consumer.subscribe([self.options.input_topic], listener=_Rebalance(self))
            await consumer.start()
            self.connected = True
            log.info("kafka worker consuming %s as group %s", self.options.input_topic, self.options.group_id)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self.options.max_records)
                for tp, records in batches.items():
                    await self._handle(consumer, tp, records)
                await self._record_lag(consumer)
        finally:
            self.connected = False
            async with self._lock:
                await self._close_producers(list(self._producers))
            await consumer.stop()  # also after a failed start: an unstopped consumer leaks its client
            self._consumer = None

    async def _handle(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        async with self._lock:
            if tp not in consumer.assignment():
                return  # revoked while we were fetching: the new owner reads these again
            self.metrics.consumed.inc(len(records))
            messages = [_message(r) for r in records]
            until = self._replay_until.get(tp)
            replay = [m for m in messages if until is not None and m.offset < until]
            live = messages[len(replay) :]
            loop = asyncio.get_running_loop()
            if replay:
                await loop.run_in_executor(self._db, self.processor.replay, tp.partition, replay)
                self.metrics.replayed.inc(len(replay))
            if live:
                self._replay_until.pop(tp, None)
                pending = await loop.run_in_executor(self._db, self.processor.prepare, tp.partition, live)
                await self._commit(tp, pending)

    async def _commit(self, tp: TopicPartition, pending: Pending) -> None:
        loop = asyncio.get_running_loop()
        try:
            producer = await self._producer(tp)
            async with producer.transaction():
                offsets = {tp: pending.next_offset}
                await producer.send_offsets_to_transaction(offsets, self.options.group_id)
                for letter in pending.dead:
                    headers = dlq_headers(letter, tp.topic, tp.partition)
                    m = letter.message
                    await producer.send(self.options.dlq_topic, value=m.value, key=m.key, headers=headers)
                for change in pending.changes:
                    key = patient_id(change.patient).encode()
                    await producer.send(self.options.output_topic, change.body, key=key, headers=JSON_HEADER)
        except BaseException:
            await loop.run_in_executor(self._db, pending.rollback)
            raise
        await loop.run_in_executor(self._db, pending.commit)
        for letter in pending.dead:  # the reason's code and where; never the content or the detail (PHI)
            log.info("dead-lettered %s-%d@%d: %s", tp.topic, tp.partition, letter.message.offset, letter.code)
        self.metrics.published.inc(len(pending.changes))
        self.metrics.dead_lettered.inc(len(pending.dead))
        self.metrics.invalid_resources.inc(pending.invalid_resources)
        if self._after_commit is not None and pending.changes:
            await self._after_commit(pending.changes)

    async def _producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self._producers.get(tp)
        if producer is None:
            txn_id = f"{self.options.group_id}-{tp.topic}-{tp.partition}"
            producer = AIOKafkaProducer(
                bootstrap_servers=self.options.bootstrap,
                transactional_id=txn_id,
                enable_idempotence=True,
                linger_ms=5,
                **self.options.client,
            )
            try:
                await producer.start()  # InitProducerId: fences a predecessor with the same id, aborts its open txn
            except BaseException:
                await producer.stop()
                raise
            self._producers[tp] = producer
        return producer

    async def _close_producers(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            producer = self._producers.pop(tp, None)
            if producer is not None:
                await producer.stop()

    async def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Find partitions whose store lags behind Kafka's committed offset and replay them first."""
        assert self._consumer is not None
        log.info("partitions assigned: %s", sorted(tp.partition for tp in partitions))
        loop = asyncio.get_running_loop()
        for tp in partitions:
            committed = await self._consumer.committed(tp)
            stored = await loop.run_in_executor(self._db, self.processor.store.offset, tp.topic, tp.partition)
            # A store that never saw this partition (new or lost database) is rebuilt from the start of the topic.
            stored = 0 if stored is None else stored
            if committed is not None and stored < committed:
                log.warning(
                    "store behind kafka on %s-%d (%d < %d): replaying", tp.topic, tp.partition, stored, committed
                )
                self._replay_until[tp] = committed
                self._consumer.seek(tp, stored)

    async def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(tp.partition for tp in partitions))
        async with self._lock:
            await self._close_producers(partitions)
            for tp in partitions:
                self._replay_until.pop(tp, None)

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is not None:
                lag = max(0, end - await consumer.position(tp))
                self.metrics.lag.labels(partition=str(tp.partition)).set(lag)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._worker.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self._worker.on_assigned(list(assigned))


def _message(record: ConsumerRecord) -> Message:
    headers = tuple((k, bytes(v)) for k, v in (record.headers or ()))
    return Message(record.offset, record.key, record.value, headers)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
