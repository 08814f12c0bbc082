"""The Kafka worker against a real broker and real stores (issue: streaming ingestion).

The worker runs as its own process (`python -m service worker`), as in production, so it can be killed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.bootstrap import Container
from service.store import open_store
from tests.infra import create_topics
from tests.streaming import (
    Patient,
    Record,
    WorkerProcess,
    digests_per_key,
    interleave,
    last_per_key,
    make_patients,
    plan_messages,
    produce,
    read_all,
    stable,
    start_worker,
    wait_group_done,
    worker_env,
)

PARTITIONS = 3


@pytest.fixture
def topics(kafka_broker: Any) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    names = {"input": f"in-{run}", "output": f"out-{run}", "dlq": f"dlq-{run}"}
    asyncio.run(create_topics(kafka_broker.bootstrap, [names["input"]], PARTITIONS))
    asyncio.run(create_topics(kafka_broker.bootstrap, [names["output"], names["dlq"]], 1))
    return names


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    dsn: str = request.getfixturevalue("fresh_pg_dsn")
    return dsn


def _workload(patients: int, per_patient: int, seed: int) -> tuple[list[Patient], list[tuple[str, bytes]]]:
    rng = random.Random(seed)
    people = make_patients(patients, rng)
    for p in people:
        plan_messages(p, per_patient, rng)
    return people, interleave(people, rng)


def _assert_final_results_match_batch(records: list[Record], people: list[Patient], container: Container) -> None:
    latest = last_per_key(records)
    today = datetime.now(UTC).date()
    for person in people:
        [expected] = container.evaluator.evaluate_json(person.batch_bundle(), today)
        assert person.id in latest, f"no result published for {person.id}"
        assert stable(latest[person.id]) == stable(expected), person.id


def _assert_no_repeated_results(records: list[Record]) -> None:
    for key, digests in digests_per_key(records):
        repeats = [i for i in range(1, len(digests)) if digests[i] == digests[i - 1]]
        assert not repeats, f"{key}: an unchanged result was published again"


def test_thousand_bundles_for_a_hundred_patients(
    kafka_broker: Any, topics: dict[str, str], store_url: str, container: Container, tmp_path: Path
) -> None:
    people, messages = _workload(100, 10, seed=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    worker = start_worker(worker_env(kafka_broker.bootstrap, topics, group, store_url), tmp_path / "worker.log")
    try:
        asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages))
        asyncio.run(wait_group_done(kafka_broker.bootstrap, group, topics["input"]))
        metrics = worker.metrics()
    finally:
        worker.stop()
    records = asyncio.run(read_all(kafka_broker.bootstrap, topics["output"]))
    _assert_final_results_match_batch(records, people, container)
    _assert_no_repeated_results(records)
    assert all(r.headers.get("content-type") == b"application/json" for r in records)
    assert "oligocds_kafka_consumed_total 1000.0" in metrics
    assert f"oligocds_kafka_published_total {float(len(records))}" in metrics
    assert "oligocds_kafka_dead_lettered_total 0.0" in metrics
    lags = [line for line in metrics.splitlines() if line.startswith("oligocds_kafka_lag{")]
    assert len(lags) == PARTITIONS and all(line.endswith(" 0.0") for line in lags), lags
    assert asyncio.run(read_all(kafka_broker.bootstrap, topics["dlq"])) == []


POISON = [
    (b"{not json", "invalid"),
    (b'{"resourceType": "Patient", "id": "x"}', "structure"),
    (
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Condition", "id": "bad", "subject": 7}}],
            }
        ),
        "processing",
    ),
]


def test_poison_messages_go_to_the_dead_letter_topic_unchanged(
    kafka_broker: Any, topics: dict[str, str], container: Container, tmp_path: Path
) -> None:
    people, good = _workload(6, 2, seed=2)
    messages: list[tuple[str | None, bytes]] = []
    for i, (key, value) in enumerate(good):
        messages.append((key, value))
        if i < len(POISON):
            messages.append((key, POISON[i][0]))
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_broker.bootstrap, topics, group, f"sqlite:///{tmp_path / 'state.db'}")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages))
        asyncio.run(wait_group_done(kafka_broker.bootstrap, group, topics["input"]))
        assert _metric(worker, "oligocds_kafka_dead_lettered_total") == len(POISON)
    finally:
        worker.stop()
    dead = asyncio.run(read_all(kafka_broker.bootstrap, topics["dlq"]))
    assert sorted(r.value for r in dead) == sorted(p for p, _ in POISON)
    codes = {r.value: r.headers["error-code"].decode() for r in dead}
    assert codes == {p: code for p, code in POISON}
    for r in dead:
        assert r.headers["source-topic"].decode() == topics["input"]
        assert int(r.headers["source-partition"]) in range(PARTITIONS)
        assert int(r.headers["source-offset"]) >= 0
        assert r.headers["error-detail"], "the reason is given"
    records = asyncio.run(read_all(kafka_broker.bootstrap, topics["output"]))
    _assert_final_results_match_batch(records, people, container)


def test_sigkill_mid_run_then_restart_reflects_every_input_exactly_once(
    kafka_broker: Any, topics: dict[str, str], container: Container, tmp_path: Path
) -> None:
    people, good = _workload(100, 20, seed=3)
    # A poison message every 100 inputs: the dead-letter topic must end with each exactly once.
    messages: list[tuple[str | None, bytes]] = []
    for i, (key, value) in enumerate(good):
        messages.append((key, b"[1, 2, 3]" if i % 100 == 50 else value))
    poison_count = sum(1 for _, v in messages if v == b"[1, 2, 3]")
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_broker.bootstrap, topics, group, f"sqlite:///{tmp_path / 'state.db'}")
    env["OLIGOCDS_KAFKA_MAX_RECORDS"] = "50"  # many small transactions, so the kill lands mid-run
    first = start_worker(env, tmp_path / "worker.log")
    asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages))
    asyncio.run(_wait_consumed(first, at_least=400))
    first.kill()
    second = start_worker(env, tmp_path / "worker.log")
    try:
        asyncio.run(wait_group_done(kafka_broker.bootstrap, group, topics["input"]))
    finally:
        second.stop()
    dead = asyncio.run(read_all(kafka_broker.bootstrap, topics["dlq"]))
    offsets = [(r.headers["source-partition"], r.headers["source-offset"]) for r in dead]
    assert len(offsets) == len(set(offsets)) == poison_count
    records = asyncio.run(read_all(kafka_broker.bootstrap, topics["output"]))
    _assert_no_repeated_results(records)
    # Patients whose poison replaced a real message miss that message's resources; compare the rest.
    spoiled = {key for i, (key, _) in enumerate(good) if i % 100 == 50}
    _assert_final_results_match_batch(records, [p for p in people if p.id not in spoiled], container)


async def _wait_consumed(worker: WorkerProcess, at_least: int, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.1)):
        for line in worker.metrics().splitlines():
            if line.startswith("oligocds_kafka_consumed_total") and float(line.split()[1]) >= at_least:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the worker consumed too little before the kill")


def test_broker_restart_mid_run_loses_nothing(
    kafka_broker: Any, topics: dict[str, str], container: Container, tmp_path: Path
) -> None:
    people, messages = _workload(30, 10, seed=4)
    half = len(messages) // 2
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_broker.bootstrap, topics, group, f"sqlite:///{tmp_path / 'state.db'}")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages[:half]))
        kafka_broker.restart()
        asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages[half:]))
        asyncio.run(wait_group_done(kafka_broker.bootstrap, group, topics["input"], timeout=180))
    finally:
        worker.stop()
    records = asyncio.run(read_all(kafka_broker.bootstrap, topics["output"]))
    _assert_final_results_match_batch(records, people, container)
    _assert_no_repeated_results(records)


@pytest.mark.parametrize("loss", ["older-copy", "lost-database"])
def test_store_behind_kafka_is_replayed_without_publishing_again(
    kafka_broker: Any, topics: dict[str, str], container: Container, tmp_path: Path, loss: str
) -> None:
    """The state a crash between the Kafka commit and the store commit leaves (docs/streaming.md): the store
    misses batches whose results are already in the output topic. Made here by restoring an older copy of the
    SQLite file, or by losing it altogether; the restarted worker must catch the store up from the input topic
    and publish nothing twice."""
    people, messages = _workload(20, 10, seed=5)
    half = len(messages) // 2
    group = f"g-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "state.db"
    env = worker_env(kafka_broker.bootstrap, topics, group, f"sqlite:///{db}")
    worker = start_worker(env, tmp_path / "worker.log")
    asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages[:half]))
    asyncio.run(wait_group_done(kafka_broker.bootstrap, group, topics["input"]))
    worker.stop()
    snapshot = db.read_bytes()
    worker = start_worker(env, tmp_path / "worker.log")
    asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages[half:]))
    asyncio.run(wait_group_done(kafka_broker.bootstrap, group, topics["input"]))
    worker.stop()
    published = asyncio.run(read_all(kafka_broker.bootstrap, topics["output"]))
    for leftover in tmp_path.glob("state.db*"):  # the database and its WAL
        leftover.unlink()
    if loss == "older-copy":
        db.write_bytes(snapshot)
    missing = len(messages) - half if loss == "older-copy" else len(messages)

    worker = start_worker(env, tmp_path / "worker.log")
    try:
        replayed = asyncio.run(_wait_metric(worker, "oligocds_kafka_replayed_total", missing))
    finally:
        worker.stop()
    assert replayed == missing
    assert asyncio.run(read_all(kafka_broker.bootstrap, topics["output"])) == published, "nothing published again"
    store = open_store(f"sqlite:///{db}")
    try:
        latest = last_per_key(published)
        for person in people:
            stored = store.result(f"Patient/{person.id}")
            assert stored is not None and stable(orjson.loads(stored.body)) == stable(latest[person.id])
    finally:
        store.close()


async def _wait_metric(worker: WorkerProcess, name: str, expected: float, timeout: float = 60.0) -> float:
    value = 0.0
    for _ in range(int(timeout / 0.1)):
        for line in worker.metrics().splitlines():
            if line.startswith(name + " "):
                value = float(line.split()[1])
        if value >= expected:
            return value
        await asyncio.sleep(0.1)
    return value


def test_a_second_worker_joining_mid_run_shares_the_partitions_without_loss_or_repeats(
    kafka_broker: Any, topics: dict[str, str], fresh_pg_dsn: str, container: Container, tmp_path: Path
) -> None:
    """Two replicas on one PostgreSQL store: the rebalance moves partitions (and their transactional ids)."""
    people, messages = _workload(60, 10, seed=6)
    third = len(messages) // 3
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka_broker.bootstrap, topics, group, fresh_pg_dsn)
    env["OLIGOCDS_KAFKA_MAX_RECORDS"] = "20"
    first = start_worker(env, tmp_path / "first.log")
    second: WorkerProcess | None = None
    try:
        asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages[:third]))
        second = start_worker(env, tmp_path / "second.log")
        asyncio.run(_wait_assigned(second))  # the rebalance is done: the rest is shared between the two
        asyncio.run(produce(kafka_broker.bootstrap, topics["input"], messages[third:]))
        asyncio.run(wait_group_done(kafka_broker.bootstrap, group, topics["input"]))
        consumed = [_metric(w, "oligocds_kafka_consumed_total") for w in (first, second)]
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert all(n > 0 for n in consumed), f"both workers consumed: {consumed}"
    records = asyncio.run(read_all(kafka_broker.bootstrap, topics["output"]))
    _assert_final_results_match_batch(records, people, container)
    _assert_no_repeated_results(records)


async def _wait_assigned(worker: WorkerProcess, timeout: float = 60.0) -> None:
    """Until the worker reports lag for at least one input partition (it does so for the partitions it owns)."""
    for _ in range(int(timeout / 0.1)):
        if "oligocds_kafka_lag{" in worker.metrics():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the second worker got no partition")


def _metric(worker: WorkerProcess, name: str) -> float:
    return next(float(x.split()[1]) for x in worker.metrics().splitlines() if x.startswith(name + " "))
