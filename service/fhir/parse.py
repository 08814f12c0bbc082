"""Bundle bytes → validated raw resources grouped by patient (contract.md §5–§6, clinical-rules.md DQ-06).

Contract:
- `load_json` raises `BundleError(400, "invalid")` for bytes that are not JSON; `read_bundle` raises
  `BundleError(422, …)` for JSON that is not a Bundle, a Bundle without entries, or a Bundle of which no
  resource can be linked to a patient. Nothing else raises: every other problem is an `InputIssue`.
- Every resource whose type is in `USED_TYPES` is validated on its own against fhir.resources' R4B model;
  one that fails becomes an `invalid-value` issue and is skipped, the rest of the Bundle is still used.
  Resources of other types are not validated, only counted (`ParsedBundle.ignored`).
- The validated model is only a check: the raw (orjson-parsed) dicts are returned, unchanged, in Bundle
  order, because the fact readers work on raw JSON.
- A resource belongs to the patient its `subject` or `patient` names, a Patient to itself. References to
  Bundle `fullUrl`s and absolute RESTful URLs are reduced to `Patient/<id>`; a Patient without an id keeps
  its fullUrl as its key.
- References to the `urn:` fullUrl of another entry (a POST transaction's way) become "Type/id"; an entry without
  an id takes the urn's last part as its id. Those entries are copies; the caller's data is not changed.
- Copies of one `Type/id`: identical ones are merged, differing ones are all kept and listed per patient in
  `ParsedBundle.duplicate_conflicts`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from service.domain.facts import InputIssue
from service.fhir.util import canonical, has_id

Resource = dict[str, Any]

USED_TYPES: frozenset[str] = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "Procedure",
        "ServiceRequest",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationStatement",
        "BodyStructure",
        "RiskAssessment",
    }
)

# Resources the facts read that belong to no patient: a Medication a MedicationRequest/-Statement/-Administration
# references (`medicationReference`). Validated like the used types and handed to every patient of the Bundle.
SHARED_TYPES: frozenset[str] = frozenset({"Medication"})

# The element naming the patient, per FHIR R4; `subject` for the other used types.
_PATIENT_ELEMENT = {"BodyStructure": "patient", "AllergyIntolerance": "patient"}
_MAX_ERRORS = 3  # per resource: enough to fix the sender, short enough for an OperationOutcome
_MAX_SHOWN = 60  # characters of an offending value or reference quoted in a diagnostic

# `Type/id` at the end of a relative or absolute RESTful reference, optionally with a version.
_REST_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_ELEMENT = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")
# fhir.resources reports choice-type ([x]) errors on the parent element, naming every allowed field.
_CHOICE_MANY = re.compile(r"from this list \[([^\]]*)\], but got multiple")
_CHOICE_NONE = re.compile(r"^Expect any of field value from this list \[([^\]]*)\]")


class BundleError(Exception):
    """Input that cannot be used at all. Maps to an HTTP status and a FHIR OperationOutcome.

    `status`: 400 malformed JSON, 422 not a Bundle / no usable patient-linked resource. `code`: a FHIR
    issue-type code. `diagnostics`: what was wrong and where, e.g.
    "Bundle.entry[3].resource.subject: missing".
    """

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        # All three go to Exception.args so the error survives pickling (worker processes, logging handlers).
        super().__init__(status, code, diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.diagnostics}"


@dataclass(frozen=True, slots=True)
class PatientResources:
    """One patient's validated resources; `patient` is "Patient/<id>" (a fullUrl for an id-less Patient)."""

    patient: str
    resources: tuple[Resource, ...]  # raw JSON as received, Bundle order, identical duplicates merged


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    """The usable content of a Bundle, and what was found wrong with the rest."""

    patients: tuple[PatientResources, ...]  # in order of first appearance
    issues: tuple[InputIssue, ...]  # invalid-value findings; the resources they name were skipped
    duplicate_conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # patient -> "Type/id"s
    ignored: int = 0  # resources of types the rules do not use
    shared: tuple[Resource, ...] = ()  # validated resources of SHARED_TYPES (no patient of their own)


