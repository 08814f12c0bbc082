"""Benchmark (not a test): the CDS Hooks patient-view service over HTTP, with JWT verification on.

Measured against servers in their own process, pinned to one core, with an httpx.AsyncClient load on another:
  1. POST /cds-services/oligocds-patient-view with the full prefetch of a 25-resource Bundle (bench/bundles.py),
     a fresh ES384 client JWT and a fresh hookInstance per request, at concurrency 1, 8 and 32; a production
     server (OLIGOCDS_ENV=production) that verifies every token against a JWKS file;
  2. the FHIR-server fallback at its timeout budget: the Condition prefetch key absent and `fhirServer` a local
     server that answers after 2 s; a development server (http `fhirServer` is allowed there only) with
     OLIGOCDS_FHIR_TIMEOUT_MS=400 must answer 412 (Condition required) within budget + 50 ms.
Every request uses a Bundle index (patient) never used before in the run, so no cache flatters a figure. Tokens
and request bodies are built by the load generator before the timing of each request starts.

    .venv/bin/python bench/cds_hooks.py [--quick]      # also writes .bench/cds_hooks.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/cds_hooks.py` puts bench/, not the project, on the path

from bench.bundles import BUNDLE_SIZE, bundle_bytes  # noqa: E402
from bench.evaluate import HttpRun, cpus, pin_to, process_cpu_s, server_process, target_line, verdict  # noqa: E402
from tests.jwt_keys import KeyPair, bearer, claims, es384_key, mint, write_jwks  # noqa: E402
from tests.server import free_port  # noqa: E402

OUTPUT = ROOT / ".bench" / "cds_hooks.json"
LOGS = ROOT / ".bench"  # cds_hooks-production.log, cds_hooks-development.log: the two servers' output
SERVICE_PATH = "/cds-services/oligocds-patient-view"
ISSUER = "https://bench.example"
TARGET_P50_C1_MS = 20.0
TARGET_P95_C8_MS = 100.0
FHIR_TIMEOUT_MS = 400
BUDGET_SLACK_MS = 50
SLOW_FHIR_DELAY_S = 2.0
HEADERS = {"content-type": "application/json"}

SEARCHSET_KEYS = ("Condition", "Observation", "Procedure", "MedicationRequest")
NULL_KEYS = ("ServiceRequest", "MedicationAdministration", "MedicationStatement", "BodyStructure", "RiskAssessment")


@dataclass(frozen=True, slots=True)
class Counts:
    warmup: int
    http: dict[int, int]  # concurrency → timed requests
    fallback: int  # timed fallback calls
    fallback_warmup: int


FULL = Counts(warmup=40, http={1: 300, 8: 800, 32: 800}, fallback=20, fallback_warmup=2)
QUICK = Counts(warmup=10, http={1: 60, 8: 160, 32: 160}, fallback=20, fallback_warmup=2)


class Fresh:
    """Hands out Bundle indices (patients) never handed out before in this run."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, count: int) -> range:
        start, self._next = self._next, self._next + count
        return range(start, start + count)


# --- requests -----------------------------------------------------------------------------------------------
def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def hook_request(i: int, *, condition: bool = True, fhir_server: str | None = None) -> bytes:
    """A patient-view call for patient `i`: full prefetch built from its Bundle (Condition left out when
    `condition` is false), a fresh hookInstance."""
    resources = [e["resource"] for e in orjson.loads(bundle_bytes(i))["entry"]]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    (patient,) = by_type["Patient"]
    prefetch: dict[str, Any] = {"Patient": patient}
    prefetch |= {key: searchset(by_type.get(key, [])) for key in SEARCHSET_KEYS}
    prefetch |= dict.fromkeys(NULL_KEYS)
    if not condition:
        del prefetch["Condition"]
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/bench", "patientId": patient["id"]},
        "prefetch": prefetch,
    }
    if fhir_server is not None:  # R61: the fallback queries only with the client's access token
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {
            "access_token": "bench-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "bench",
        }
    return orjson.dumps(body)


class Tokens:
    """A fresh ES384 client JWT per call: unique jti, aud = the exact service URL."""

    def __init__(self, key: KeyPair, audience: str) -> None:
        self.key, self.audience = key, audience

    def header(self) -> str:
        return bearer(mint(self.key, claims(iss=ISSUER, aud=self.audience)))


