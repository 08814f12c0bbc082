"""Reading Observations: status filter, latest-per-(code, focus) selection, conflicts and invalid values
(fhir-mapping.md §2.1: the latest effective[x] wins; two different values on that date → conflicting)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from service.domain.facts import Fact, FactStatus, InputIssue, Scalar, known, unknown
from service.fhir.util import LOCAL, Resource, codings, effective_date, ref_id, rid

USABLE_STATUS = frozenset({"final", "amended", "corrected", "preliminary"})


class Invalid(ValueError):
    """A value outside its allowed set or type (DQ-04): reported and discarded."""


@dataclass(frozen=True, slots=True)
class Reading:
    value: Scalar
    effective: date | None
    source: str
    focus: str | None


@dataclass(frozen=True, slots=True)
class Selected:
    value: Scalar | None
    effective: date | None
    sources: tuple[str, ...]
    conflicting: bool


class ObsIndex(list[Resource]):
    """The patient's Observations, indexed once by every (system, code) of `Observation.code`."""

    def __init__(self, observations: Iterable[Resource]) -> None:
        super().__init__(observations)
        self._by: dict[tuple[str, str], list[Resource]] = {}
        for obs in self:
            for key in dict.fromkeys(codings(obs.get("code"))):
                self._by.setdefault(key, []).append(obs)
        self.memo: dict[str, Any] = {}

    def coded(self, system: str, codes: Iterable[str]) -> list[Resource]:
        """Observations with any of `codes` in `system`, in their original order."""
        found = {id(o): o for code in codes for o in self._by.get((system, code), ())}
        return [o for o in self if id(o) in found] if len(found) > 1 else list(found.values())

    def local(self, code: str) -> list[Resource]:
        return self._by.get((LOCAL, code), [])


def usable(obs: Resource) -> bool:
    return obs.get("status") in USABLE_STATUS


def focus_of(obs: Resource) -> str | None:
    focus = obs.get("focus")
    if isinstance(focus, list) and focus:
        return ref_id(focus[0])
    return None


def read_all(
    observations: Iterable[Resource],
    extract: Callable[[Resource], Scalar | None],
    name: str,
    issues: list[InputIssue],
) -> list[Reading]:
    """Apply `extract` to each usable Observation; an `Invalid` value becomes an invalid-value issue."""
    out: list[Reading] = []
    for obs in observations:
        if not usable(obs):
            continue
        try:
            value = extract(obs)
        except Invalid as exc:
            issues.append(InputIssue("invalid-value", name, f"{rid(obs)}: {exc}", ("DQ-04",)))
            continue
        if value is not None:
            out.append(Reading(value, effective_date(obs), rid(obs), focus_of(obs)))
    return out


def latest(readings: Iterable[Reading]) -> Selected | None:
    """The value on the latest date; several different values on that date → conflicting."""
    items = list(readings)
    if not items:
        return None
    newest = max((r.effective for r in items if r.effective), default=None)
    top = [r for r in items if r.effective == newest] if newest else items
    values = {_key(r.value) for r in top}
    sources = tuple(dict.fromkeys(r.source for r in top))
    if len(values) > 1:
        return Selected(None, newest, sources, True)
    return Selected(top[0].value, newest, sources, False)


def _key(value: Scalar) -> Any:
    return (type(value).__name__, value)


def by_focus(readings: Iterable[Reading]) -> dict[str | None, list[Reading]]:
    groups: dict[str | None, list[Reading]] = {}
    for r in readings:
        groups.setdefault(r.focus, []).append(r)
    return groups


def to_fact(name: str, selected: Selected | None, derived: bool = False) -> Fact:
    if selected is None:
        return unknown(name)
    if selected.conflicting:
        return Fact(name, None, FactStatus.CONFLICTING, selected.sources, selected.effective)
    assert selected.value is not None
    return known(name, selected.value, selected.sources, selected.effective, derived)


# --- value extractors --------------------------------------------------------------------------------------


def value_bool(obs: Resource) -> bool:
    value = obs.get("valueBoolean")
    if not isinstance(value, bool):
        raise Invalid("valueBoolean expected")
    return value


def value_int(obs: Resource) -> int:
    value = obs.get("valueInteger")
    if value is None and isinstance(obs.get("valueQuantity"), dict):
        value = obs["valueQuantity"].get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise Invalid("integer value expected")
    return int(value)


def value_code_in(allowed: Iterable[str], system: str) -> Callable[[Resource], str]:
    allowed_set = frozenset(allowed)

    def extract(obs: Resource) -> str:
        concept = obs.get("valueCodeableConcept")
        codes = [c.get("code") for c in (concept or {}).get("coding") or [] if c.get("system") == system]
        if not codes or codes[0] not in allowed_set:
            given = f"{codes[0]!r} " if codes else ""
            raise Invalid(f"value {given}must be one of {', '.join(sorted(allowed_set))}")
        return str(codes[0])

    return extract
