"""Test data and Kafka helpers for the streaming tests: many patients made from the golden scenarios, split into
small versioned bundles in random order, plus a worker process and read_committed readers."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import phi_markers
from tests.server import free_port, wait_until_ok

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
VERSIONED_TYPES = ("Condition", "Observation")


def scenario_bundles() -> list[dict[str, Any]]:
    """The golden scenarios' Bundles, except those that send one resource id twice with different content (DQ-06):
    the store keeps one version per id, so their stored state cannot equal the Bundle evaluated as a whole."""
    bundles = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*/bundle.json"))]
    return [b for b in bundles if not _differing_duplicates(b)]


def _differing_duplicates(bundle: dict[str, Any]) -> bool:
    seen: dict[tuple[str, str], str] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        key, body = (resource["resourceType"], str(resource.get("id"))), json.dumps(resource, sort_keys=True)
        if seen.setdefault(key, body) != body:
            return True
    return False


def _patient_id(bundle: dict[str, Any]) -> str:
    return next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


@dataclass
class Patient:
    id: str
    final: list[dict[str, Any]]  # the resources the store must end with (highest versions)
    messages: list[dict[str, Any]] = field(default_factory=list)  # bundles to send, in send order

    def batch_bundle(self) -> dict[str, Any]:
        """All final resources in one Bundle, in the store's order (type, then Type/id): the evaluation lists
        lesions in the order resources come, and the store hands them over in that order."""
        ordered = sorted(self.final, key=lambda r: (r["resourceType"], f"{r['resourceType']}/{r['id']}"))
        return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in ordered]}


def make_patients(n: int, rng: random.Random) -> list[Patient]:
    """`n` patients cloned from the golden scenarios, ids made unique (`<scenario patient>-s<i>`)."""
    scenarios = scenario_bundles()
    patients = []
    for i in range(n):
        source = scenarios[i % len(scenarios)]
        old = _patient_id(source)
        new = f"s{i:03d}-{old}"[:60]
        text = json.dumps([e["resource"] for e in source["entry"]]).replace(old, new)
        patients.append(Patient(new, _versioned(json.loads(text), rng)))
    return patients


def _versioned(resources: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Give every Condition and Observation meta.versionId 2 (and an entered-in-error version 1 to send too)."""
    final = []
    for r in resources:
        r = copy.deepcopy(r)
        if r["resourceType"] in VERSIONED_TYPES:
            r["meta"] = {**r.get("meta", {}), "versionId": "2", "lastUpdated": "2026-01-02T10:00:00Z"}
        final.append(r)
    return final


def older_copy(resource: dict[str, Any]) -> dict[str, Any]:
    """Version 1 of a resource, entered-in-error: applied after version 2 it would wrongly remove it."""
    old = copy.deepcopy(resource)
    old["meta"] = {**old.get("meta", {}), "versionId": "1", "lastUpdated": "2026-01-01T10:00:00Z"}
    if old["resourceType"] == "Condition":
        old["verificationStatus"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}
            ]
        }
    else:
        old["status"] = "entered-in-error"
    return old


def plan_messages(patient: Patient, per_patient: int, rng: random.Random) -> None:
    """Split the patient's resources (and older copies of some) into `per_patient` bundles."""
    items = list(patient.final)
    versioned = [r for r in patient.final if r["resourceType"] in VERSIONED_TYPES]
    items += [older_copy(r) for r in rng.sample(versioned, k=min(len(versioned), 3))]
    rng.shuffle(items)
    groups: list[list[dict[str, Any]]] = [[] for _ in range(per_patient)]
    for i, item in enumerate(items):
        groups[i % per_patient].append(item)
    for group in groups:
        if not group:  # more messages than resources: re-send something (a duplicate changes nothing)
            group.append(rng.choice(patient.final))
        entries = [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in group]
        patient.messages.append({"resourceType": "Bundle", "type": "collection", "entry": entries})


