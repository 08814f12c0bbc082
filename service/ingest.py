"""The stateful use case shared by `POST /ingest` and the Kafka worker: bundle bytes → merged patient state →
re-evaluation → results to publish when they changed (contract.md §5; the design is in docs/streaming.md).

`decode` turns bytes into resources and deletions (or raises `BundleError`, which the worker dead-letters);
`Ingestor.merge` writes them into an open store transaction and names the patients whose state changed;
`Ingestor.refresh` re-evaluates patients and saves the results whose digest changed. The caller owns the
transaction, so a Kafka batch and its published results commit together.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from service.domain.facts import InputIssue
from service.evaluate import Evaluator, issue_json, merged_issues
from service.fhir.medications import MEDICATION_RECORDS
from service.fhir.parse import BundleError, ParsedBundle, PatientResources, load_json, read_bundle
from service.fhir.util import ref_id
from service.store.base import SHARED, StoreTx

# "Type/id" at the end of a DELETE entry's request.url (relative or absolute; no conditional delete).
_DELETE_URL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_VOLATILE = ("evaluatedAt", "asOf")  # time stamps: a result that differs only in these has not changed


class PublishError(Exception):
    """The results could not be published (the broker is unreachable): nothing was committed; retry later."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message's usable content: resources grouped by patient, DELETE entries, and what was skipped."""

    parsed: ParsedBundle
    deletes: tuple[tuple[str, str], ...]  # (resource type, id)
    issues: tuple[InputIssue, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """A patient's new result, saved in the store and due for publication."""

    patient: str
    body: bytes
    digest: str


def decode(body: bytes) -> Decoded:
    """Parse and validate a Bundle; `BundleError` when nothing in it can be used."""
    data = load_json(body)
    deletes, skipped = _delete_entries(data)
    try:
        parsed = read_bundle(data, shared_alone=True)
    except BundleError:
        if not deletes:
            raise
        parsed = ParsedBundle(patients=(), issues=())
    return Decoded(parsed, tuple(deletes), parsed.issues + tuple(skipped))


def _delete_entries(data: Any) -> tuple[list[tuple[str, str]], list[InputIssue]]:
    entries = data.get("entry") if isinstance(data, dict) and data.get("resourceType") == "Bundle" else None
    deletes: list[tuple[str, str]] = []
    issues: list[InputIssue] = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or request.get("method") != "DELETE":
            continue
        match = _DELETE_URL.search(str(request.get("url", "")))
        if match:
            deletes.append((match[1], match[2]))
        else:
            where = f"Bundle.entry[{i}].request.url"
            issues.append(InputIssue("invalid-value", "Bundle.entry", f"{where}: only 'Type/id' deletes are supported"))
    return deletes, issues


def shared_references(resources: Iterable[dict[str, Any]]) -> list[str]:
    """The shared resources ("Medication/7") the medication records among `resources` name by
    `medicationReference` (contained "#id" references stay inside their resource)."""
    found = (ref_id(r.get("medicationReference")) for r in resources if r.get("resourceType") in MEDICATION_RECORDS)
    return sorted({ref for ref in found if ref and ref.startswith("Medication/")})


def digest(result: dict[str, Any]) -> str:
    """sha256 of the per-patient object without its time stamps (canonical JSON, sorted keys)."""
    stable = {k: v for k, v in result.items() if k not in _VOLATILE}
    return "sha256:" + hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).hexdigest()


def patient_id(patient: str) -> str:
    """The Kafka key and URL id of a patient key: "Patient/7" → "7" (a urn stays whole)."""
    return patient.removeprefix("Patient/")


@dataclass(frozen=True, slots=True)
class Ingestor:
    evaluator: Evaluator

    def merge(self, tx: StoreTx, message: Decoded) -> list[str]:
        """Write one message into the open transaction; the patients whose stored state changed, in order.

        Resources that belong to no patient (a Medication that `medicationReference` names) are stored under
        `SHARED`; a change to one re-evaluates every patient whose stored resources refer to it."""
        changed: dict[str, None] = {}

        def touch(patients: Iterable[str]) -> None:
            for patient in patients:
                if patient != SHARED and patient not in changed:
                    tx.lock_patient(patient)
                    changed[patient] = None

        for rtype, rid in message.deletes:
            patient = tx.delete(rtype, rid)
            if patient == SHARED:
                touch(tx.referrers(f"{rtype}/{rid}"))
            elif patient is not None:
                changed[patient] = None
        for resource in message.parsed.shared:
            if tx.upsert(SHARED, resource).changed:
                touch(tx.referrers(f"{resource.get('resourceType')}/{resource.get('id')}"))
        now = time.time()
        for group in message.parsed.patients:
            tx.lock_patient(group.patient)
            tx.seen(group.patient, now)  # the state is as fresh as this message (CDS Hooks, cds-hooks.md §11.8)
            for resource in group.resources:
                upserted = tx.upsert(group.patient, resource)
                if upserted.changed:
                    changed[group.patient] = None
                if upserted.left is not None:  # moved away: re-evaluate them too
                    touch([upserted.left])
            if tx.refer(group.patient, shared_references(group.resources)):
                changed[group.patient] = None
        return list(changed)

    def evaluate(self, tx: StoreTx, patient: str, day: date) -> dict[str, Any] | None:
        """The patient's result from the stored state; None when nothing is stored for them and never was. A
        patient whose last resource was deleted, withdrawn (entered-in-error) or moved away is evaluated over the
        empty state, so the stored and published result no longer shows what was removed."""
        resources = tx.resources(patient)
        if not resources and tx.result(patient) is None:
            return None
        return self.evaluator.evaluate_patient(PatientResources(patient, tuple(resources)), day)

    def refresh(self, tx: StoreTx, patients: Iterable[str], day: date) -> list[Change]:
        """Re-evaluate `patients`; save and return the results whose digest differs from the stored one."""
        changes = []
        for patient in patients:
            result = self.evaluate(tx, patient, day)
            if result is not None:
                change = save_if_changed(tx, patient, result)
                if change is not None:
                    changes.append(change)
        return changes


def save_if_changed(tx: StoreTx, patient: str, result: dict[str, Any]) -> Change | None:
    new = digest(result)
    stored = tx.result(patient)
    if stored is not None and stored.digest == new:
        return None
    body = orjson.dumps(result)
    tx.save_result(patient, body, new)
    return Change(patient, body, new)


def with_issues(result: dict[str, Any], issues: Sequence[InputIssue]) -> dict[str, Any]:
    """A copy of `result` that also lists the message's own input issues (skipped resources)."""
    if not issues:
        return result
    return {**result, "issues": merged_issues([*result["issues"], *(issue_json(i) for i in issues)])}


@dataclass(frozen=True, slots=True)
class Ingested:
    results: list[dict[str, Any]]  # every patient of the message, with the message's input issues
    changes: list[Change]  # the results saved because they differ from the stored ones


def ingest_message(ingestor: Ingestor, tx: StoreTx, message: Decoded, day: date) -> Ingested:
    """`POST /ingest`: merge one message and evaluate each patient it names (changed or not)."""
    changed = ingestor.merge(tx, message)
    named = dict.fromkeys([*(g.patient for g in message.parsed.patients), *changed])
    results: list[dict[str, Any]] = []
    changes: list[Change] = []
    for patient in named:
        result = ingestor.evaluate(tx, patient, day)
        if result is None:
            continue
        change = save_if_changed(tx, patient, result)
        if change is not None:
            changes.append(change)
        results.append(with_issues(result, message.issues))
    return Ingested(results, changes)