def load_json(body: bytes) -> Any:
    """The parsed JSON value; `BundleError(400, "invalid")` with line and column when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message already ends with "line L column C (char N)".
        raise BundleError(400, "invalid", f"malformed JSON: {exc}") from None


def parse_bundle(body: bytes) -> ParsedBundle:
    """`read_bundle(load_json(body))`."""
    return read_bundle(load_json(body))


def read_bundle(data: Any, *, shared_alone: bool = False) -> ParsedBundle:
    """The resources of a parsed Bundle (any Bundle.type), validated and grouped by patient.

    Raises `BundleError(422, …)` when `data` is not a Bundle, has no entries, or leaves no patient-linked
    resource once invalid and unlinked resources are dropped — unless `shared_alone` and it holds resources of
    SHARED_TYPES (a message that only updates a Medication, for the patient store).
    """
    entries = _with_local_references(_entries(data))
    reader = _Reader(_full_url_index(entries))
    for i, entry in enumerate(entries):
        reader.read(i, entry)
    if not reader.groups and not (shared_alone and reader.shared):
        raise BundleError(422, "processing", reader.why_empty(len(entries)))
    return reader.result()


def _entries(data: Any) -> Sequence[Any]:
    if not isinstance(data, dict):
        raise BundleError(422, "structure", f"expected a FHIR Bundle, got a JSON {_json_kind(data)}")
    rtype = data.get("resourceType")
    if rtype != "Bundle":
        got = f"resourceType {_shown(rtype)}" if isinstance(rtype, str) else "an object without resourceType"
        raise BundleError(422, "structure", f"expected a FHIR Bundle, got {got}")
    entries = data.get("entry")
    if entries is None or entries == []:
        raise BundleError(422, "required", "Bundle.entry: Bundle has no entries")
    if not isinstance(entries, list):
        got = _json_kind(entries)
        raise BundleError(422, "structure", f"Bundle.entry: expected an array, got a JSON {got}")
    return entries


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), "null")


# ----------------------------------------------------------------------------------------------------------
# Validation


@cache
def _model(resource_type: str) -> type[BaseModel]:
    """The R4B model class for a used type. Imported on first use: the nine modules cost ~0.3 s to import."""
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    model: type[BaseModel] = getattr(module, resource_type)
    return model


def load_models() -> None:
    """Import the model of every used type now: a server does it before its first request (see `_model`)."""
    for resource_type in sorted(USED_TYPES | SHARED_TYPES):
        _model(resource_type)


def _validation_error(resource: Resource, where: str) -> str | None:
    """None when `resource` (of a type in USED_TYPES) is valid against its R4B model, else a short diagnostic:
    its first errors as "<where>.<FHIR path>: <message>", joined by "; "."""
    try:
        _model(resource["resourceType"]).model_validate(resource)
    except ValidationError as exc:
        return _describe(exc.errors(include_url=False), where)
    except (ValueError, TypeError, RecursionError) as exc:  # bad input must never become a 500
        return f"{where}: not valid {resource['resourceType']} ({type(exc).__name__})"
    return _status_error(resource, where)


# FHIR R4 `status` codes (required bindings, which the R4B models do not check): a resource with another status
# is not valid R4, and is reported instead of being left out silently by the fact readers.
STATUS_CODES: Mapping[str, frozenset[str]] = {
    "Observation": frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
    ),
    "MedicationRequest": frozenset(
        {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}
    ),
    "MedicationStatement": frozenset(
        {"active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"}
    ),
    "MedicationAdministration": frozenset(
        {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}
    ),
    "Procedure": frozenset(
        {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
    ),
    "ServiceRequest": frozenset({"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}),
}


def _status_error(resource: Resource, where: str) -> str | None:
    codes = STATUS_CODES.get(resource["resourceType"])
    status = resource.get("status")
    if codes is None or status is None or status in codes:
        return None  # a missing status is the model's to refuse (it is required where R4 requires it)
    return f"{where}.status: {status!r} is not a FHIR R4 {resource['resourceType']} status"


def _describe(errors: Sequence[ErrorDetails], where: str) -> str:
    parts = []
    for error in errors[:_MAX_ERRORS]:
        suffix, message = _explain(error)
        parts.append(f"{where}{_fhir_path(error['loc'])}{suffix}: {message}")
    more = len(errors) - _MAX_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _fhir_path(loc: Sequence[int | str]) -> str:
    """pydantic loc ('component', 0, 'valueQuantity') → '.component[0].valueQuantity'."""
    out = []
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _ELEMENT.fullmatch(part):  # drops pydantic's internal steps (union tags, validator names)
            out.append(f".{part}")
    return "".join(out)


def _explain(error: ErrorDetails) -> tuple[str, str]:
    """(path suffix, message): fhir.resources' verbose messages turned into short FHIR-speak."""
    message = " ".join(error["msg"].split()).removeprefix("Value error, ").rstrip(".")
    if error["type"] in ("missing", "model_field_validation.missing"):
        return "", "missing"
    if error["type"] == "extra_forbidden":
        return "", "unknown element"
    if match := _CHOICE_MANY.search(message):
        names = _names(match[1])
        given = [n for n in names if isinstance(error["input"], dict) and n in error["input"]]
        return f".{_choice_name(names)}", f"only one type allowed, got {', '.join(given) or 'several'}"
    if match := _CHOICE_NONE.search(message):
        return f".{_choice_name(_names(match[1]))}", "missing"
    value = error["input"]
    if isinstance(value, str | int | float | bool):
        message += f" (got {_shown(value)})"
    return "", message[:200]


