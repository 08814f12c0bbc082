"""Outcomes of one evaluation: the assessment, recommendations and issues of contract.md §3."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RulesetInfo:
    name: str
    version: str
    digest: str


@dataclass(frozen=True, slots=True)
class Recommendation:
    code: str
    rule: str
    indicator: str
    summary: str
    detail: str
    evidence: tuple[str, ...]
    citation: str
    activity: str | None = None  # CarePlan activity kind (ServiceRequest | MedicationRequest) or None
    lesion: str | None = None
    source_url: str | None = None
    explanation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Issue:
    code: str
    input: str
    rules: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class EvaluationOutcome:
    """What the rules concluded for one patient, before rendering to FHIR and cards."""

    patient: str
    assessment: dict[str, Any]
    recommendations: tuple[Recommendation, ...]
    issues: tuple[Issue, ...]
    derived: dict[str, Any]
