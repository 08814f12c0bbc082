"""The durable-rules wrapper: owner thread, fresh sessions, surfaced action errors."""

from __future__ import annotations

import threading

import pytest

from service.rules.engine import EngineError, RulesEngine, sink_rules

RULES = {
    "low": {"all": [{"m": {"$and": [{"kind": "patient"}, {"$lte": {"ecog": 1}}]}}], "run": "low"},
    **sink_rules(),
}


@pytest.fixture(scope="module")
def eng() -> RulesEngine:
    e = RulesEngine()
    e.register({"wrapper_test": RULES})
    return e


def test_fires_only_matching_rules(eng: RulesEngine) -> None:
    facts = [{"kind": "patient", "key": 0, "ecog": 1}, {"kind": "lesion", "key": 1}]
    assert eng.call(eng.run, "wrapper_test", facts) == [("low", 0)]
    assert eng.call(eng.run, "wrapper_test", [{"kind": "patient", "key": 0, "ecog": 3}]) == []


def test_sessions_are_fresh_and_deleted(eng: RulesEngine) -> None:
    # 1,100 evaluations: more than the engine's 1,024 live sessions, so each must be deleted.
    for i in range(1100):
        fired = eng.call(eng.run, "wrapper_test", [{"kind": "patient", "key": 0, "ecog": i % 3}])
        assert fired == ([("low", 0)] if i % 3 <= 1 else [])


def test_calls_off_the_owner_thread_are_refused(eng: RulesEngine) -> None:
    assert threading.current_thread().name != "durable-owner"
    with pytest.raises(EngineError, match="thread"):
        eng.run("wrapper_test", [{"kind": "patient", "key": 0}])


def test_an_error_inside_an_action_is_surfaced(eng: RulesEngine) -> None:
    # The recorder needs a "key"; without it the action raises inside the engine, which would swallow it.
    with pytest.raises(EngineError):
        eng.call(eng.run, "wrapper_test", [{"kind": "patient", "ecog": 0}])
    # The engine keeps working afterwards.
    assert eng.call(eng.run, "wrapper_test", [{"kind": "patient", "key": 0, "ecog": 0}]) == [("low", 0)]


def test_a_fact_of_an_unknown_kind_is_an_error_not_a_crash(eng: RulesEngine) -> None:
    with pytest.raises(EngineError):
        eng.call(eng.run, "wrapper_test", [{"kind": "mystery", "key": 0}])
    assert eng.call(eng.run, "wrapper_test", [{"kind": "patient", "key": 0, "ecog": 1}]) == [("low", 0)]
