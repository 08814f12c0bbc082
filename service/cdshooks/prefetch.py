"""Prefetch values → resources, per key (cds-hooks.md §5), and the port for the FHIR-server fallback.

| value | meaning | here |
|---|---|---|
| absent | not filled | `missing` (the fallback may fetch it) |
| `null` | the query found nothing | no resources, never fetched |
| resource / searchset Bundle | the data | its resources |
| Bundle with a `next` link | one page of the data | `missing`: the rest must be fetched |
| OperationOutcome | the client's query failed | `missing` (R52) |
| `{"resource": …, "response": …}` | a Bundle entry (cqf-ruler) | unwrapped |
| a key we did not declare | another service's | ignored |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Resource = dict[str, Any]
_SENT = object()  # a key whose value was absent from the request


@dataclass(frozen=True, slots=True)
class Prefetched:
    resources: dict[str, list[Resource]] = field(default_factory=dict)  # key -> its resources ([] for null)
    missing: tuple[str, ...] = ()  # declared keys absent, failed or incomplete


class PrefetchFetcher(Protocol):
    """The FHIR-server fallback: resources for the `queries` (key -> relative URL) it could obtain.

    Keys it could not obtain are left out. It gets the Bearer token of `fhirAuthorization` and must use it
    only towards `server`; it must keep within its deadline (cds-hooks.md §10)."""

    async def fetch(
        self, server: str, authorization: Mapping[str, Any] | None, queries: Mapping[str, str]
    ) -> dict[str, list[Resource]]: ...


class NoFetcher:
    """No fallback yet: every absent key stays absent."""

    async def fetch(
        self, server: str, authorization: Mapping[str, Any] | None, queries: Mapping[str, str]
    ) -> dict[str, list[Resource]]:
        return {}


def read_prefetch(prefetch: Mapping[str, Any] | None, keys: Mapping[str, str]) -> Prefetched:
    """Each declared key read on its own; undeclared keys are ignored."""
    got: dict[str, list[Resource]] = {}
    missing: list[str] = []
    for key in keys:
        value = _unwrap((prefetch or {}).get(key, _SENT))
        resources = _resources(value)
        if resources is None:
            missing.append(key)
        else:
            got[key] = resources
    return Prefetched(got, tuple(missing))


def queries(keys: Mapping[str, str], missing: tuple[str, ...], patient_id: str) -> dict[str, str]:
    """The templates of the missing keys with `{{context.patientId}}` filled in (the only token we use)."""
    return {k: keys[k].replace("{{context.patientId}}", patient_id) for k in missing}


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict) and "resourceType" not in value and "resource" in value:
        return value["resource"]
    return value


def _resources(value: Any) -> list[Resource] | None:
    """The value's resources, [] for `null`; None when the key counts as missing."""
    if value is None:
        return []
    if value is _SENT or not isinstance(value, dict) or value.get("resourceType") == "OperationOutcome":
        return None
    if value.get("resourceType") != "Bundle":
        return [value] if isinstance(value.get("resourceType"), str) else None
    if any(isinstance(link, dict) and link.get("relation") == "next" for link in value.get("link") or []):
        return None
    entries = value.get("entry") or []
    resources = [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    # a search result that holds only an OperationOutcome with an error is a failed query (R52), not "no data"
    outcomes = [r for r in resources if r.get("resourceType") == "OperationOutcome"]
    if outcomes and len(outcomes) == len(resources) and any(_failed(o) for o in outcomes):
        return None
    return resources


def _failed(outcome: Resource) -> bool:
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in outcome.get("issue") or [])
