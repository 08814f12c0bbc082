"""The condition language of the rule files, its three-valued meaning and its durable-rules form.

A condition is data:
    {all: [c, ...]} | {any: [c, ...]} | {not: c}
    {fact: value}                     equality
    {fact: {op: value, ...}}          op in eq, ne, lt, lte, gt, gte, in, nin, known (several ops = all)
A value may be {setting: name}, resolved from the settings when the rules are loaded.

Kleene logic (clinical-rules.md §1.1): an atom on a fact that is not known is UNDECIDED, except `known`, which
is always decided. A rule fires when its condition is TRUE; when it is UNDECIDED the facts that leave it open are
reported as missing, stale or conflicting inputs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Scalar = bool | int | float | str
Values = Mapping[str, Any]

COMPARISONS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "known")


class Truth(enum.Enum):
    TRUE = "T"
    FALSE = "F"
    UNDECIDED = "U"


class ConditionError(ValueError):
    """A condition in a rule file is malformed."""


@dataclass(frozen=True, slots=True)
class Atom:
    fact: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Condition = Atom | All | Any_ | Not


def parse(data: Any, settings: Mapping[str, Scalar]) -> Condition:
    if not isinstance(data, dict) or not data:
        raise ConditionError(f"a condition must be a non-empty mapping, got {data!r}")
    if len(data) > 1:
        return All(tuple(parse({k: v}, settings) for k, v in data.items()))
    ((key, body),) = data.items()
    if key in ("all", "any"):
        if not isinstance(body, list) or not body:
            raise ConditionError(f"'{key}' needs a non-empty list")
        items = tuple(parse(item, settings) for item in body)
        return All(items) if key == "all" else Any_(items)
    if key == "not":
        return Not(parse(body, settings))
    return _parse_atoms(key, body, settings)


def _parse_atoms(fact: str, body: Any, settings: Mapping[str, Scalar]) -> Condition:
    if not isinstance(body, dict) or "setting" in body:
        return Atom(fact, "eq", _resolve(body, settings))
    atoms: list[Condition] = []
    for op, value in body.items():
        if op not in COMPARISONS:
            raise ConditionError(f"unknown comparison '{op}' on fact '{fact}'")
        atoms.append(Atom(fact, op, _resolve(value, settings)))
    return atoms[0] if len(atoms) == 1 else All(tuple(atoms))


def _resolve(value: Any, settings: Mapping[str, Scalar]) -> Any:
    if isinstance(value, dict):
        name = str(value.get("setting"))
        if name not in settings:
            raise ConditionError(f"unknown setting {name!r}")
        return settings[name]
    if isinstance(value, list):
        return [_resolve(v, settings) for v in value]
    return value


def facts_of(cond: Condition) -> Iterator[str]:
    if isinstance(cond, Atom):
        yield cond.fact
    elif isinstance(cond, Not):
        yield from facts_of(cond.item)
    else:
        for item in cond.items:
            yield from facts_of(item)


# --- three-valued evaluation -------------------------------------------------------------------------------

_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "lt": lambda a, b: bool(a < b),
    "lte": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "gte": lambda a, b: bool(a >= b),
    "in": lambda a, b: a in b,
    "nin": lambda a, b: a not in b,
}


def _atom_truth(atom: Atom, values: Values) -> Truth:
    present = values.get(atom.fact) is not None
    if atom.op == "known":
        return Truth.TRUE if present == bool(atom.value) else Truth.FALSE
    if not present:
        return Truth.UNDECIDED
    try:
        ok = _PY_OPS[atom.op](values[atom.fact], atom.value)
    except TypeError:
        return Truth.FALSE
    return Truth.TRUE if ok else Truth.FALSE


_NOT = {Truth.TRUE: Truth.FALSE, Truth.FALSE: Truth.TRUE, Truth.UNDECIDED: Truth.UNDECIDED}


def truth(cond: Condition, values: Values) -> Truth:
    if isinstance(cond, Atom):
        return _atom_truth(cond, values)
    if isinstance(cond, Not):
        return _NOT[truth(cond.item, values)]
    return _combined(cond, [truth(item, values) for item in cond.items])


def _combined(cond: All | Any_, parts: list[Truth]) -> Truth:
    """Kleene AND / OR of the parts' truth values."""
    stop, keep = (Truth.FALSE, Truth.TRUE) if isinstance(cond, All) else (Truth.TRUE, Truth.FALSE)
    if stop in parts:
        return stop
    return keep if all(p is keep for p in parts) else Truth.UNDECIDED


def undecided_facts(cond: Condition, values: Values) -> list[str]:
    """The facts whose absence leaves an UNDECIDED condition open (empty when it is decided)."""
    value, found = _open(cond, values)
    return found if value is Truth.UNDECIDED else []


