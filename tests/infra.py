"""Real Kafka and PostgreSQL for tests, started on demand and stopped at the end of the session.

Fixtures (registered in tests/conftest.py):

- ``kafka_broker`` (session): a :class:`KafkaBroker` with ``.bootstrap`` ("host:port"), ``.managed``, ``.stop()``,
  ``.start()`` and ``.restart()``.
- ``postgres_dsn`` (session): ``postgresql://…`` of a server with a database to use.
- ``fresh_pg_dsn`` (function): the DSN of a new empty database on that server, dropped after the test.

Where they come from, first match wins:

1. ``OLIGOCDS_TEST_KAFKA_BOOTSTRAP`` / ``OLIGOCDS_TEST_POSTGRES_DSN``: an external server, used as it is
   (``managed`` is False, and the broker cannot be stopped or restarted from here).
2. A Docker engine that answers: testcontainers' Kafka (KRaft) and PostgreSQL modules.
   ``OLIGOCDS_TEST_DOCKER=0`` skips this step, ``=1`` requires it.
3. ``scripts/kafka.sh`` / ``scripts/postgres.sh``: a real broker from Maven Central's jars and the machine's
   PostgreSQL (installed from Debian when missing), on free ports with data in a temporary directory.

Helpers: :func:`unique_topics` and :func:`create_topics` (async, waits until the metadata shows the topics).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from psycopg import sql
from psycopg.conninfo import make_conninfo

ENV_KAFKA = "OLIGOCDS_TEST_KAFKA_BOOTSTRAP"
ENV_POSTGRES = "OLIGOCDS_TEST_POSTGRES_DSN"
ENV_DOCKER = "OLIGOCDS_TEST_DOCKER"

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "scripts" / "kafka.sh"
POSTGRES_SH = ROOT / "scripts" / "postgres.sh"

KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
POSTGRES_IMAGE = "postgres:16-alpine"

# the fetch on a cold machine (~10 s) plus the broker's own start-up (kafka.sh waits up to 90 s)
SCRIPT_TIMEOUT_S = 300

T = TypeVar("T")


# --- small tools ---------------------------------------------------------------------------------------------------
def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to completion from sync code, in a thread of its own (never touches the test's loop)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(consecutive: int = 1) -> int:
    """A port on 127.0.0.1 that is free now, with the next ``consecutive - 1`` ports free too."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port + consecutive <= 65535 and all(_port_free(port + i) for i in range(1, consecutive)):
            return port
    raise RuntimeError(f"no {consecutive} consecutive free ports on 127.0.0.1")


def _run_script(script: Path, *args: str) -> str:
    """Runs one of scripts/*.sh; returns its stdout, or raises with its stderr (which ends with the server's log)."""
    proc = subprocess.run(
        ["bash", str(script), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script.name} {' '.join(args)} failed with exit code {proc.returncode}:\n{proc.stderr}{proc.stdout}"
        )
    return proc.stdout.strip()


_docker: bool | None = None


def docker_available() -> bool:
    """Whether a Docker engine answers (cached). ``OLIGOCDS_TEST_DOCKER=0``/``1`` decides without asking."""
    global _docker
    if _docker is None:
        choice = os.environ.get(ENV_DOCKER, "").strip().lower()
        if choice in {"0", "false", "no"}:
            _docker = False
        elif choice in {"1", "true", "yes"}:
            _docker = True
        else:
            _docker = _docker_pings()
    return _docker


