"""Facts: what the rules know about one patient, each with its status and provenance.

A fact is three-valued (clinical-rules.md §1.1): `known`, or not usable because it is `unknown`, `stale`
(older than its window) or `conflicting`. Rules only ever see the values of known facts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

Scalar = bool | int | float | str


class FactStatus(enum.StrEnum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    STALE = "stale"
    CONFLICTING = "conflicting"


ISSUE_FOR_STATUS = {
    FactStatus.UNKNOWN: "missing-input",
    FactStatus.STALE: "stale-input",
    FactStatus.CONFLICTING: "conflicting-input",
}


@dataclass(frozen=True, slots=True)
class Fact:
    """One input of the rules, with where it came from."""

    name: str
    value: Scalar | None
    status: FactStatus = FactStatus.KNOWN
    sources: tuple[str, ...] = ()
    effective: date | None = None
    derived: bool = False
    # For an unknown derived fact: the underlying facts whose absence made it unknown; for a conflict standing for
    # other inputs (DQ-06's differing copies): the inputs it made conflicting.
    missing: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.status is FactStatus.KNOWN and self.value is not None


def known(
    name: str,
    value: Scalar,
    sources: Iterable[str] = (),
    effective: date | None = None,
    derived: bool = False,
) -> Fact:
    return Fact(name, value, FactStatus.KNOWN, tuple(sources), effective, derived)


def unknown(name: str, missing: Iterable[str] = (), sources: Iterable[str] = ()) -> Fact:
    return Fact(name, None, FactStatus.UNKNOWN, tuple(sources), missing=tuple(missing))


@dataclass(frozen=True, slots=True)
class InputIssue:
    """A finding about the input itself (invalid value, derived value, unsupported resource...)."""

    code: str
    input: str
    detail: str
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LesionFacts:
    """One active metastasis (a SecondaryCancerCondition) with its lesion-level facts."""

    condition: str
    organ: str
    site_class: str
    facts: Mapping[str, Fact]
    mirels_score: int | None = None
    fracture: str | None = None


@dataclass(slots=True)
class PatientFacts:
    """Everything known about one patient on the evaluation date."""

    patient: str
    as_of: date
    facts: dict[str, Fact] = field(default_factory=dict)
    lesions: list[LesionFacts] = field(default_factory=list)
    issues: list[InputIssue] = field(default_factory=list)
    cancer_conditions: list[str] = field(default_factory=list)
    organs: list[str] = field(default_factory=list)

    def put(self, fact: Fact) -> None:
        self.facts[fact.name] = fact

    def get(self, name: str) -> Fact:
        return self.facts.get(name) or unknown(name)

    def value(self, name: str) -> Scalar | None:
        fact = self.facts.get(name)
        return fact.value if fact is not None and fact.usable else None