def interleave(patients: Sequence[Patient], rng: random.Random) -> list[tuple[str, bytes]]:
    """All messages as (key, value), shuffled across patients; each patient's own order is kept."""
    queues = {p.id: list(p.messages) for p in patients}
    order = [p.id for p in patients for _ in p.messages]
    rng.shuffle(order)
    return [(pid, orjson.dumps(queues[pid].pop(0))) for pid in order]


def stable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("evaluatedAt",)}


# --- Kafka ------------------------------------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, messages: Sequence[tuple[str | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key.encode() if key else None) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


async def read_all(bootstrap: str, topic: str) -> list[Record]:
    """Every committed record of `topic` (read_committed), up to the end offsets at call time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(bootstrap, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Record] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, recs in batch.items():
                records += [Record(tp.partition, r.offset, r.key, r.value, dict(r.headers or ())) for r in recs]
        return records
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return [TopicPartition(topic, p["partition"]) for p in sorted(described["partitions"], key=str)]
    finally:
        await admin.close()


async def group_done(bootstrap: str, group: str, topic: str) -> bool:
    """True when the group's committed offsets reached the topic's end offsets on every partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = await _partitions(bootstrap, topic)
        ends = await consumer.end_offsets(partitions)
        return all(ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp]) for tp in partitions)
    finally:
        await consumer.stop()
        await admin.close()


async def wait_group_done(bootstrap: str, group: str, topic: str, timeout: float = 120.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await group_done(bootstrap, group, topic):
            return time.monotonic() - start
        await asyncio.sleep(0.5)
    raise AssertionError(f"consumer group {group} did not reach the end of {topic} in {timeout} s")


# --- the worker as a process --------------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        cmd = [sys.executable, "-m", "service", "worker"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        def exited() -> str | None:
            assert self.proc is not None
            return None if self.proc.poll() is None else f"the worker exited: {self.log.read_text()[-3000:]}"

        wait_until_ok(f"http://127.0.0.1:{self.port}/readyz", exited, timeout, every_s=0.2)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, and check that the worker shut down cleanly (uvicorn re-raises the signal after a graceful
        shutdown, so the exit status is -15 or 0)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        log = self.log.read_text()
        assert code in (0, -signal.SIGTERM), f"worker exit status {code}: {log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]
        for line in log.splitlines():
            assert json.loads(line)["level"], f"not a JSON log line: {line}"
        leaks = sorted(m for m in phi_markers() if m in log)
        assert not leaks, f"patient data in the worker's log: {leaks}"


def worker_env(bootstrap: str, topics: dict[str, str], group: str, store_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLIGOCDS_")}
    env.update(
        OLIGOCDS_ENV="development",
        OLIGOCDS_KAFKA_BOOTSTRAP=bootstrap,
        OLIGOCDS_KAFKA_INPUT_TOPIC=topics["input"],
        OLIGOCDS_KAFKA_OUTPUT_TOPIC=topics["output"],
        OLIGOCDS_KAFKA_DLQ_TOPIC=topics["dlq"],
        OLIGOCDS_KAFKA_GROUP_ID=group,
        OLIGOCDS_STORE_URL=store_url,
        OLIGOCDS_RULES_RELOAD_SECONDS="0",
        OLIGOCDS_LOG_LEVEL="INFO",  # everything it logs is scanned for the test patients' names and birth dates
    )
    return env


def start_worker(env: dict[str, str], log: Path) -> WorkerProcess:
    port = free_port()
    return WorkerProcess({**env, "OLIGOCDS_PORT": str(port)}, port, log).start()


def last_per_key(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        assert r.key is not None
        latest[r.key.decode()] = orjson.loads(r.value)
    return latest


def digests_per_key(records: Sequence[Record]) -> Iterator[tuple[str, list[bytes]]]:
    seen: dict[str, list[bytes]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        result = orjson.loads(r.value)
        canonical = orjson.dumps(stable(result), option=orjson.OPT_SORT_KEYS)
        seen.setdefault(r.key.decode() if r.key else "", []).append(canonical)
    yield from seen.items()
