"""Kafka wiring for a process: the worker task and the producer that `POST /ingest` publishes through."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, date, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from service.config import Settings
from service.ingest import Change, Ingestor, PublishError, patient_id
from service.store.base import Store
from service.stream.batch import BatchProcessor
from service.stream.metrics import StreamMetrics
from service.stream.worker import JSON_HEADER, AfterCommit, KafkaOptions, Worker

log = logging.getLogger("oligocds.stream")


def kafka_options(settings: Settings) -> KafkaOptions:
    assert settings.kafka_bootstrap, "Kafka is off"
    return KafkaOptions(
        bootstrap=settings.kafka_bootstrap,
        input_topic=settings.kafka_input_topic,
        output_topic=settings.kafka_output_topic,
        dlq_topic=settings.kafka_dlq_topic,
        group_id=settings.kafka_group_id,
        max_records=settings.kafka_max_records,
        client=client_security(settings),
    )


def client_security(settings: Settings) -> dict[str, object]:
    """aiokafka's security keyword arguments from the OLIGOCDS_KAFKA_* settings (unset ones are left out)."""
    options: dict[str, object] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile, keyfile=settings.kafka_ssl_keyfile
        )
    return options


class StreamRuntime:
    """The worker task, and a producer for the results of `POST /ingest`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ingestor: Ingestor,
        metrics: StreamMetrics,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.options = kafka_options(settings)
        processor = BatchProcessor(store, ingestor, self.options.input_topic, _today)
        self.worker = Worker(self.options, processor, metrics, after_commit)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pinged_at = float("-inf")
        self._reachable = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self.worker.run(self._stop), name="oligocds-kafka-worker")

    async def stop(self) -> None:
        """Finish the batch in hand (its transaction commits or aborts as a whole), then leave the group."""
        self._stop.set()
        if self._task is not None:
            await self._task
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, changes: list[Change]) -> None:
        """Send results to the output topic and wait for the broker's acknowledgement (idempotent producer)."""
        if not changes:
            return
        try:
            producer = await self._ingest_producer()
            futures = [
                await producer.send(
                    self.options.output_topic, c.body, key=patient_id(c.patient).encode(), headers=JSON_HEADER
                )
                for c in changes
            ]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        except (KafkaError, TimeoutError) as exc:
            raise PublishError(type(exc).__name__) from exc

    async def ping(self, timeout: float = 2.0, cache_s: float = 5.0) -> bool:
        """The broker answers a metadata request (the answer is reused for `cache_s` seconds)."""
        now = time.monotonic()
        if now - self._pinged_at > cache_s:
            self._reachable = await self._ping(timeout)
            self._pinged_at = now
        return self._reachable

    async def _ping(self, timeout: float) -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.options.bootstrap, **self.options.client)
        try:
            await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(admin.list_topics(), timeout)
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    async def _ingest_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.options.bootstrap,
                enable_idempotence=True,
                **self.options.client,
            )
            await _started(producer)
            self._producer = producer
        return self._producer


async def _started(producer: AIOKafkaProducer) -> None:
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # an unstopped client leaks its connections
        raise


def _today() -> date:
    return datetime.now(UTC).date()
