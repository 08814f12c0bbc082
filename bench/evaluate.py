"""Benchmark (not a test): how close the full evaluation comes to its ceilings, and what HTTP adds.

Measured in one run, on the same kind of 25-resource Bundle (bench/bundles.py), as patients/s on one core:
  1. orjson parse of the Bundle bytes (the parse ceiling);
  2. fhir.resources R4B validation of each resource (the validation ceiling);
  3. durable-rules asserting the facts the rule stages receive, with no FHIR work (the engine ceiling);
  4. the full in-process evaluation, `Evaluator.evaluate_bytes`;
  5. POST /evaluate through a server in its own process, at concurrency 1 and 8.
Every request and iteration uses a Bundle index never used before in the run, so no cache flatters a figure.

    .venv/bin/python bench/evaluate.py [--quick]      # also writes .bench/evaluate.json
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import BaseModel

from service.bootstrap import Container, bootstrap
from service.config import Settings
from service.rules.engine import RulesEngine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/evaluate.py` puts bench/, not the project, on the path

from bench.bundles import AS_OF, BUNDLE_SIZE, bundles  # noqa: E402
from tests.server import free_port, wait_until_ok  # noqa: E402

OUTPUT = ROOT / ".bench" / "evaluate.json"
SERVER_LOG = ROOT / ".bench" / "server.log"
TARGET_RATIO = 0.70
TARGET_P50_C1_MS = 15.0
TARGET_P95_C8_MS = 100.0
HEADERS = {"content-type": "application/fhir+json"}

EngineCalls = list[tuple[str, list[dict[str, Any]]]]  # one patient's (ruleset stage, facts) pairs


@dataclass(frozen=True, slots=True)
class Counts:
    bundles: int  # timed iterations of each in-process measurement
    warmup: int
    http: dict[int, int]  # concurrency → timed requests
    profile: int


FULL = Counts(bundles=400, warmup=40, http={1: 300, 8: 800}, profile=200)
QUICK = Counts(bundles=60, warmup=10, http={1: 60, 8: 160}, profile=40)


class Fresh:
    """Hands out Bundles whose indices were never handed out before in this run."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, count: int) -> list[bytes]:
        start, self._next = self._next, self._next + count
        return bundles(start, count)


@dataclass(frozen=True, slots=True)
class Rate:
    name: str
    count: int
    wall_s: float
    cpu_s: float  # process CPU time, all threads: well below wall_s means the core was shared

    @property
    def per_s(self) -> float:
        return self.count / self.wall_s

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "patients_per_s": round(self.per_s, 1)}


@dataclass(frozen=True, slots=True)
class HttpRun:
    concurrency: int
    requests: int
    wall_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float | None

    @property
    def per_s(self) -> float:
        return self.requests / self.wall_s

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_s": round(self.per_s, 1)}


# --- timing -------------------------------------------------------------------------------------------------
def timed(name: str, items: Sequence[Any], fn: Callable[[Any], object]) -> Rate:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for item in items:
        fn(item)
    return Rate(name, len(items), time.perf_counter() - wall, time.process_time() - cpu)


def warm(items: Sequence[Any], fn: Callable[[Any], object]) -> None:
    for item in items:
        fn(item)