def _names(listed: str) -> list[str]:
    return re.findall(r"'(\w+)'", listed)


def _choice_name(names: Sequence[str]) -> str:
    """['valueBoolean', 'valueDateTime', …] → 'value[x]' (the prefix ends where every type name starts)."""
    prefix = names[0] if names else ""
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    while prefix and not all(len(n) > len(prefix) and n[len(prefix)].isupper() for n in names):
        prefix = prefix[:-1]  # 'valueDate' shared by valueDate/valueDateTime is not the element name
    return f"{prefix}[x]"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


# ----------------------------------------------------------------------------------------------------------
# Patient links


@dataclass(frozen=True, slots=True)
class _Link:
    """The patient key of a resource, or why it has none (a diagnostic suffix after the resource path)."""

    patient: str | None
    problem: str = ""


FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a FHIR resource id


def _with_local_references(entries: Sequence[Any]) -> Sequence[Any]:
    """Bundle reference resolution for `urn:` fullUrls (FHIR R4 Bundle §"Resolving references"; a POST transaction
    names its new resources only so): a reference to the urn of an entry in this Bundle becomes "Type/id", and an
    entry without an id takes the urn's last part as its id, as the receiving server would assign one. Patients keep
    their keys (an id-less Patient is keyed by its fullUrl). Entries that change are copied; the rest are returned
    as they are, and so is the whole list when no entry has a `urn:` fullUrl."""
    targets: dict[str, str] = {}
    ids: dict[int, str] = {}
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not (isinstance(url, str) and url.startswith("urn:") and isinstance(resource, dict)):
            continue
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str) or rtype == "Patient":
            continue
        if not (isinstance(rid, str) and rid):
            rid = url.rsplit(":", 1)[-1]
            if not FHIR_ID.fullmatch(rid):
                continue
            ids[i] = rid
        targets[url] = f"{rtype}/{rid}"
    if not targets:
        return entries
    out = list(entries)
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        changed = _relinked(resource, targets)
        if i in ids:
            changed = {**changed, "id": ids[i]}
        if changed is not resource:
            out[i] = {**entry, "resource": changed}
    return out


def _relinked(node: Any, targets: Mapping[str, str]) -> Any:
    """`node` with every {"reference": <urn in targets>} rewritten; the same object when nothing changes."""
    if isinstance(node, dict):
        ref = node.get("reference")
        fresh = {k: _relinked(v, targets) for k, v in node.items()}
        if isinstance(ref, str) and ref in targets:
            fresh["reference"] = targets[ref]
        return node if all(fresh[k] is node[k] for k in node) else fresh
    if isinstance(node, list):
        items = [_relinked(v, targets) for v in node]
        return node if all(a is b for a, b in zip(items, node, strict=True)) else items
    return node


def _full_url_index(entries: Sequence[Any]) -> dict[str, str | None]:
    """fullUrl → the patient key it stands for; None for a fullUrl of an entry that is not a Patient."""
    index: dict[str, str | None] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("fullUrl"), str):
            continue
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            index[entry["fullUrl"]] = _own_key(resource, entry["fullUrl"]).patient
        else:
            index.setdefault(entry["fullUrl"], None)
    return index


def _own_key(patient: Resource, full_url: Any) -> _Link:
    if has_id(patient):
        return _Link(f"Patient/{patient['id']}")
    if isinstance(full_url, str) and full_url:
        match = _REST_REF.search(full_url)
        # An absolute fullUrl ".../Patient/7" says the id; a urn:uuid stays the key, used consistently.
        return _Link(f"Patient/{match[2]}" if match and match[1] == "Patient" else full_url)
    return _Link(None, ".id: missing (a Patient without id or fullUrl cannot be referenced)")


def _patient_link(resource: Resource, full_url: Any, index: Mapping[str, str | None]) -> _Link:
    """The patient a used resource belongs to: itself for a Patient, else its `subject` / `patient`."""
    rtype = resource["resourceType"]
    if rtype == "Patient":
        return _own_key(resource, full_url)
    name = next((n for n in ("subject", "patient") if n in resource), _PATIENT_ELEMENT.get(rtype, "subject"))
    ref = resource.get(name)
    if ref is None:
        return _Link(None, f".{name}: missing")
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str) or not ref["reference"]:
        return _Link(None, f".{name}.reference: missing (only a literal reference can name the patient)")
    key = _resolve(ref["reference"], ref.get("type"), index)
    if key is None:
        return _Link(None, f".{name}: not a Patient reference ({_shown(ref['reference'])})")
    return _Link(key)


