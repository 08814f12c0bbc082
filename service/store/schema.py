"""The store's schema as an ordered list of migrations, in one text for both SQL dialects.

`{blob}` and `{ctext}` stand for the dialect's byte string type and a text type that sorts by code point (SQLite's
default; `COLLATE "C"` on PostgreSQL), so both backends return resources in the same order. Migrations are
applied in order, in the caller's transaction, and recorded in `schema_version`; never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE resources (
            key {ctext} PRIMARY KEY,
            patient TEXT NOT NULL,
            resource_type {ctext} NOT NULL,
            last_updated TEXT,
            version_id TEXT,
            live INTEGER NOT NULL,
            body {blob} NOT NULL
        )""",
        "CREATE INDEX resources_by_patient ON resources (patient, resource_type, key)",
        """CREATE TABLE results (
            patient TEXT PRIMARY KEY,
            body {blob} NOT NULL,
            digest TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE offsets (
            topic TEXT NOT NULL,
            kafka_partition INTEGER NOT NULL,
            next_offset BIGINT NOT NULL,
            PRIMARY KEY (topic, kafka_partition)
        )""",
    ),
    (  # 2: what CDS Hooks replicas share (cds-hooks.md §7, §8 check 8)
        # client-JWT jti values seen; key = sha256 of (iss, jti), expires_at in epoch seconds
        """CREATE TABLE cds_jti (
            key TEXT PRIMARY KEY,
            expires_at BIGINT NOT NULL
        )""",
        "CREATE INDEX cds_jti_by_expiry ON cds_jti (expires_at)",
        # card feedback; item_key = sha256 of (card, outcome, outcome_timestamp, reason): identical items once
        """CREATE TABLE cds_feedback (
            service TEXT NOT NULL,
            item_key TEXT NOT NULL,
            card TEXT NOT NULL,
            outcome TEXT NOT NULL,
            outcome_timestamp TEXT NOT NULL,
            reason_system TEXT,
            reason_code TEXT,
            accepted_suggestions TEXT NOT NULL,
            user_comment TEXT,
            rule TEXT,
            code TEXT,
            ruleset_version TEXT,
            received_at TEXT NOT NULL,
            PRIMARY KEY (service, item_key)
        )""",
    ),
    (  # 3: cards issued by any replica, so that feedback reaching another replica is matched (cds-hooks.md §7)
        # issued_at in epoch seconds; rows older than 30 days are deleted now and then
        """CREATE TABLE cds_issued_cards (
            uuid TEXT PRIMARY KEY,
            service TEXT,
            patient TEXT NOT NULL,
            rule TEXT NOT NULL,
            code TEXT NOT NULL,
            ruleset_version TEXT NOT NULL,
            issued_at BIGINT NOT NULL
        )""",
        "CREATE INDEX cds_issued_cards_by_time ON cds_issued_cards (issued_at)",
    ),
    (  # 4: resources without a patient of their own (Medication), and which patients refer to them
        # the resources themselves live in `resources` under the patient key '' (base.SHARED)
        """CREATE TABLE shared_refs (
            key {ctext} NOT NULL,
            patient TEXT NOT NULL,
            PRIMARY KEY (key, patient)
        )""",
        "CREATE INDEX shared_refs_by_patient ON shared_refs (patient, key)",
    ),
    (  # 5: when each patient's state last arrived (POST /ingest, Kafka), epoch seconds: CDS Hooks uses state that
        # is fresh enough instead of a FHIR query for an absent prefetch key (cds-hooks.md §5, §11.8)
        """CREATE TABLE patient_seen (
            patient TEXT PRIMARY KEY,
            seen_at BIGINT NOT NULL
        )""",
    ),
)

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    blob: str
    ctext: str
    placeholder: str

    def sql(self, statement: str) -> str:
        """A statement written with "?" placeholders, in this dialect."""
        return statement.replace("?", self.placeholder)


SQLITE = Dialect("sqlite", blob="BLOB", ctext="TEXT", placeholder="?")
POSTGRESQL = Dialect("postgresql", blob="BYTEA", ctext='TEXT COLLATE "C"', placeholder="%s")

Execute = Callable[[str, Sequence[Any]], list[Any]]  # runs one statement, returns its rows


def migrate(execute: Execute, dialect: Dialect) -> list[int]:
    """Apply the migrations not yet recorded (call inside a transaction that serialises migrators)."""
    execute(_VERSION_TABLE, ())
    rows = execute("SELECT version FROM schema_version", ())
    done = {int(row[0]) for row in rows}
    applied = []
    for version, statements in enumerate(MIGRATIONS, start=1):
        if version not in done:
            _apply(execute, dialect, version, statements)
            applied.append(version)
    return applied


def _apply(execute: Execute, dialect: Dialect, version: int, statements: Sequence[str]) -> None:
    for statement in statements:
        execute(statement.format(blob=dialect.blob, ctext=dialect.ctext), ())
    now = datetime.now(UTC).isoformat()
    execute(dialect.sql("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"), (version, now))


def current_version() -> int:
    return len(MIGRATIONS)
