"""Benchmark (not a test): end-to-end streaming throughput of one Kafka worker, transactions on.

Measured side by side in one run, on the same 10,000 small bundles (1,000 patients cloned from the golden
scenarios, each split into 10 versioned bundles, shuffled across patients; tests/streaming.py):
  1. the store + evaluation path alone (`BatchProcessor.prepare` + commit on a fresh SQLite file, batches of
     `--max-records`): the ceiling without Kafka;
  2. end to end: the worker as its own process (`python -m service worker`, SQLite store) against a real Kafka
     broker (scripts/kafka.sh); the clock runs from the first record produced until the consumer group's committed
     offsets reach the end of the input topic (every result committed); also the time from the last record
     produced until the lag is zero.
Reported: bundles/s for both and their ratio. Target: ≥ 300 bundles/s end to end with one worker.

    .venv/bin/python bench/stream.py [--bundles 10000] [--max-records 2000]   # also writes .bench/stream.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/stream.py` puts bench/, not the project, on the path

from service.bootstrap import bootstrap  # noqa: E402
from service.config import Settings  # noqa: E402
from service.store import open_store  # noqa: E402
from service.stream.batch import BatchProcessor, Message  # noqa: E402
from tests.infra import create_topics, script_kafka  # noqa: E402
from tests.streaming import (  # noqa: E402
    interleave,
    make_patients,
    plan_messages,
    produce,
    start_worker,
    wait_group_done,
    worker_env,
)

OUTPUT = ROOT / ".bench" / "stream.json"
TARGET_BUNDLES_S = 300.0
PER_PATIENT = 10
PARTITIONS = 3


def workload(bundles: int) -> list[tuple[str, bytes]]:
    rng = random.Random(7)
    people = make_patients(bundles // PER_PATIENT, rng)
    for person in people:
        plan_messages(person, PER_PATIENT, rng)
    return interleave(people, rng)


def in_process(messages: Sequence[tuple[str, bytes]], max_records: int, workdir: Path) -> float:
    """Bundles/s through merge + evaluation + store commit, no Kafka (one partition's worth of batches)."""
    store = open_store(f"sqlite:///{workdir / 'inprocess.db'}")
    container = bootstrap(Settings(env="development", store_url="sqlite:///:memory:"), store=store)
    processor = BatchProcessor(store, container.ingestor, "bench", lambda: datetime.now(UTC).date())
    batch = [Message(i, key.encode(), value) for i, (key, value) in enumerate(messages)]
    start = time.perf_counter()
    for i in range(0, len(batch), max_records):
        processor.prepare(0, batch[i : i + max_records]).commit()
    seconds = time.perf_counter() - start
    container.close()
    store.close()
    return len(messages) / seconds


async def end_to_end(
    bootstrap_servers: str, messages: Sequence[tuple[str, bytes]], max_records: int, workdir: Path
) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-in-{run}", "output": f"bench-out-{run}", "dlq": f"bench-dlq-{run}"}
    await create_topics(bootstrap_servers, [topics["input"]], PARTITIONS)
    await create_topics(bootstrap_servers, [topics["output"], topics["dlq"]], 1)
    group = f"bench-{run}"
    env = worker_env(bootstrap_servers, topics, group, f"sqlite:///{workdir / 'worker.db'}")
    env["OLIGOCDS_KAFKA_MAX_RECORDS"] = str(max_records)
    worker = start_worker(env, workdir / "worker.log")
    try:
        start = time.perf_counter()
        await produce(bootstrap_servers, topics["input"], messages)
        produced = time.perf_counter()
        await wait_group_done(bootstrap_servers, group, topics["input"], timeout=600)
        done = time.perf_counter()
        metrics = worker.metrics()
    finally:
        worker.stop()
    published = next(
        float(x.split()[1]) for x in metrics.splitlines() if x.startswith("oligocds_kafka_published_total")
    )
    return {
        "seconds": done - start,
        "produce_seconds": produced - start,
        "lag_zero_after_produce_seconds": done - produced,
        "bundles_per_s": len(messages) / (done - start),
        "results_published": published,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bundles", type=int, default=10_000)
    parser.add_argument("--max-records", type=int, default=2000)
    args = parser.parse_args(argv)
    messages = workload(args.bundles)
    print(f"{len(messages)} bundles, {len(messages) // PER_PATIENT} patients, {PARTITIONS} input partitions")
    with tempfile.TemporaryDirectory(prefix="oligocds-bench-") as tmp:
        workdir = Path(tmp)
        ceiling = in_process(messages, args.max_records, workdir)
        print(f"1. store + evaluation, no Kafka: {ceiling:8.1f} bundles/s")
        broker, cleanup = script_kafka()
        try:
            e2e = asyncio.run(end_to_end(broker.bootstrap, messages, args.max_records, workdir))
        finally:
            cleanup()
    verdict = "met" if e2e["bundles_per_s"] >= TARGET_BUNDLES_S else "NOT met"
    print(
        f"2. end to end through Kafka:     {e2e['bundles_per_s']:8.1f} bundles/s "
        f"({e2e['seconds']:.1f} s; lag zero {e2e['lag_zero_after_produce_seconds']:.1f} s after the last record; "
        f"{e2e['results_published']:.0f} results published)"
    )
    print(
        f"   ratio (2)/(1): {e2e['bundles_per_s'] / ceiling:.2f}; target ≥ {TARGET_BUNDLES_S:.0f} bundles/s: {verdict}"
    )
    report = {"bundles": len(messages), "max_records": args.max_records, "in_process_bundles_per_s": ceiling, **e2e}
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
