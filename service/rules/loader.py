"""Reads the rule files, checks them against the schema, resolves settings and orders rules into stages."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from service.rules.compile import compile_ruleset
from service.rules.conditions import Condition, ConditionError, Scalar, facts_of, parse
from service.rules.model import Activity, Derivation, Outcome, Part, Rule, RuleSet

MANIFEST = "ruleset.yaml"


class RuleFileError(ValueError):
    """The rule files are invalid; the message names the file and the place."""


def default_rules_dir() -> Path:
    return Path(str(resources.files("service.rules") / "files"))


def _schema() -> dict[str, Any]:
    text = (resources.files("service.rules") / "schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{path.name}: not valid YAML: {exc}") from exc


def load_ruleset(directory: Path, settings: Mapping[str, Scalar]) -> RuleSet:
    """Load and check every rule file of `directory`; raise RuleFileError on the first problem found."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise RuleFileError(f"{directory}: no {MANIFEST}")
    manifest = _read_yaml(manifest_path)
    if not isinstance(manifest, dict) or not {"name", "version"} <= manifest.keys():
        raise RuleFileError(f"{MANIFEST}: needs 'name' and 'version'")
    files = sorted(p for p in directory.glob("*.yaml") if p.name != MANIFEST)
    if not files:
        raise RuleFileError(f"{directory}: no rule files")
    validator = jsonschema.Draft202012Validator(_schema())
    sources = {p.name: p.read_text(encoding="utf-8") for p in [manifest_path, *files]}
    rules: list[Rule] = []
    for path in files:
        data = _read_yaml(path)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path)
            raise RuleFileError(f"{path.name}: {where or '(top)'}: {errors[0].message}")
        for index, raw in enumerate(data["rules"]):
            try:
                rules.append(_build_rule(raw, data["area"], settings))
            except ConditionError as exc:
                raise RuleFileError(f"{path.name}: rules/{index} ({raw.get('id')}): {exc}") from exc
    _check_unique(rules)
    ruleset = RuleSet(
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        digest=digest_of(sources),
        rules=tuple(rules),
        stages=order_stages(rules),
        sources=sources,
        closed_world=frozenset(manifest.get("closed_world") or ()),
    )
    try:
        compile_ruleset(ruleset)
    except ConditionError as exc:
        raise RuleFileError(f"a condition cannot be compiled: {exc}") from exc
    return ruleset


def digest_of(sources: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode())
        h.update(b"\0")
        h.update(sources[name].encode())
        h.update(b"\0")
    return f"sha256:{h.hexdigest()}"


def _build_rule(raw: dict[str, Any], area: str, settings: Mapping[str, Scalar]) -> Rule:
    derive = None
    if "derive" in raw:
        d = raw["derive"]
        derive = Derivation(
            fact=d["fact"],
            cases=tuple((c["value"], parse(c["when"], settings)) for c in d["cases"]),
            default=d.get("default"),
            because=tuple(tuple(c.get("because", ())) for c in d["cases"]),
        )
    return Rule(
        id=raw["id"],
        title=raw["title"],
        citation=raw["citation"],
        level=raw["level"],
        area=area,
        url=raw.get("url"),
        derive=derive,
        outcomes=tuple(_build_outcome(o, settings, raw["level"]) for o in raw.get("outcomes", [])),
        issue_only=raw.get("issue_only"),
        thresholds=tuple(raw.get("thresholds", [])),
        after=tuple(raw.get("after", [])),
        missing_detail=tuple((str(k), str(v)) for k, v in (raw.get("missing_detail") or {}).items()),
    )


def _build_outcome(raw: dict[str, Any], settings: Mapping[str, Scalar], level: str) -> Outcome:
    activity = None
    if "activity" in raw:
        a = raw["activity"]
        enabled = bool(settings[a["setting"]]) if "setting" in a else True
        if "setting" in a and a["setting"] not in settings:
            raise ConditionError(f"unknown setting {a['setting']!r}")
        if enabled:
            unless = parse(a["unless"], settings) if "unless" in a else None
            activity = Activity(kind=a["kind"], unless=unless)
    return Outcome(
        code=raw["code"],
        indicator=raw["indicator"],
        when=parse(raw["when"], settings),
        summary=raw["summary"].strip(),
        detail=raw.get("detail", "").strip(),
        thresholds=tuple(raw.get("thresholds", [])),
        conflicts=tuple(raw.get("conflicts", [])),
        indicator_when=tuple((parse(i["when"], settings), i["indicator"]) for i in raw.get("indicator_when", [])),
        activity=activity,
        lists_other_recommendations=bool(raw.get("lists_other_recommendations", False)),
        level=raw.get("level", level),
    )


def _check_unique(rules: Iterable[Rule]) -> None:
    seen: set[str] = set()
    setters: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleFileError(f"rule id {rule.id} is defined twice")
        seen.add(rule.id)
        if rule.derive:
            if rule.derive.fact in setters:
                raise RuleFileError(f"fact {rule.derive.fact} is derived by two rules")
            setters.add(rule.derive.fact)


def part_conditions(part: Part) -> list[Condition]:
    rule = part.rule
    if part.kind == "derive":
        assert rule.derive is not None
        return [cond for _, cond in rule.derive.cases]
    conds: list[Condition] = []
    for o in rule.outcomes:
        conds.append(o.when)
        conds.extend(c for c, _ in o.indicator_when)
        if o.activity and o.activity.unless:
            conds.append(o.activity.unless)
    return conds


def order_stages(rules: Iterable[Rule]) -> tuple[tuple[Part, ...], ...]:
    """Group rule parts into stages: a part runs after every part that derives a fact it reads, and a rule's
    outcomes after the outcomes of the rules it names in `after`."""
    parts = [Part(r, "derive") for r in rules if r.derive] + [Part(r, "outcomes") for r in rules if r.outcomes]
    setter = {p.rule.derive.fact: p for p in parts if p.kind == "derive" and p.rule.derive}
    outcome_parts = {p.rule.id: p for p in parts if p.kind == "outcomes"}
    stage: dict[str, int] = {}

    def stage_of(part: Part, trail: tuple[str, ...]) -> int:
        if part.key in stage:
            return stage[part.key]
        if part.key in trail:
            raise RuleFileError(f"derived facts depend on each other in a cycle: {' → '.join(trail)}")
        deps = [setter[f] for f in {f for c in part_conditions(part) for f in facts_of(c) if f in setter}]
        if part.kind == "outcomes":
            unknown = [r for r in part.rule.after if r not in outcome_parts]
            if unknown:
                raise RuleFileError(f"{part.rule.id}: 'after' names rules without outcomes: {unknown}")
            deps += [outcome_parts[r] for r in part.rule.after]
        level = 1 + max((stage_of(dep, (*trail, part.key)) for dep in deps), default=-1)
        stage[part.key] = level
        return level

    for part in parts:
        stage_of(part, ())
    count = 1 + max(stage.values(), default=0)
    return tuple(tuple(p for p in parts if stage[p.key] == k) for k in range(count))