# --- servers ------------------------------------------------------------------------------------------------
def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@contextmanager
def slow_fhir_server(delay_s: float) -> Iterator[str]:
    """A FHIR server on 127.0.0.1 (a thread) that answers every GET with an empty searchset after `delay_s`."""
    body = orjson.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay_s)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up long ago
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/fhir"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- 1. patient-view with full prefetch, JWT on -------------------------------------------------------------
async def post_all(
    client: httpx.AsyncClient, bodies: list[bytes], tokens: Tokens, concurrency: int
) -> tuple[list[float], int]:
    """POST every body, `concurrency` at a time, each with a fresh token; latencies (s) and the cards returned."""
    pending = iter(bodies)
    latencies: list[float] = []
    cards = 0

    async def worker() -> None:
        nonlocal cards
        for body in pending:
            headers = {**HEADERS, "authorization": tokens.header()}  # minted before the clock starts
            start = time.perf_counter()
            response = await client.post(SERVICE_PATH, content=body, headers=headers)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"POST {SERVICE_PATH}: {response.status_code} {response.text[:300]}")
            cards += len(response.json()["cards"])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, cards


async def http_run(
    url: str, pid: int, tokens: Tokens, concurrency: int, warmup: list[bytes], bodies: list[bytes]
) -> tuple[HttpRun, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await post_all(client, warmup, tokens, concurrency)
        cpu_before, start = process_cpu_s(pid), time.perf_counter()
        latencies, cards = await post_all(client, bodies, tokens, concurrency)
        wall, cpu_after = time.perf_counter() - start, process_cpu_s(pid)
    q = statistics.quantiles([1e3 * s for s in latencies], n=100, method="inclusive")
    server_cpu = None
    if cpu_before is not None and cpu_after is not None:
        server_cpu = 1e3 * (cpu_after - cpu_before) / len(bodies)
    return HttpRun(concurrency, len(bodies), wall, q[49], q[94], q[98], server_cpu), cards / len(bodies)


def measure_patient_view(fresh: Fresh, counts: Counts, cpu: int, jwks_dir: Path) -> list[tuple[HttpRun, float]]:
    key, port = es384_key(), free_port()
    settings = {
        "OLIGOCDS_ENV": "production",
        "OLIGOCDS_PUBLIC_BASE_URL": base_url(port),
        "OLIGOCDS_CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: str(write_jwks(jwks_dir, key))}),
        "OLIGOCDS_CORS_ORIGINS": ISSUER,
        "OLIGOCDS_RULES_RELOAD_SECONDS": "0",
    }
    runs = []
    with server_process(cpu, port, settings, LOGS / "cds_hooks-production.log") as (url, pid):
        tokens = Tokens(key, url + SERVICE_PATH)
        for concurrency, requests in counts.http.items():
            warmup = [hook_request(i) for i in fresh.take(max(counts.warmup, 2 * concurrency))]
            bodies = [hook_request(i) for i in fresh.take(requests)]
            runs.append(asyncio.run(http_run(url, pid, tokens, concurrency, warmup, bodies)))
    return runs


# --- 2. FHIR fallback at the timeout budget -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FallbackRun:
    calls: int
    budget_ms: int
    limit_s: float
    max_s: float
    p95_s: float
    p50_s: float
    statuses: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.max_s <= self.limit_s and self.p95_s <= self.limit_s and set(self.statuses) == {"412"}

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "pass": self.ok}


async def fallback_calls(url: str, bodies: list[bytes]) -> list[tuple[float, int]]:
    """One call after the other; (wall seconds, status) of each."""
    results = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for body in bodies:
            start = time.perf_counter()
            response = await client.post(SERVICE_PATH, content=body, headers=HEADERS)
            results.append((time.perf_counter() - start, response.status_code))
    return results