def _resolve(reference: str, declared_type: Any, index: Mapping[str, str | None]) -> str | None:
    if reference in index:
        return index[reference]
    match = _REST_REF.search(reference)
    if match:
        return f"Patient/{match[2]}" if match[1] == "Patient" else None
    # A urn:uuid not in this Bundle: the Patient lives elsewhere; the urn is the only name it has here.
    if reference.startswith("urn:") and declared_type in (None, "Patient"):
        return reference
    # A transaction's conditional reference ("Patient?identifier=…") names a patient the server will find.
    if reference.startswith("Patient?"):
        return reference
    return None  # "#contained", a bare id, a non-RESTful URL: no patient we could match


# ----------------------------------------------------------------------------------------------------------
# Reading entries


def _duplicate_key(resource: Resource) -> str | None:
    return f"{resource['resourceType']}/{resource['id']}" if has_id(resource) else None


@dataclass(slots=True)
class _Reader:
    """Accumulates one Bundle's entries (mutable, private to `read_bundle`)."""

    full_urls: Mapping[str, str | None]
    groups: dict[str, list[Resource]] = field(default_factory=dict)
    # "Type/id" -> the accepted copies, each with its patient
    copies: dict[str, list[tuple[str, Resource]]] = field(default_factory=dict)
    conflicts: dict[str, dict[str, None]] = field(default_factory=dict)  # patient -> ordered set of "Type/id"
    issues: list[InputIssue] = field(default_factory=list)
    shared: list[Resource] = field(default_factory=list)
    ignored: int = 0
    invalid: int = 0
    unlinked: int = 0
    empty: int = 0

    def read(self, i: int, entry: Any) -> None:
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict):
            self._reject("Bundle.entry", f"{where}: not a JSON object")
            return
        resource = entry.get("resource")
        if resource is None:  # e.g. a DELETE of a transaction: nothing to read
            self.empty += 1
            return
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(rtype, str) or not rtype:
            what = ".resourceType: missing" if isinstance(resource, dict) else ": not a JSON object"
            self._reject("resource", f"{where}.resource{what}")
        elif rtype in SHARED_TYPES:
            error = _validation_error(resource, f"{where}.resource")
            if error is None:
                self.shared.append(resource)
            else:
                self._reject(rtype, error)
        elif rtype not in USED_TYPES:
            self.ignored += 1
        elif not self._is_known_copy(resource):
            self._read_used(resource, entry.get("fullUrl"), f"{where}.resource")

    def _read_used(self, resource: Resource, full_url: Any, where: str) -> None:
        error = _validation_error(resource, where)
        if error is not None:
            self._reject(resource["resourceType"], error)
            return
        link = _patient_link(resource, full_url, self.full_urls)
        if link.patient is None:
            self.unlinked += 1
            self.issues.append(InputIssue("invalid-value", resource["resourceType"], where + link.problem))
            return
        self._add(link.patient, resource)

    def _reject(self, what: str, detail: str) -> None:
        self.invalid += 1
        self.issues.append(InputIssue("invalid-value", what, detail))

    def _is_known_copy(self, resource: Resource) -> bool:
        """True for an identical copy of an accepted resource (DQ-06: merged, and not validated again)."""
        key = _duplicate_key(resource)
        if key is None or key not in self.copies:
            return False
        mine = canonical(resource)
        return any(canonical(copy) == mine for _, copy in self.copies[key])

    def _add(self, patient: str, resource: Resource) -> None:
        self.groups.setdefault(patient, []).append(resource)
        key = _duplicate_key(resource)
        if key is None:
            return
        earlier = self.copies.setdefault(key, [])
        earlier.append((patient, resource))
        if len(earlier) > 1:
            # Identical copies never get here: every patient holding a differing copy has a conflict.
            for holder, _ in earlier:
                self.conflicts.setdefault(holder, {})[key] = None

    def why_empty(self, entries: int) -> str:
        counts = [
            (self.invalid, "invalid"),
            (self.unlinked, "without a patient link"),
            (self.ignored, "of types the rules do not use"),
            (self.empty, "without a resource"),
            (len(self.shared), "without a patient of their own (Medication)"),
        ]
        said = ", ".join(f"{n} {what}" for n, what in counts if n)
        first = f"; first problem: {self.issues[0].detail}" if self.issues else ""
        total = f"{entries} {_plural(entries, 'entry', 'entries')}"
        return f"Bundle has no patient-linked resources ({total}: {said}){first}"

    def result(self) -> ParsedBundle:
        return ParsedBundle(
            patients=tuple(PatientResources(p, tuple(rs)) for p, rs in self.groups.items()),
            issues=tuple(self.issues),
            duplicate_conflicts={p: tuple(keys) for p, keys in self.conflicts.items()},
            ignored=self.ignored,
            shared=tuple(self.shared),
        )
