"""Runs a loaded ruleset over one patient's facts: stage by stage through the engine, then turns what fired
into recommendations and what was left open into issues (clinical-rules.md §1.1)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.domain.assessment import REPORTED_FACTS
from service.domain.catalogue import LESION_NOTES, PUBLIC_FACTS, label, public_name
from service.domain.facts import ISSUE_FOR_STATUS, Fact, FactStatus, InputIssue, PatientFacts, known
from service.domain.result import Issue, Recommendation
from service.rules.compile import compile_ruleset, parse_action, stage_name
from service.rules.conditions import Condition, Truth, facts_of, holding_atoms, truth, undecided_facts
from service.rules.engine import RulesEngine
from service.rules.model import Outcome, Part, Rule, RuleSet
from service.rules.texts import describe, render, show

TUMOR_BOARD = "For discussion at tumor board."


@dataclass(slots=True)
class RuleResults:
    recommendations: list[Recommendation] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    fired_rules: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Subject:
    key: int
    values: dict[str, Any]
    facts: Mapping[str, Fact]
    lesion: str | None = None


class RuleRunner:
    """Evaluates patients with one loaded ruleset. `evaluate` must run on the engine's owner thread."""

    def __init__(self, ruleset: RuleSet, engine: RulesEngine) -> None:
        self.ruleset = ruleset
        self.engine = engine
        engine.register(compile_ruleset(ruleset))
        self._stage_names = [stage_name(ruleset, k) for k in range(len(ruleset.stages))]
        self._fields = [stage_fields(parts) for parts in ruleset.stages]
        # what a rule says it needs when an input is missing (rule files `missing_detail`, clinical-rules wording)
        self._notes = {r.id: dict(r.missing_detail) for r in ruleset.rules if r.missing_detail}

    def evaluate(self, pf: PatientFacts) -> RuleResults:
        state = _State(pf, self._notes)
        for name, parts, fields in zip(self._stage_names, self.ruleset.stages, self._fields, strict=True):
            fired = self.engine.run(name, state.engine_facts(fields))
            hits = {(parse_action(a), k) for a, k in fired}
            for part in parts:
                if part.kind == "derive":
                    state.derive(part.rule, hits)
                else:
                    state.outcomes(part, hits)
            state.sync_lesions()  # facts derived in this stage reach the lesion subjects of the next ones
        return state.finish()


