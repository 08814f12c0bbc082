"""Loaded rules: the in-memory form of the rule files (frozen, engine-independent)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.rules.conditions import Condition, Scalar


@dataclass(frozen=True, slots=True)
class Activity:
    kind: str
    unless: Condition | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    code: str
    indicator: str
    when: Condition
    summary: str
    detail: str = ""
    thresholds: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    indicator_when: tuple[tuple[Condition, str], ...] = ()
    activity: Activity | None = None
    lists_other_recommendations: bool = False
    level: str = "patient"  # patient | lesion (defaults to the rule's level)


@dataclass(frozen=True, slots=True)
class Derivation:
    fact: str
    cases: tuple[tuple[Scalar, Condition], ...]
    default: Scalar | None = None
    # per case (same index): inputs whose absence is why that case gives its value (an `unknown` class because
    # the exact count is missing); when the case decides and such an input is not known, it is reported naming
    # the rule (clinical-rules.md §2.4 "each unknown … adds a missing-input issue naming OMD-CLASS")
    because: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    title: str
    citation: str
    level: str
    area: str
    url: str | None = None
    derive: Derivation | None = None
    outcomes: tuple[Outcome, ...] = ()
    issue_only: str | None = None
    thresholds: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # rules whose outcomes this rule's outcomes read (their texts name them)
    missing_detail: tuple[tuple[str, str], ...] = ()  # (input, what the rule needs) for its missing-input issues


@dataclass(frozen=True, slots=True)
class Part:
    """What one stage evaluates of a rule: its derivation or its outcomes (never both: outcomes may read the
    rule's own derived fact)."""

    rule: Rule
    kind: str  # "derive" | "outcomes"

    @property
    def key(self) -> str:
        return f"{self.rule.id}:{self.kind}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    version: str
    digest: str
    rules: tuple[Rule, ...]
    stages: tuple[tuple[Part, ...], ...]
    sources: dict[str, str] = field(default_factory=dict)
    closed_world: frozenset[str] = frozenset()

    def rule(self, rule_id: str) -> Rule:
        return next(r for r in self.rules if r.id == rule_id)
