"""The merge policy of the patient state store: pure functions, no I/O (the rules of docs/streaming.md).

Each resource is stored under a key: "Type/id", or "Type#sha256:<hex>" (the hash of its canonical JSON) when it
has no id. An incoming copy is merged with the stored row of the same key as follows:

1. **Older copies lose.** The incoming copy is ignored (`IGNORED_OLDER`, nothing written) iff it is strictly
   older than the stored row. `meta.lastUpdated` is compared as an instant (normalised to UTC) when both sides
   have a parseable one with a time zone; when that does not decide (missing or unparseable on either side, or
   equal), `meta.versionId` is compared when both sides have one: numerically when both are digit strings,
   otherwise not at all. When nothing decides, the later arrival wins.
2. **Entered-in-error removes.** A copy is entered-in-error when its top-level `status` is "entered-in-error"
   (Observation, Procedure, MedicationRequest, MedicationAdministration, MedicationStatement, DiagnosticReport,
   … any type), or, for a Condition, when `verificationStatus` has a coding with code "entered-in-error" and
   system http://terminology.hl7.org/CodeSystem/condition-ver-status (or no system). If it is not older (rule 1),
   a live stored copy is replaced by a *tombstone* (`DELETED`); with no live copy the tombstone is written or
   refreshed (`IGNORED_DELETED`).
3. **Tombstones keep their version.** A tombstone holds the entered-in-error copy (its key, patient, lastUpdated
   and versionId) and is never returned as patient state. A later copy that is strictly older than the tombstone
   is ignored (`IGNORED_OLDER`), so a replayed or late original does not bring an entered-in-error diagnosis
   back; a copy that is newer, or that nothing orders against the tombstone, is added again (`ADDED`).
4. **Same content is no change.** A live stored copy with the same canonical JSON (orjson, sorted keys) for the
   same patient is `UNCHANGED` (nothing written).
5. **Otherwise the incoming copy replaces the stored one** (`UPDATED`, or `ADDED` when nothing live was stored),
   including its patient key: a resource that moves to another patient leaves the first one.

A DELETE entry (`StoreTx.delete`) removes a live row outright and leaves tombstones alone.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.fhir.util import canonical
from service.store.base import Merge

CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ENTERED_IN_ERROR = "entered-in-error"
_INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so stored values also sort as text


class Write(enum.Enum):
    """What the store writes for a decision."""

    NOTHING = "nothing"
    LIVE = "live"  # the incoming copy, as patient state
    TOMBSTONE = "tombstone"  # the incoming entered-in-error copy, as a tombstone


@dataclass(frozen=True, slots=True)
class Stamp:
    """The version marks of a copy: meta.lastUpdated (UTC) and meta.versionId."""

    last_updated: datetime | None
    version_id: str | None


@dataclass(frozen=True, slots=True)
class Incoming:
    key: str
    resource_type: str
    patient: str
    stamp: Stamp
    body: bytes  # canonical JSON
    entered_in_error: bool


@dataclass(frozen=True, slots=True)
class Stored:
    patient: str
    stamp: Stamp
    body: bytes
    live: bool  # False: a tombstone


@dataclass(frozen=True, slots=True)
class Decision:
    merge: Merge
    write: Write


def resource_key(resource_type: str, resource_id: object, body: bytes) -> str:
    """ "Type/id", or "Type#sha256:<hex of the canonical JSON>" for a resource without id."""
    if isinstance(resource_id, str) and resource_id:
        return f"{resource_type}/{resource_id}"
    return f"{resource_type}#sha256:{hashlib.sha256(body).hexdigest()}"


def parse_instant(value: object) -> datetime | None:
    """A FHIR instant as an aware UTC datetime; None when missing, unparseable or without a time zone."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def format_instant(value: datetime | None) -> str | None:
    """The stored form of an instant: UTC, fixed width ("2026-01-01T09:00:00.000000Z")."""
    return value.astimezone(UTC).strftime(_INSTANT_FORMAT) if value is not None else None


def read_instant(value: str | None) -> datetime | None:
    """The inverse of `format_instant`."""
    return datetime.strptime(value, _INSTANT_FORMAT).replace(tzinfo=UTC) if value is not None else None


def stamp_of(resource: Mapping[str, Any]) -> Stamp:
    meta = resource.get("meta")
    if not isinstance(meta, Mapping):
        return Stamp(None, None)
    version = meta.get("versionId")
    return Stamp(parse_instant(meta.get("lastUpdated")), version if isinstance(version, str) else None)


def is_entered_in_error(resource: Mapping[str, Any]) -> bool:
    """Top-level status "entered-in-error" (any type), or a Condition's verificationStatus of that code."""
    if resource.get("status") == ENTERED_IN_ERROR:
        return True
    if resource.get("resourceType") != "Condition":
        return False
    status = resource.get("verificationStatus")
    codings = status.get("coding") if isinstance(status, Mapping) else None
    return any(_is_eie_coding(c) for c in (codings if isinstance(codings, list) else []))


def _is_eie_coding(coding: object) -> bool:
    return (
        isinstance(coding, Mapping)
        and coding.get("code") == ENTERED_IN_ERROR
        and coding.get("system") in (CONDITION_VER_STATUS, None)
    )


def incoming(patient: str, resource: Mapping[str, Any]) -> Incoming:
    """Everything the policy needs to know about an incoming resource."""
    body = canonical(resource)
    rtype = str(resource.get("resourceType", ""))
    key = resource_key(rtype, resource.get("id"), body)
    return Incoming(key, rtype, patient, stamp_of(resource), body, is_entered_in_error(resource))


def _order(greater: bool, less: bool) -> int:
    return int(greater) - int(less)


def _compare_versions(new: str | None, old: str | None) -> int | None:
    if new is None or old is None or not (new.isdigit() and old.isdigit()):
        return None
    return _order(int(new) > int(old), int(new) < int(old))


def compare(new: Stamp, old: Stamp) -> int | None:
    """-1/0/1 when `new` is older/equal/newer than `old`; None when the marks do not order them."""
    if new.last_updated is not None and old.last_updated is not None:
        order = _order(new.last_updated > old.last_updated, new.last_updated < old.last_updated)
        if order != 0:
            return order
        versions = _compare_versions(new.version_id, old.version_id)
        return versions if versions is not None else 0
    return _compare_versions(new.version_id, old.version_id)


def is_older(new: Stamp, old: Stamp) -> bool:
    """True iff `new` is strictly older than `old` (rule 1)."""
    return compare(new, old) == -1


def decide(new: Incoming, old: Stored | None) -> Decision:
    """The outcome of merging `new` into the stored row `old` (None: nothing stored under its key)."""
    if old is not None and is_older(new.stamp, old.stamp):
        return Decision(Merge.IGNORED_OLDER, Write.NOTHING)
    if new.entered_in_error:
        return _decide_removal(new, old)
    if old is None or not old.live:
        return Decision(Merge.ADDED, Write.LIVE)
    if old.body == new.body and old.patient == new.patient:
        return Decision(Merge.UNCHANGED, Write.NOTHING)
    return Decision(Merge.UPDATED, Write.LIVE)


def _decide_removal(new: Incoming, old: Stored | None) -> Decision:
    if old is not None and old.live:
        return Decision(Merge.DELETED, Write.TOMBSTONE)
    if old is not None and old.body == new.body and old.patient == new.patient:
        return Decision(Merge.IGNORED_DELETED, Write.NOTHING)
    return Decision(Merge.IGNORED_DELETED, Write.TOMBSTONE)