def _open(cond: Condition, values: Values) -> tuple[Truth, list[str]]:
    """The truth of `cond` and, when it is UNDECIDED, the facts that leave it open (in one pass: each
    sub-condition is evaluated once)."""
    if isinstance(cond, Atom):
        value = _atom_truth(cond, values)
        return value, [cond.fact] if value is Truth.UNDECIDED else []
    if isinstance(cond, Not):
        value, inner = _open(cond.item, values)
        return _NOT[value], inner
    parts = [_open(item, values) for item in cond.items]
    value = _combined(cond, [v for v, _ in parts])
    if value is not Truth.UNDECIDED:
        return value, []
    found: list[str] = []
    for _, facts in parts:  # a decided part contributes no fact
        found.extend(f for f in facts if f not in found)
    return Truth.UNDECIDED, found


def holding_atoms(cond: Condition, values: Values) -> list[Atom]:
    """For a TRUE condition: the atoms that make it true (any of them turning false changes the answer)."""
    return _holding(cond, values)[1]


def _holding(cond: Condition, values: Values) -> tuple[Truth, list[Atom]]:
    """The truth of `cond` and its holding atoms, each sub-condition evaluated once."""
    if isinstance(cond, Atom):
        value = _atom_truth(cond, values)
        return value, [cond] if value is Truth.TRUE else []
    if isinstance(cond, Not):
        # a negated part holds because something is false; not a single input to point at
        return truth(cond, values), []
    parts = [_holding(item, values) for item in cond.items]
    value = _combined(cond, [v for v, _ in parts])
    held = [atoms for t, atoms in parts if t is Truth.TRUE]
    if isinstance(cond, Any_) and len(held) != 1:
        return value, []  # several alternatives hold: no single input flips the answer
    return value, [atom for atoms in held for atom in atoms]


# --- durable-rules JSON form -------------------------------------------------------------------------------
# Four modes: T (definitely true), F (definitely false), P (possibly true = not F), N (possibly false = not T).
# durable-rules has no general negation, so each mode is compiled directly.

_NEGATE = {
    "eq": "ne",
    "ne": "eq",
    "lt": "gte",
    "lte": "gt",
    "gt": "lte",
    "gte": "lt",
    "in": "nin",
    "nin": "in",
}
_DUAL = {"T": "F", "F": "T", "P": "N", "N": "P"}


def _cmp(fact: str, op: str, value: Any) -> dict[str, Any]:
    if op == "eq":
        return {fact: value}
    if op == "in":
        return {"$or": [{fact: v} for v in value]} if len(value) > 1 else {fact: value[0]}
    if op == "nin":
        return {"$and": [{"$neq": {fact: v}} for v in value]} if len(value) > 1 else {"$neq": {fact: value[0]}}
    return {f"${'neq' if op == 'ne' else op}": {fact: value}}


def _atom_durable(atom: Atom, mode: str) -> dict[str, Any]:
    exists = {"$ex": {atom.fact: 1}}
    absent = {"$nex": {atom.fact: 1}}
    if atom.op == "known":
        wanted = bool(atom.value) if mode in ("T", "P") else not bool(atom.value)
        return exists if wanted else absent
    positive = mode in ("T", "P")
    test = _cmp(atom.fact, atom.op if positive else _NEGATE[atom.op], atom.value)
    if mode in ("T", "F"):
        return {"$and": [exists, test]}
    return {"$or": [absent, test]}


MAX_CLAUSES = 64
MAX_TERMS = 14  # durable-rules refuses a rule with more than 15 tests in one AND (error 113), one is the kind


def _dnf(cond: Condition, mode: str) -> list[list[tuple[Atom, str]]]:
    """Disjunctive normal form of `cond` read in `mode`: a list of clauses, each a list of (atom, mode)."""
    if isinstance(cond, Atom):
        if cond.op in ("in", "nin"):  # one comparison per atom keeps every clause two levels deep
            op = "eq" if cond.op == "in" else "ne"
            atoms = tuple(Atom(cond.fact, op, v) for v in cond.value)
            return _dnf(Any_(atoms) if cond.op == "in" else All(atoms), mode)
        return [[(cond, mode)]]
    if isinstance(cond, Not):
        return _dnf(cond.item, _DUAL[mode])
    parts = [_dnf(item, mode) for item in cond.items]
    if isinstance(cond, All) != (mode in ("T", "P")):  # a disjunction in this mode
        return [clause for part in parts for clause in part]
    clauses: list[list[tuple[Atom, str]]] = [[]]
    for part in parts:
        clauses = [left + right for left in clauses for right in part]
        if len(clauses) > MAX_CLAUSES:
            raise ConditionError(f"condition too complex for the engine (more than {MAX_CLAUSES} clauses)")
    return clauses


def durable_clauses(cond: Condition, mode: str) -> list[list[dict[str, Any]]]:
    """`cond` in `mode` as flat durable-rules clauses (lists of tests to AND); the condition holds when any does.

    durable-rules 2.0.28 refuses expressions nested four levels deep (error 113), so conditions are flattened to
    disjunctive normal form and each clause becomes its own engine rule (nesting depth ≤ 3).
    """
    out = []
    for clause in _dnf(cond, mode):
        literals = list(dict.fromkeys(clause))
        if len(literals) > MAX_TERMS:
            raise ConditionError(f"a clause needs {len(literals)} comparisons; the engine takes at most {MAX_TERMS}")
        out.append([_atom_durable(atom, m) for atom, m in literals])
    return out