def measure_fallback(fresh: Fresh, counts: Counts, cpu: int) -> FallbackRun:
    settings = {
        "OLIGOCDS_ENV": "development",
        "OLIGOCDS_FHIR_TIMEOUT_MS": str(FHIR_TIMEOUT_MS),
        "OLIGOCDS_RULES_RELOAD_SECONDS": "0",
    }
    with (
        slow_fhir_server(SLOW_FHIR_DELAY_S) as fhir,
        server_process(cpu, free_port(), settings, LOGS / "cds_hooks-development.log") as (url, _),
    ):
        warmup = [hook_request(i, condition=False, fhir_server=fhir) for i in fresh.take(counts.fallback_warmup)]
        bodies = [hook_request(i, condition=False, fhir_server=fhir) for i in fresh.take(counts.fallback)]
        asyncio.run(fallback_calls(url, warmup))
        results = asyncio.run(fallback_calls(url, bodies))
    walls = [s for s, _ in results]
    q = statistics.quantiles(walls, n=100, method="inclusive")
    statuses = Counter(str(status) for _, status in results)
    limit = (FHIR_TIMEOUT_MS + BUDGET_SLACK_MS) / 1e3
    return FallbackRun(len(results), FHIR_TIMEOUT_MS, limit, max(walls), q[94], q[49], dict(sorted(statuses.items())))


# --- report -------------------------------------------------------------------------------------------------
def print_patient_view(runs: list[tuple[HttpRun, float]], cpu: int, client_cpu: int) -> None:
    print(
        f"\nPOST {SERVICE_PATH}: full prefetch of {BUNDLE_SIZE}-resource Bundles, fresh ES384 JWT per request "
        f"(verified), server (production) on cpu {cpu}, httpx.AsyncClient load on cpu {client_cpu}"
    )
    head = f"{'c':>3}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(f"{head}{'server cpu ms/req':>19}{'cards/req':>11}")
    for r, cards in runs:
        cpu_ms = f"{r.server_cpu_ms_per_request:.2f}" if r.server_cpu_ms_per_request is not None else "n/a"
        quantiles = f"{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}"
        print(f"{r.concurrency:>3}{r.requests:>10}{r.per_s:>9.1f}{quantiles}{cpu_ms:>19}{cards:>11.1f}")
    by_c = {r.concurrency: r for r, _ in runs}
    if 1 in by_c:
        print(target_line("p50", 1, by_c[1].p50_ms, TARGET_P50_C1_MS))
    if 8 in by_c:
        print(target_line("p95", 8, by_c[8].p95_ms, TARGET_P95_C8_MS))


def print_fallback(f: FallbackRun, cpu: int) -> None:
    print(
        f"\nFHIR fallback at the timeout budget: Condition key absent, fhirServer answers after "
        f"{SLOW_FHIR_DELAY_S:g} s; server (development, OLIGOCDS_FHIR_TIMEOUT_MS={f.budget_ms}) on cpu {cpu}, "
        f"{f.calls} calls one at a time"
    )
    statuses = ", ".join(f"{status}×{n}" for status, n in f.statuses.items())
    print(f"wall p50 {1e3 * f.p50_s:.1f} ms   p95 {1e3 * f.p95_s:.1f} ms   max {1e3 * f.max_s:.1f} ms")
    print(f"status codes: {statuses}   (expected: 412 only)")
    print(
        f"target max and p95 ≤ budget + {BUDGET_SLACK_MS} ms = {f.limit_s:.2f} s, status 412: "
        f"max {f.max_s:.3f} s, p95 {f.p95_s:.3f} s   {verdict(f.ok)}"
    )


def write_json(report: dict[str, Any]) -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {OUTPUT.relative_to(ROOT)}")


# --- main ---------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    available = cpus()
    client_cpu, server_cpu = available[0], available[-1]
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    pin_to(client_cpu)
    fresh = Fresh()

    with tempfile.TemporaryDirectory() as jwks_dir:
        runs = measure_patient_view(fresh, counts, server_cpu, Path(jwks_dir))
    fallback = measure_fallback(fresh, counts, server_cpu)
    print_patient_view(runs, server_cpu, client_cpu)
    print_fallback(fallback, server_cpu)
    write_json(
        {
            "date": date.today().isoformat(),
            "quick": args.quick,
            "bundle_size": BUNDLE_SIZE,
            "cpus": {"client": client_cpu, "server": server_cpu},
            "patient_view": [{**r.as_json(), "cards_per_request": round(c, 2)} for r, c in runs],
            "fallback": fallback.as_json(),
            "targets": {
                "p50_c1_ms": TARGET_P50_C1_MS,
                "p95_c8_ms": TARGET_P95_C8_MS,
                "fallback_limit_s": fallback.limit_s,
            },
        }
    )


if __name__ == "__main__":
    main()
