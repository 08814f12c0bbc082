"""Rule parts → durable-rules JSON rulesets (one per stage)."""

from __future__ import annotations

from typing import Any

from service.rules.conditions import Condition, durable_clauses, facts_of
from service.rules.engine import sink_rules
from service.rules.model import Part, RuleSet


def action_name(part: Part, index: int, mode: str) -> str:
    return f"{part.key}|{index}|{mode}"


def parse_action(name: str) -> tuple[str, int, str]:
    key, index, mode = name.split("|")
    return key, int(index), mode


def stage_name(ruleset: RuleSet, stage: int) -> str:
    return f"{ruleset.name}-{ruleset.digest[7:19]}-s{stage}"


def _conditions(part: Part) -> list[tuple[str, Condition]]:
    if part.kind == "derive":
        assert part.rule.derive is not None
        return [(part.rule.level, cond) for _, cond in part.rule.derive.cases]
    return [(o.level, o.when) for o in part.rule.outcomes]


def compile_stage(parts: tuple[Part, ...], closed_world: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One durable ruleset. A condition on closed-world facts only is never undecided: it gets no "P" rules,
    which saves an engine callback per firing."""
    body: dict[str, Any] = dict(sink_rules())
    for part in parts:
        for index, (level, cond) in enumerate(_conditions(part)):
            modes = ("T",) if set(facts_of(cond)) <= closed_world else ("T", "P")
            for mode in modes:
                for n, clause in enumerate(durable_clauses(cond, mode)):
                    body[f"{part.rule.id}#{part.kind}#{index}${mode}{n}"] = {
                        "all": [{"m": {"$and": [{"kind": level}, *clause]}}],
                        "run": action_name(part, index, mode),
                    }
    return body


def compile_ruleset(ruleset: RuleSet) -> dict[str, dict[str, Any]]:
    return {
        stage_name(ruleset, k): compile_stage(parts, ruleset.closed_world) for k, parts in enumerate(ruleset.stages)
    }