def pin_to(cpu: int, pid: int = 0) -> None:
    """Run on one core (Linux); threads started afterwards inherit it."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


# --- 1. parse -----------------------------------------------------------------------------------------------
def measure_parse(fresh: Fresh, counts: Counts) -> Rate:
    warm(fresh.take(counts.warmup), orjson.loads)
    return timed("1 parse (orjson)", fresh.take(counts.bundles), orjson.loads)


# --- 2. validation ------------------------------------------------------------------------------------------
@cache
def r4b_model(resource_type: str) -> type[BaseModel]:
    model: type[BaseModel] = getattr(
        importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}"), resource_type
    )
    return model


def entry_resources(body: bytes) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in orjson.loads(body)["entry"]]


def validate_all(resources: list[dict[str, Any]]) -> None:
    for resource in resources:
        r4b_model(resource["resourceType"]).model_validate(resource)


def measure_validation(fresh: Fresh, counts: Counts) -> Rate:
    warm([entry_resources(b) for b in fresh.take(counts.warmup)], validate_all)
    parsed = [entry_resources(b) for b in fresh.take(counts.bundles)]
    return timed("2 validate (fhir.resources R4B)", parsed, validate_all)


# --- 3. rules engine ----------------------------------------------------------------------------------------
def record_engine_calls(container: Container, bodies: list[bytes]) -> list[EngineCalls]:
    """Evaluate each Bundle once, recording what every `RulesEngine.run` call received."""
    engine = container.engine
    original = engine.run
    recorded: list[EngineCalls] = []

    def recording(name: str, facts: list[dict[str, Any]]) -> list[tuple[str, int]]:
        recorded[-1].append((name, facts))
        return original(name, facts)

    engine.run = recording  # type: ignore[method-assign]
    try:
        for body in bodies:
            recorded.append([])
            container.evaluator.evaluate_bytes(body, AS_OF)
    finally:
        del engine.run  # back to the class's method
    return recorded


def replay(engine: RulesEngine, calls: EngineCalls) -> None:
    for name, facts in calls:
        engine.run(name, facts)


def measure_engine(container: Container, fresh: Fresh, counts: Counts) -> Rate:
    engine = container.engine

    def one_patient(calls: EngineCalls) -> None:  # one hop to the owner thread per patient, as in evaluation
        engine.call(replay, engine, calls)

    warm(record_engine_calls(container, fresh.take(counts.warmup)), one_patient)
    calls = record_engine_calls(container, fresh.take(counts.bundles))
    return timed("3 rules engine (durable-rules)", calls, one_patient)


# --- 4. full in-process evaluation --------------------------------------------------------------------------
def measure_full(container: Container, fresh: Fresh, counts: Counts) -> Rate:
    def evaluate(body: bytes) -> None:
        container.evaluator.evaluate_bytes(body, AS_OF)

    warm(fresh.take(counts.warmup), evaluate)
    return timed("4 full evaluation (in process)", fresh.take(counts.bundles), evaluate)


def profile_full(container: Container, bodies: list[bytes], top: int = 10) -> list[dict[str, Any]]:
    """cProfile of evaluations, caller thread and engine owner thread merged; the top `top` cumulative
    entries in service/ (cumulative ms per patient, with cProfile's own overhead)."""
    main, owner = cProfile.Profile(), cProfile.Profile()
    container.engine.call(owner.enable)
    main.enable()
    try:
        for body in bodies:
            container.evaluator.evaluate_bytes(body, AS_OF)
    finally:
        main.disable()
        container.engine.call(owner.disable)
    return top_entries(pstats.Stats(main, owner), len(bodies), top)


def top_entries(stats: pstats.Stats, patients: int, top: int) -> list[dict[str, Any]]:
    service = str(ROOT / "service") + os.sep
    rows = [
        (ct, tt, nc, f"{Path(file).relative_to(ROOT)}:{line}({fn})")
        for (file, line, fn), (_, nc, tt, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
        if file.startswith(service)
    ]
    rows.sort(reverse=True)
    return [
        {
            "function": where,
            "calls_per_patient": nc / patients,
            "cum_ms": 1e3 * ct / patients,
            "own_ms": 1e3 * tt / patients,
        }
        for ct, tt, nc, where in rows[:top]
    ]


# --- 5. HTTP ------------------------------------------------------------------------------------------------
def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path = SERVER_LOG, timeout_s: float = 30) -> None:
    """Poll /readyz until the server answers 200; fail (naming its log) if it exits or never gets ready."""

    def exited() -> str | None:
        return None if proc.poll() is None else f"the server exited with {proc.returncode}; see {log}"

    wait_until_ok(f"{url}/readyz", exited, timeout_s)


@contextmanager
def server_process(cpu: int, port: int, settings: Mapping[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """`python -m service serve` on `port` in its own process (no GIL shared with the load generator), pinned to
    `cpu`, configured by `settings` alone (OLIGOCDS_* variables of this environment are not passed on)."""
    url = f"http://127.0.0.1:{port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OLIGOCDS_")}
    env = {**clean, "OLIGOCDS_HOST": "127.0.0.1", "OLIGOCDS_PORT": str(port), **settings}
    with tempfile.TemporaryDirectory() as cwd, open(log, "wb") as out:
        cmd = [sys.executable, "-m", "service", "serve"]
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            pin_to(cpu, proc.pid)
            wait_ready(url, proc, log)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def post_all(client: httpx.AsyncClient, bodies: list[bytes], concurrency: int) -> list[float]:
    """POST every body, `concurrency` at a time; the latency of each in seconds."""
    pending = iter(bodies)
    latencies: list[float] = []

    async def worker() -> None:
        for body in pending:
            start = time.perf_counter()
            response = await client.post(f"/evaluate?asOf={AS_OF.isoformat()}", content=body, headers=HEADERS)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"POST /evaluate: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def http_run(url: str, pid: int, concurrency: int, warmup: list[bytes], bodies: list[bytes]) -> HttpRun:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await post_all(client, warmup, concurrency)
        cpu_before, start = process_cpu_s(pid), time.perf_counter()
        latencies = await post_all(client, bodies, concurrency)
        wall, cpu_after = time.perf_counter() - start, process_cpu_s(pid)
    q = statistics.quantiles([1e3 * s for s in latencies], n=100, method="inclusive")
    server_cpu = None
    if cpu_before is not None and cpu_after is not None:
        server_cpu = 1e3 * (cpu_after - cpu_before) / len(bodies)
    return HttpRun(concurrency, len(bodies), wall, q[49], q[94], q[98], server_cpu)


def measure_http(fresh: Fresh, counts: Counts, cpu: int) -> list[HttpRun]:
    runs = []
    with server_process(cpu, free_port(), {"OLIGOCDS_ENV": "development"}, SERVER_LOG) as (url, pid):
        for concurrency, requests in counts.http.items():
            warmup = fresh.take(max(counts.warmup, 2 * concurrency))
            runs.append(asyncio.run(http_run(url, pid, concurrency, warmup, fresh.take(requests))))
    return runs


# --- report -------------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_rates(rates: list[Rate], cpu: int) -> None:
    print(f"\nOligoCDS evaluation benchmark: {BUNDLE_SIZE}-resource Bundles, asOf {AS_OF}, on cpu {cpu}")
    print(f"{'measurement':<34}{'n':>6}{'patients/s':>13}{'ms/patient':>12}{'cpu/wall':>10}")
    for r in rates:
        print(f"{r.name:<34}{r.count:>6}{r.per_s:>13.1f}{1e3 / r.per_s:>12.3f}{r.cpu_s / r.wall_s:>10.2f}")


def summarise(rates: list[Rate]) -> dict[str, Any]:
    ceilings, full = rates[:3], rates[3]
    bound = min(ceilings, key=lambda r: r.per_s)
    serial = 1 / sum(1 / r.per_s for r in ceilings)
    return {
        "bound": bound.name,
        "bound_per_s": bound.per_s,
        "ratio": full.per_s / bound.per_s,
        "serial_bound_per_s": serial,
        "serial_ratio": full.per_s / serial,
    }


def print_summary(s: dict[str, Any]) -> None:
    ok = s["ratio"] >= TARGET_RATIO
    print(f"bound = slowest of 1–3: {s['bound']} at {s['bound_per_s']:.1f}/s")
    print(f"(4) / bound = {s['ratio']:.2f}   target ≥ {TARGET_RATIO:.2f}   {verdict(ok)}")
    serial = f"{s['serial_bound_per_s']:.1f}/s; (4) / that = {s['serial_ratio']:.2f}"
    print(f"(for reference: 1+2+3 run in series = {serial})")


def print_http(runs: list[HttpRun], cpu: int) -> None:
    print(f"\nPOST /evaluate?asOf={AS_OF} — server process pinned to cpu {cpu}, httpx.AsyncClient load")
    head = f"{'c':>3}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(f"{head}{'server cpu ms/req':>19}")
    for r in runs:
        cpu_ms = f"{r.server_cpu_ms_per_request:.2f}" if r.server_cpu_ms_per_request is not None else "n/a"
        quantiles = f"{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}"
        print(f"{r.concurrency:>3}{r.requests:>10}{r.per_s:>9.1f}{quantiles}{cpu_ms:>19}")
    by_c = {r.concurrency: r for r in runs}
    if 1 in by_c:
        print(target_line("p50", 1, by_c[1].p50_ms, TARGET_P50_C1_MS))
    if 8 in by_c:
        print(target_line("p95", 8, by_c[8].p95_ms, TARGET_P95_C8_MS))


def target_line(quantile: str, concurrency: int, measured_ms: float, target_ms: float) -> str:
    ok = verdict(measured_ms <= target_ms)
    return f"target {quantile} ≤ {target_ms:g} ms at c={concurrency}: {measured_ms:.2f} ms   {ok}"


def print_profile(entries: list[dict[str, Any]], patients: int) -> None:
    print(f"\ncProfile of (4), {patients} patients, both threads, top {len(entries)} cumulative in service/:")
    print(f"{'cum ms/pt':>10}{'own ms/pt':>10}{'calls/pt':>10}  function")
    for e in entries:
        print(f"{e['cum_ms']:>10.3f}{e['own_ms']:>10.3f}{e['calls_per_patient']:>10.1f}  {e['function']}")


def write_json(report: dict[str, Any]) -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {OUTPUT.relative_to(ROOT)}")


# --- main ---------------------------------------------------------------------------------------------------
def in_process(counts: Counts, fresh: Fresh) -> tuple[list[Rate], list[dict[str, Any]]]:
    container = bootstrap(Settings(env="development"))
    try:
        rates = [
            measure_parse(fresh, counts),
            measure_validation(fresh, counts),
            measure_engine(container, fresh, counts),
            measure_full(container, fresh, counts),
        ]
        profile = profile_full(container, fresh.take(counts.profile))
    finally:
        container.close()
    return rates, profile


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    available = cpus()
    client_cpu, server_cpu = available[0], available[-1]
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    pin_to(client_cpu)
    fresh = Fresh()

    rates, profile = in_process(counts, fresh)
    summary = summarise(rates)
    print_rates(rates, client_cpu)
    print_summary(summary)
    runs = [] if args.no_http else measure_http(fresh, counts, server_cpu)
    if runs:
        print_http(runs, server_cpu)
    print_profile(profile, counts.profile)
    write_json(
        {
            "date": date.today().isoformat(),
            "quick": args.quick,
            "bundle_size": BUNDLE_SIZE,
            "cpus": {"in_process_and_client": client_cpu, "server": server_cpu},
            "rates": [r.as_json() for r in rates],
            "summary": summary,
            "http": [r.as_json() for r in runs],
            "targets": {"ratio": TARGET_RATIO, "p50_c1_ms": TARGET_P50_C1_MS, "p95_c8_ms": TARGET_P95_C8_MS},
            "profile": profile,
        }
    )


if __name__ == "__main__":
    main()