class _State:
    def __init__(self, pf: PatientFacts, notes: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.pf = pf
        self.notes = notes or {}
        values = {n: f.value for n, f in pf.facts.items() if f.usable}
        self.patient = _Subject(0, values, pf.facts)
        self.lesions = [_Subject(i + 1, {}, lesion.facts, lesion.condition) for i, lesion in enumerate(pf.lesions)]
        self.sync_lesions()
        self.recs: list[Recommendation] = []
        # (issue code, input) → (rules, detail, lesion-specific parts of the detail, what the rules need)
        self.issues: dict[tuple[str, str], tuple[list[str], str, list[str], list[str]]] = {}
        self.fired_rules: list[str] = []
        self.listing: set[tuple[str, str]] = set()
        # derived facts left open by their cases (clinical-rules §1.1) → the values they can still take
        self.open_values: dict[str, tuple[Any, ...]] = {}

    def sync_lesions(self) -> None:
        for s in self.lesions:
            s.values = {
                **self.patient.values,
                **{n: f.value for n, f in s.facts.items() if f.usable},
                "lesion_condition": s.lesion,
            }

    def engine_facts(self, fields: Mapping[str, frozenset[str]]) -> list[dict[str, Any]]:
        """Only the facts the stage's conditions read: durable-rules copies every fact as JSON per firing."""
        patient = fields["patient"]
        out = [{**_pick(self.patient.values, patient), "kind": "patient", "key": 0}]
        if fields["lesion"]:
            out.extend({**_pick(s.values, fields["lesion"]), "kind": "lesion", "key": s.key} for s in self.lesions)
        return out

    def fact(self, subject: _Subject, name: str) -> Fact | None:
        return subject.facts.get(name) or self.pf.facts.get(name)

    # --- derivations --------------------------------------------------------------------------------------
    def derive(self, rule: Rule, hits: set[tuple[tuple[str, int, str], int]]) -> None:
        assert rule.derive is not None
        key = f"{rule.id}:derive"
        cases = rule.derive.cases
        true_idx = [i for i in range(len(cases)) if ((key, i, "T"), 0) in hits]
        open_idx = [
            i
            for i in range(len(cases))
            if ((key, i, "P"), 0) in hits and i not in true_idx and self._could_hold(cases[i][1], self.patient.values)
        ]
        name = rule.derive.fact
        if true_idx:
            value, cond = cases[true_idx[0]]
            fact = known(name, value, _sources(self._used(self.patient, cond)))
            because = rule.derive.because[true_idx[0]] if rule.derive.because else ()
            for input_name in because:  # the value stands for "undecided because this input is open"
                held = self.fact(self.patient, input_name)
                if held is None or not held.usable:
                    self._report_open(rule.id, self.patient, input_name)
        else:
            roots: list[str] = []
            if open_idx:
                cond = cases[open_idx[0]][1]
                # An intermediate fact raises no issue itself: a rule whose outcome needs it reports its open inputs
                # (`_block` → `_roots` follows `missing`), and a rule already false for known facts raises nothing
                # (clinical-rules §1.1). A fact the assessment reports (omdState, omdClass…) is an outcome itself.
                if name in REPORTED_FACTS:
                    self._block(rule.id, self.patient, cond)
                roots = [r for f in undecided_facts(cond, self.patient.values) for r, _ in self._roots(self.patient, f)]
            # A default stands only when no case could still hold; with a case left open by an unknown or
            # conflicting input the fact is open too, so the rules that read it are undecided and name that input
            # (clinical-rules §1.1), and the assessment reports the default (`unknown`).
            default = rule.derive.default
            fact = (
                known(name, default)
                if default is not None and not open_idx
                else Fact(name, None, FactStatus.UNKNOWN, derived=True, missing=tuple(dict.fromkeys(roots)))
            )
            if default is not None and open_idx:  # what the open fact can still turn out to be
                self.open_values[name] = (*dict.fromkeys(cases[i][0] for i in open_idx), default)
        self.pf.put(fact)
        if fact.usable:
            self.patient.values[name] = fact.value

    # --- outcomes -----------------------------------------------------------------------------------------
    def outcomes(self, part: Part, hits: set[tuple[tuple[str, int, str], int]]) -> None:
        key = part.key
        for index, outcome in enumerate(part.rule.outcomes):
            subjects = [self.patient] if outcome.level == "patient" else self.lesions
            true, possible = (key, index, "T"), (key, index, "P")
            for subject in subjects:
                if (true, subject.key) in hits:
                    self._fire(part.rule, outcome, subject)
                elif (possible, subject.key) in hits:
                    self._block(part.rule.id, subject, outcome.when)

    def _fire(self, rule: Rule, outcome: Outcome, subject: _Subject) -> None:
        values = subject.values
        # an indicator or activity choice left open by an unknown fact keeps the default and names that fact; each
        # condition is evaluated once, and none after the one that decides the indicator
        indicator = outcome.indicator
        for cond, ind in outcome.indicator_when:
            decided = truth(cond, values)
            if decided is Truth.TRUE:
                indicator = ind
                break
            if decided is Truth.UNDECIDED:
                self._block(rule.id, subject, cond)
        activity = None
        if outcome.activity:
            condition = outcome.activity.unless
            unless = truth(condition, values) if condition is not None else Truth.FALSE
            if condition is not None and unless is Truth.UNDECIDED:
                self._block(rule.id, subject, condition)
            if unless is not Truth.TRUE:
                activity = outcome.activity.kind
        for name in outcome.conflicts:
            fact = self.fact(subject, name)
            if fact is not None and fact.status is FactStatus.CONFLICTING:
                # a conflict that stands for other inputs (DQ-06's differing copies) names them
                for target in fact.missing or (name,):
                    self._add_issue("conflicting-input", target, rule.id, f"{label(target)}: conflicting values")
        used = self._used(subject, outcome.when)
        evidence = sorted(_sources(used))  # a stable order, whatever the Bundle order (contract.md §3)
        if subject.lesion:
            evidence = [subject.lesion, *[e for e in evidence if e != subject.lesion]]
        inputs = _inputs(used)
        thresholds = list(outcome.thresholds or rule.thresholds)
        self.recs.append(
            Recommendation(
                code=outcome.code,
                rule=rule.id,
                indicator=indicator,
                summary=render(outcome.summary, values),
                detail=_detail(
                    render(outcome.detail, values), inputs, thresholds, rule, self._changes(subject, outcome)
                ),
                evidence=tuple(evidence),
                citation=rule.citation,
                activity=activity,
                lesion=subject.lesion,
                source_url=rule.url,
                explanation={k: v for k, v in (("inputs", inputs), ("thresholds", thresholds)) if v},
            )
        )
        if subject.lesion is None:  # later rules' texts may name it ("fired:<code>", rules with `after`)
            self.patient.values[f"fired:{outcome.code}"] = True
        if outcome.lists_other_recommendations:
            self.listing.add((rule.id, outcome.code))
        if rule.id not in self.fired_rules:
            self.fired_rules.append(rule.id)

    # --- issues -------------------------------------------------------------------------------------------
    def _could_hold(self, cond: Condition, values: Mapping[str, Any]) -> bool:
        """False when `cond` is false whatever value its open derived facts turn out to have (omdState open
        between `oligometastatic` and `unknown` cannot make a `polymetastatic` condition true)."""
        if not self.open_values:
            return True
        names = [n for n in _names(cond) if n in self.open_values and values.get(n) is None]
        if not names:
            return True
        for combination in itertools.product(*(self.open_values[n] for n in names)):
            if truth(cond, {**values, **dict(zip(names, combination, strict=True))}) is not Truth.FALSE:
                return True
        return False

    def _block(self, rule_id: str, subject: _Subject, cond: Condition) -> None:
        if not self._could_hold(cond, subject.values):
            return
        for name in undecided_facts(cond, subject.values):
            self._report_open(rule_id, subject, name)

    def _report_open(self, rule_id: str, subject: _Subject, name: str) -> None:
        """An issue naming `rule_id` for each §1.2 input behind the open fact `name`."""
        for root, status in self._roots(subject, name):
            code = ISSUE_FOR_STATUS[status]
            where = None
            if subject.lesion:
                note = self._note(subject, root, status)
                where = f"lesion {subject.lesion}" + (f": {note}" if note else "")
            # what the rule needs, for an input it lacks or holds too old (clinical-rules §6.2: missing or stale CrCl)
            need = self.notes.get(rule_id, {}).get(root) if code in ("missing-input", "stale-input") else None
            self._add_issue(code, root, rule_id, f"{label(root)}: {status.value}", where, need)

    def _roots(self, subject: _Subject, name: str, depth: int = 0) -> list[tuple[str, FactStatus]]:
        """The §1.2 facts to report for an open fact: itself when it is one, and the inputs it was derived from."""
        fact = self.fact(subject, name)
        status = fact.status if fact is not None and fact.status is not FactStatus.KNOWN else FactStatus.UNKNOWN
        public = public_name(name)
        keep = public in PUBLIC_FACTS or (depth == 0 and not (fact and fact.missing))
        own: list[tuple[str, FactStatus]] = [(public, status)] if keep else []
        if fact is None or not fact.missing or depth > 3:
            return own
        roots = [r for m in fact.missing for r in self._roots(subject, m, depth + 1)]
        # a working fact standing for the same §1.2 input (life_expectancy_6m → life_expectancy) reports it once,
        # with the input's own status (conflicting, stale) rather than "unknown"
        found = {name for name, _ in roots}
        own = [o for o in own if o[0] not in found]
        return list(dict.fromkeys(own + roots)) or [(public, status)]

    def _changes(self, subject: _Subject, outcome: Outcome) -> list[str]:
        found = []
        for atom in holding_atoms(outcome.when, subject.values):
            text = describe(label(atom.fact), atom.op, atom.value, subject.values.get(atom.fact))
            if text not in found:
                found.append(text)
        return found

    def _note(self, subject: _Subject, root: str, status: FactStatus) -> str | None:
        """What exactly is open for this lesion, where a lesion fact says it (the missing Mirels components)."""
        fact = subject.facts.get(LESION_NOTES.get(root, ""))
        if status is not FactStatus.UNKNOWN or fact is None or not fact.usable:
            return None
        return f"missing {fact.value}"

    def _add_issue(
        self, code: str, name: str, rule_id: str, detail: str, lesion: str | None = None, need: str | None = None
    ) -> None:
        """One entry per (code, input): every rule it blocks, the first detail, each lesion concerned, and what
        the rules say they need."""
        rules, first, lesions, needs = self.issues.get((code, name), ([], detail, [], []))
        if rule_id not in rules:
            rules.append(rule_id)
        if lesion and lesion not in lesions:
            lesions.append(lesion)
        if need and need not in needs:
            needs.append(need)
        self.issues[(code, name)] = (rules, first, lesions, needs)

    # --- explanation --------------------------------------------------------------------------------------
    def _used(self, subject: _Subject, cond: Condition) -> list[Fact]:
        """The usable facts `cond` reads, in the order it names them."""
        return [f for f in (self.fact(subject, n) for n in _names(cond)) if f is not None and f.usable]

    def finish(self) -> RuleResults:
        # one recommendation per rule, code and subject (clinical-rules §1.1), also when differing copies of one
        # Condition id are both kept as lesions (DQ-06): the first one stands
        unique = {(r.rule, r.code, r.lesion): r for r in reversed(self.recs)}
        recs = sorted(unique.values(), key=lambda r: (r.rule, r.code, r.lesion or ""))
        recs = [_with_others(r, recs) if (r.rule, r.code) in self.listing else r for r in recs]
        # what the fact readers found first: their detail says what exactly is wrong with the input, and stands
        # when a rule reports the same (code, input)
        issues = [_input_issue(i) for i in self.pf.issues]
        issues += [
            Issue(code, name, tuple(rules), _issue_detail(detail, lesions, needs))
            for (code, name), (rules, detail, lesions, needs) in self.issues.items()
        ]
        # a missing input that no rule needs raises nothing (clinical-rules §1.1): a reader's note about one (the
        # equivocal HER2 "ISH result needed") stands only beside a rule that needs the input
        merged = [i for i in _merge_issues(issues) if i.code != "missing-input" or i.rules]
        return RuleResults(recs, merged, self.fired_rules)


# (condition, its fact names once each): conditions belong to a loaded ruleset and never change; the identity
# check keeps an id reused after a reload from answering for another condition.
_NAMES: dict[int, tuple[Condition, tuple[str, ...]]] = {}


def _names(cond: Condition) -> tuple[str, ...]:
    held = _NAMES.get(id(cond))
    if held is not None and held[0] is cond:
        return held[1]
    names = tuple(dict.fromkeys(facts_of(cond)))
    _NAMES[id(cond)] = (cond, names)
    return names


def _issue_detail(detail: str, lesions: list[str], needs: list[str]) -> str:
    text = f"{detail} ({'; '.join(lesions)})" if lesions else detail
    return f"{text} — {'; '.join(needs)}" if needs else text


def _sources(used: list[Fact]) -> list[str]:
    out: list[str] = []
    for fact in used:
        out.extend(s for s in fact.sources if s not in out)
    return out


def _inputs(used: list[Fact]) -> dict[str, dict[str, Any]]:
    """Each input used: value, and where known its date, derivation and source resources."""
    out: dict[str, dict[str, Any]] = {}
    for f in used:
        info: dict[str, Any] = {"value": f.value}
        if f.effective:
            info["date"] = f.effective.isoformat()
        if f.derived:
            info["derived"] = True
        if f.sources:
            info["sources"] = sorted(f.sources)
        out[f.name] = info
    return out


def _pick(values: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {n: values[n] for n in names if n in values}


def stage_fields(parts: tuple[Part, ...]) -> dict[str, frozenset[str]]:
    """Per fact kind, the fact names the conditions of these parts read."""
    fields: dict[str, set[str]] = {"patient": set(), "lesion": set()}
    for part in parts:
        if part.kind == "derive":
            assert part.rule.derive is not None
            for _, cond in part.rule.derive.cases:
                fields[part.rule.level].update(facts_of(cond))
        for outcome in part.rule.outcomes if part.kind == "outcomes" else ():
            fields[outcome.level].update(facts_of(outcome.when))
    return {kind: frozenset(names) for kind, names in fields.items()}


def _input_issue(i: InputIssue) -> Issue:
    return Issue(i.code, i.input, i.rules, i.detail)


JOINED_DETAILS = frozenset({"invalid-value", "derived-input"})


def _merge_issues(issues: list[Issue]) -> list[Issue]:
    """One entry per (issue code, input), listing every rule (clinical-rules.md §1.1); invalid and derived values
    keep each finding in the detail ("; "-separated: every offending value, every lesion whose value was derived),
    other codes the first detail."""
    merged: dict[tuple[str, str], Issue] = {}
    for issue in issues:
        key = (issue.code, issue.input)
        old = merged.get(key)
        if old is None:
            merged[key] = issue
            continue
        rules = old.rules + tuple(r for r in issue.rules if r not in old.rules)
        detail = old.detail
        if issue.code in JOINED_DETAILS and issue.detail not in old.detail.split("; "):
            detail = f"{old.detail}; {issue.detail}"
        merged[key] = Issue(old.code, old.input, rules, detail)
    return sorted(merged.values(), key=lambda i: (i.code, i.input))


def _detail(text: str, inputs: dict[str, dict[str, Any]], thresholds: list[str], rule: Rule, changes: list[str]) -> str:
    lines = [text] if text else []
    if inputs:
        lines.append("\n**Inputs used**")
        for name, info in inputs.items():
            extra = [x for x in (info.get("date"), "derived" if info.get("derived") else None) if x]
            src = f" — {', '.join(info['sources'])}" if info.get("sources") else ""
            when = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"- {label(name)}: **{show(info['value'])}**{when}{src}")
    if thresholds:
        lines.append("\n**Thresholds**")
        lines.extend(f"- {t}" for t in thresholds)
    if changes:
        lines.append("\n**What would change this**: the recommendation no longer applies if any of these stops holding")
        lines.extend(f"- {c}" for c in changes)
    lines.append(f"\n**Source:** {rule.citation} (rule {rule.id})")
    lines.append(f"\n{TUMOR_BOARD}")
    return "\n".join(lines)


def _with_others(rec: Recommendation, recs: list[Recommendation]) -> Recommendation:
    others = [r for r in recs if r.rule != rec.rule]  # every other recommendation, data conflicts too (§1.1)
    if not others:
        return rec
    listed = "\n".join(f"- {r.summary} ({r.rule})" for r in others)
    head, sep, tail = rec.detail.partition("\n**Inputs used**")
    detail = f"{head}\n\n**Also for discussion**\n{listed}\n{sep}{tail}" if sep else f"{rec.detail}\n{listed}"
    return Recommendation(**{**_fields(rec), "detail": detail})


def _fields(rec: Recommendation) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in rec.__dataclass_fields__}