def _docker_pings() -> bool:
    """``docker info`` when the CLI is there, else an HTTP ``/_ping`` on DOCKER_HOST or /var/run/docker.sock.
    (Not the Docker SDK: with no engine it leaves an unclosed socket behind, an error under ``filterwarnings``.)"""
    if shutil.which("docker"):
        try:
            return (
                subprocess.run(
                    ["docker", "info", "--format", "{{.ServerVersion}}"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=15,
                    check=False,
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    url = urlsplit(host)
    try:
        if url.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = url.path
        elif url.scheme == "tcp" and url.hostname:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (url.hostname, url.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(5)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(1024).split(b"\r\n", 1)[0]
    except OSError:
        return False


# --- Kafka ---------------------------------------------------------------------------------------------------------
class KafkaBroker:
    """A broker for the session. ``bootstrap`` stays the same across ``stop()``/``start()``/``restart()``."""

    def __init__(
        self,
        bootstrap: str,
        *,
        managed: bool,
        start: Callable[[], None] | None = None,
        stop: Callable[[], None] | None = None,
        why_fixed: str = "",
    ) -> None:
        self.bootstrap = bootstrap
        self.managed = managed
        self.running = True
        self._start = start
        self._stop = stop
        self._why_fixed = why_fixed

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, managed={self.managed}, running={self.running})"

    def _require(self, action: Callable[[], None] | None, name: str) -> Callable[[], None]:
        if action is None:
            raise RuntimeError(f"cannot {name} the Kafka broker at {self.bootstrap}: {self._why_fixed}")
        return action

    def stop(self) -> None:
        stop = self._require(self._stop, "stop")
        if self.running:
            stop()
            self.running = False

    def start(self) -> None:
        start = self._require(self._start, "start")
        if not self.running:
            start()
            self.running = True

    def restart(self) -> None:
        """Stop and start again on the same port and data: committed records survive. Blocks (~5 s): from async
        code call ``await asyncio.to_thread(broker.restart)``."""
        self._require(self._start, "restart")
        self.stop()
        self.start()


async def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> None:
    """Until a metadata request answers with a broker and a controller."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            if cluster["brokers"] and cluster["controller_id"] is not None and cluster["controller_id"] >= 0:
                return
            last = RuntimeError(f"metadata without broker or controller: {cluster}")
        except Exception as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the Kafka broker at {bootstrap} does not serve metadata after {timeout:.0f}s: {last!r}")


def script_kafka() -> tuple[KafkaBroker, Callable[[], None]]:
    data_dir = tempfile.mkdtemp(prefix="oligocds-kafka-")
    port = free_port(consecutive=2)  # the controller listens on port + 1

    def start() -> None:
        bootstrap = _run_script(KAFKA_SH, "start", data_dir, str(port)).splitlines()[-1]
        run_async(wait_for_broker(bootstrap))

    def stop() -> None:
        _run_script(KAFKA_SH, "stop", data_dir)

    try:
        start()
    except BaseException:
        subprocess.run(["bash", str(KAFKA_SH), "stop", data_dir], capture_output=True, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    broker = KafkaBroker(f"127.0.0.1:{port}", managed=True, start=start, stop=stop)

    def cleanup() -> None:
        try:
            if broker.running:
                broker.stop()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    return broker, cleanup


def _container_kafka() -> tuple[KafkaBroker, Callable[[], None]]:
    from testcontainers.community.kafka import KafkaContainer

    container = (
        KafkaContainer(image=KAFKA_IMAGE)
        .with_kraft()
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")
    )
    container.start(timeout=120)
    bootstrap = container.get_bootstrap_server()
    run_async(wait_for_broker(bootstrap))
    broker = KafkaBroker(
        bootstrap,
        managed=True,
        why_fixed="a testcontainers broker is not restartable (its advertised port is fixed at first start); "
        "unset the Docker engine (OLIGOCDS_TEST_DOCKER=0) to use scripts/kafka.sh",
    )
    return broker, container.stop


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    external = os.environ.get(ENV_KAFKA, "").strip()
    if external:
        yield KafkaBroker(
            external,
            managed=False,
            why_fixed=f"it is external ({ENV_KAFKA}); unset it to let the tests run their own broker",
        )
        return
    broker, cleanup = _container_kafka() if docker_available() else script_kafka()
    atexit.register(cleanup)  # pytest killed between setup and teardown: still no stray JVM
    try:
        yield broker
    finally:
        atexit.unregister(cleanup)
        cleanup()


def unique_topics(prefix: str, *names: str) -> list[str]:
    """Topic names no other test uses: ``unique_topics("ingest", "in", "out")`` → ``["ingest-3f9a0c1d-in", …]``;
    without ``names``, a list of one (``["ingest-3f9a0c1d"]``)."""
    token = secrets.token_hex(4)
    base = re.sub(r"[^a-zA-Z0-9._-]", "-", prefix)[:200] + f"-{token}"
    return [f"{base}-{re.sub(r'[^a-zA-Z0-9._-]', '-', n)}" for n in names] if names else [base]


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1, timeout: float = 30.0) -> None:
    """Creates the topics (existing ones are fine) and waits until the metadata shows each with every partition led."""
    wanted = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        response = await admin.create_topics([NewTopic(n, partitions, 1) for n in wanted])
        failed = [err for err in response.topic_errors if err[1] not in (0, 36)]  # 36: TOPIC_ALREADY_EXISTS
        if failed:
            raise RuntimeError(f"could not create topics: {failed}")
        deadline = time.monotonic() + timeout
        while True:
            topics = await admin.describe_topics(wanted)
            ready = {
                t["topic"]
                for t in topics
                if t["error_code"] == 0
                and len(t["partitions"]) >= partitions
                and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
            }
            if ready >= set(wanted):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {sorted(set(wanted) - ready)} not ready after {timeout:.0f}s: {topics}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


# --- PostgreSQL ----------------------------------------------------------------------------------------------------
def _script_postgres() -> tuple[str, Callable[[], None]]:
    # Under /tmp (not pytest's tmp_path, whose parents are 0700 root): the server runs as the postgres user.
    data_dir = tempfile.mkdtemp(prefix="oligocds-pg-")
    try:
        dsn = _run_script(POSTGRES_SH, "start", data_dir, str(free_port())).splitlines()[-1]
    except BaseException:
        subprocess.run(["bash", str(POSTGRES_SH), "stop", data_dir], capture_output=True, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise

    def cleanup() -> None:
        try:
            _run_script(POSTGRES_SH, "stop", data_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    return dsn, cleanup


def _container_postgres() -> tuple[str, Callable[[], None]]:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        image=POSTGRES_IMAGE, username="postgres", password="postgres", dbname="oligocds", driver=None
    )
    container.start()
    return container.get_connection_url(), container.stop


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    external = os.environ.get(ENV_POSTGRES, "").strip()
    if external:
        yield external
        return
    dsn, cleanup = _container_postgres() if docker_available() else _script_postgres()
    atexit.register(cleanup)
    try:
        yield dsn
    finally:
        atexit.unregister(cleanup)
        cleanup()


def with_database(dsn: str, dbname: str) -> str:
    """The same DSN (URL or key=value form) pointing at another database."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return make_conninfo(dsn, dbname=dbname)


@pytest.fixture
def fresh_pg_dsn(postgres_dsn: str) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(postgres_dsn, name)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            # FORCE: a pool the test left open must not keep the database alive
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
