"""The condition language: three-valued meaning, and durable-rules agreeing with it on every input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.rules.compile import compile_stage
from service.rules.conditions import (
    Any_,
    Atom,
    Condition,
    ConditionError,
    Not,
    Truth,
    durable_clauses,
    holding_atoms,
    parse,
    truth,
    undecided_facts,
)
from service.rules.engine import RulesEngine, sink_rules

FACTS = ("a", "b", "c")


def test_and_with_a_false_fact_is_decided_even_if_another_is_unknown() -> None:
    cond = parse({"all": [{"a": {"lte": 1}}, {"b": True}]}, {})
    assert truth(cond, {"a": 3}) is Truth.FALSE
    assert undecided_facts(cond, {"a": 3}) == []


def test_and_with_an_unknown_fact_is_undecided_and_names_it() -> None:
    cond = parse({"all": [{"a": {"lte": 1}}, {"b": True}]}, {})
    assert truth(cond, {"a": 1}) is Truth.UNDECIDED
    assert undecided_facts(cond, {"a": 1}) == ["b"]


def test_or_with_one_true_branch_is_true() -> None:
    cond = parse({"any": [{"a": {"gte": 3}}, {"b": "x"}]}, {})
    assert truth(cond, {"a": 3}) is Truth.TRUE
    assert truth(cond, {"a": 1}) is Truth.UNDECIDED
    assert truth(cond, {"a": 1, "b": "y"}) is Truth.FALSE


def test_known_is_two_valued() -> None:
    cond = parse({"a": {"known": False}}, {})
    assert truth(cond, {}) is Truth.TRUE
    assert truth(cond, {"a": 0}) is Truth.FALSE


def test_settings_are_resolved_at_load() -> None:
    cond = parse({"a": {"lt": {"setting": "days"}}}, {"days": 90})
    assert truth(cond, {"a": 89}) is Truth.TRUE
    assert truth(cond, {"a": 90}) is Truth.FALSE
    with pytest.raises(ConditionError):
        parse({"a": {"lt": {"setting": "nope"}}}, {})


def test_unknown_operator_is_rejected() -> None:
    with pytest.raises(ConditionError):
        parse({"a": {"approx": 1}}, {})


atoms = st.one_of(
    st.builds(lambda f, v: {f: v}, st.sampled_from(FACTS), st.integers(0, 3)),
    st.builds(
        lambda f, op, v: {f: {op: v}},
        st.sampled_from(FACTS),
        st.sampled_from(["lt", "lte", "gt", "gte", "ne"]),
        st.integers(0, 3),
    ),
    st.builds(
        lambda f, v: {f: {"in": v}},
        st.sampled_from(FACTS),
        st.lists(st.integers(0, 3), min_size=1, max_size=3),
    ),
    st.builds(
        lambda f, v: {f: {"nin": v}},
        st.sampled_from(FACTS),
        st.lists(st.integers(0, 3), min_size=1, max_size=3),
    ),
    st.builds(lambda f, v: {f: {"known": v}}, st.sampled_from(FACTS), st.booleans()),
)
conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=10,
)
value_sets = st.fixed_dictionaries({}, optional={f: st.integers(0, 3) for f in FACTS})

_engine: RulesEngine | None = None
_count = 0


def _durable_truth(raw: dict[str, Any], values: dict[str, int]) -> Truth:
    """Compile `raw` to T and P rules, assert one fact, read back which fired."""
    global _engine, _count
    _engine = _engine or RulesEngine()
    _count += 1
    name = f"prop{_count}"
    cond = parse(raw, {})
    body = dict(sink_rules())
    for mode in ("T", "P"):
        for n, clause in enumerate(durable_clauses(cond, mode)):
            body[f"r${mode}{n}"] = {"all": [{"m": {"$and": [{"kind": "patient"}, *clause]}}], "run": mode}
    _engine.register({name: body})
    fired = {a for a, _ in _engine.call(_engine.run, name, [{**values, "kind": "patient", "key": 0}])}
    if "T" in fired:
        return Truth.TRUE
    return Truth.UNDECIDED if "P" in fired else Truth.FALSE


@settings(max_examples=300, deadline=None)
@given(conditions, value_sets)
def test_durable_rules_agree_with_the_three_valued_meaning(raw: dict[str, Any], values: dict[str, int]) -> None:
    try:
        durable_clauses(parse(raw, {}), "P")
    except ConditionError:
        assume(False)  # too many clauses: the loader refuses such a rule file
    assert _durable_truth(raw, values) is truth(parse(raw, {}), values)


def test_compile_stage_has_a_sink_for_every_fact_kind() -> None:
    body = compile_stage(())
    assert {"sink$patient", "sink$lesion"} <= body.keys()


def test_clauses_longer_than_the_engine_takes_are_refused() -> None:
    wide = {"all": [{f"f{i}": {"lt": 3}} for i in range(15)]}
    with pytest.raises(ConditionError, match="at most 14"):
        durable_clauses(parse(wide, {}), "T")
    narrow = {"all": [{f"f{i}": {"lt": 3}} for i in range(14)]}
    assert _durable_truth(narrow, dict.fromkeys((f"f{i}" for i in range(14)), 1)) is Truth.TRUE


def test_deeply_nested_conditions_are_flattened_for_the_engine() -> None:
    # durable-rules refuses expressions nested four levels deep (error 113); DNF keeps every clause flat.
    deep: dict[str, Any] = {"a": {"lt": 1}}
    for depth in range(6):
        deep = {"any": [{"all": [deep, {"b": {"gte": depth}}]}, {"c": depth}]}
    assert _durable_truth(deep, {"a": 0, "b": 9}) is Truth.TRUE
    assert _durable_truth(deep, {"a": 2, "b": 9, "c": 7}) is Truth.FALSE


def _undecided_by_definition(cond: Condition, values: dict[str, int]) -> list[str]:
    """undecided_facts as first written: the facts of the UNDECIDED parts of an UNDECIDED condition, recursively."""
    if truth(cond, values) is not Truth.UNDECIDED:
        return []
    if isinstance(cond, Atom):
        return [cond.fact]
    if isinstance(cond, Not):
        return _undecided_by_definition(cond.item, values)
    found: list[str] = []
    for item in cond.items:
        found.extend(f for f in _undecided_by_definition(item, values) if f not in found)
    return found


@settings(max_examples=500, deadline=None)
@given(conditions, value_sets)
def test_undecided_facts_in_one_pass_match_the_definition(raw: dict[str, Any], values: dict[str, int]) -> None:
    cond = parse(raw, {})
    assert undecided_facts(cond, values) == _undecided_by_definition(cond, values)


def _holding_by_definition(cond: Condition, values: dict[str, int]) -> list[Atom]:
    """holding_atoms as first written (each level re-evaluates the truth of its parts)."""
    if isinstance(cond, Atom):
        return [cond] if truth(cond, values) is Truth.TRUE else []
    if isinstance(cond, Not):
        return []
    parts = [item for item in cond.items if truth(item, values) is Truth.TRUE]
    if isinstance(cond, Any_) and len(parts) != 1:
        return []
    return [atom for item in parts for atom in _holding_by_definition(item, values)]


@settings(max_examples=500, deadline=None)
@given(conditions, value_sets)
def test_holding_atoms_in_one_pass_match_the_definition(raw: dict[str, Any], values: dict[str, int]) -> None:
    cond = parse(raw, {})
    assert holding_atoms(cond, values) == _holding_by_definition(cond, values)
