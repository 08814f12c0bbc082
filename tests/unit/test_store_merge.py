"""The store's merge policy (service/store/merge.py) as pure functions: ordering, entered-in-error, decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.store.base import Merge
from service.store.merge import (
    CONDITION_VER_STATUS,
    Stamp,
    Stored,
    Write,
    compare,
    decide,
    format_instant,
    incoming,
    is_entered_in_error,
    is_older,
    parse_instant,
    read_instant,
    resource_key,
)

P = "Patient/p1"


def stamp(updated: str | None = None, version: str | None = None) -> Stamp:
    return Stamp(parse_instant(updated), version)


def obs(updated: str | None = None, version: str | None = None, **extra: Any) -> dict[str, Any]:
    meta = {k: v for k, v in (("lastUpdated", updated), ("versionId", version)) if v is not None}
    return {"resourceType": "Observation", "id": "o1", "meta": meta, "status": "final", **extra}


def stored_from(resource: dict[str, Any], patient: str = P, live: bool = True) -> Stored:
    new = incoming(patient, resource)
    return Stored(patient, new.stamp, new.body, live)


def test_instants_are_compared_in_utc() -> None:
    assert parse_instant("2026-01-01T10:00:00+02:00") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert is_older(stamp("2026-01-01T10:00:00+02:00"), stamp("2026-01-01T09:00:00Z"))
    assert compare(stamp("2026-01-01T09:00:00Z"), stamp("2026-01-01T11:00:00+02:00")) == 0


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-01-01", "2026-01-01T09:00:00", 20260101])
def test_unusable_instants_are_absent(value: object) -> None:
    assert parse_instant(value) is None


def test_stored_instants_are_fixed_width_utc_text() -> None:
    value = parse_instant("2026-01-01T10:00:00.5+02:00")
    assert format_instant(value) == "2026-01-01T08:00:00.500000Z"
    assert read_instant(format_instant(value)) == value
    assert format_instant(None) is None and read_instant(None) is None


@pytest.mark.parametrize(
    ("new", "old", "order"),
    [
        (stamp("2026-01-02T00:00:00Z", "1"), stamp("2026-01-01T00:00:00Z", "9"), 1),  # lastUpdated decides first
        (stamp("2026-01-01T00:00:00Z", "9"), stamp("2026-01-02T00:00:00Z", "1"), -1),
        (stamp("2026-01-01T00:00:00Z", "2"), stamp("2026-01-01T00:00:00Z", "10"), -1),  # equal → versionId, numeric
        (stamp("2026-01-01T00:00:00Z", "b"), stamp("2026-01-01T00:00:00Z", "a"), 0),  # not digits: equal instants
        (stamp(None, "2"), stamp("2026-01-01T00:00:00Z", "3"), -1),  # lastUpdated missing on one side
        (stamp("2026-01-01T00:00:00Z", "3"), stamp(None, "2"), 1),
        (stamp(None, "a"), stamp(None, "b"), None),  # nothing decides
        (stamp(None, "2"), stamp(None, None), None),
        (stamp(), stamp(), None),
    ],
)
def test_compare(new: Stamp, old: Stamp, order: int | None) -> None:
    assert compare(new, old) == order


def test_entered_in_error() -> None:
    coding = {"system": CONDITION_VER_STATUS, "code": "entered-in-error"}
    assert is_entered_in_error({"resourceType": "Condition", "verificationStatus": {"coding": [coding]}})
    assert is_entered_in_error(
        {"resourceType": "Condition", "verificationStatus": {"coding": [{"code": coding["code"]}]}}
    )
    other = {"system": "http://example.org/other", "code": "entered-in-error"}
    assert not is_entered_in_error({"resourceType": "Condition", "verificationStatus": {"coding": [other]}})
    assert not is_entered_in_error({"resourceType": "Condition", "verificationStatus": {"text": "entered-in-error"}})
    for rtype in ("Observation", "Procedure", "MedicationRequest", "MedicationStatement", "DiagnosticReport"):
        assert is_entered_in_error({"resourceType": rtype, "status": "entered-in-error"})
    assert not is_entered_in_error(obs())


def test_resource_key() -> None:
    assert resource_key("Observation", "o1", b"{}") == "Observation/o1"
    assert resource_key("Observation", None, b"{}") == (
        "Observation#sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


def test_sorted_keys_make_the_content_canonical() -> None:
    one = incoming(P, {"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    two = incoming(P, {"code": {"text": "x"}, "status": "final", "resourceType": "Observation"})
    assert one.body == two.body and one.key == two.key and one.key.startswith("Observation#sha256:")


@pytest.mark.parametrize(
    ("new", "old", "merge", "write"),
    [
        (obs(), None, Merge.ADDED, Write.LIVE),
        (obs(), obs(), Merge.UNCHANGED, Write.NOTHING),
        (obs(valueString="x"), obs(), Merge.UPDATED, Write.LIVE),
        (obs("2026-01-01T00:00:00Z"), obs("2026-01-02T00:00:00Z"), Merge.IGNORED_OLDER, Write.NOTHING),
        (obs("2026-01-02T00:00:00Z"), obs("2026-01-01T00:00:00Z"), Merge.UPDATED, Write.LIVE),
        (obs(valueString="late, unversioned"), obs("2026-01-02T00:00:00Z"), Merge.UPDATED, Write.LIVE),
        (obs(status="entered-in-error"), obs(), Merge.DELETED, Write.TOMBSTONE),
        (obs(status="entered-in-error"), None, Merge.IGNORED_DELETED, Write.TOMBSTONE),
        (
            obs("2026-01-01T00:00:00Z", status="entered-in-error"),
            obs("2026-01-02T00:00:00Z"),
            Merge.IGNORED_OLDER,
            Write.NOTHING,
        ),
    ],
)
def test_decide_against_a_live_copy(
    new: dict[str, Any], old: dict[str, Any] | None, merge: Merge, write: Write
) -> None:
    decision = decide(incoming(P, new), stored_from(old) if old is not None else None)
    assert (decision.merge, decision.write) == (merge, write)


def test_a_move_to_another_patient_is_an_update() -> None:
    decision = decide(incoming("Patient/p2", obs()), stored_from(obs()))
    assert (decision.merge, decision.write) == (Merge.UPDATED, Write.LIVE)


def test_tombstones_keep_older_copies_out() -> None:
    tomb = stored_from(obs("2026-01-02T00:00:00Z", status="entered-in-error"), live=False)
    assert decide(incoming(P, obs("2026-01-01T00:00:00Z")), tomb).merge is Merge.IGNORED_OLDER
    assert decide(incoming(P, obs("2026-01-03T00:00:00Z")), tomb).merge is Merge.ADDED
    assert decide(incoming(P, obs()), tomb).merge is Merge.ADDED  # nothing orders them: the later arrival wins
    again = decide(incoming(P, obs("2026-01-02T00:00:00Z", status="entered-in-error")), tomb)
    assert (again.merge, again.write) == (Merge.IGNORED_DELETED, Write.NOTHING)
    newer = decide(incoming(P, obs("2026-01-04T00:00:00Z", status="entered-in-error")), tomb)
    assert (newer.merge, newer.write) == (Merge.IGNORED_DELETED, Write.TOMBSTONE)
