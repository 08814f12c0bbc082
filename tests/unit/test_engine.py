"""The durable-rules wrapper: owner thread, fresh sessions, surfaced errors, the same firings as durable's Host."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from datetime import date
from typing import Any

import pytest
from durable import engine as durable_engine

from bench.bundles import bundle_bytes
from service.bootstrap import bootstrap
from service.config import Settings
from service.rules.compile import compile_ruleset
from service.rules.engine import SINK, EngineError, RulesEngine, sink_rules
from service.rules.loader import default_rules_dir, load_ruleset

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


class _ReferenceHost(durable_engine.Host):  # type: ignore[misc]
    """durable's own dispatch (Python callbacks per firing), to check the wrapper's leaner loop against."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, int]] = []
        super().__init__()

    def _run(self) -> None:  # no timer threads
        return None

    def get_action(self, action_name: str) -> Any:
        def record(c: Any) -> None:
            if action_name != SINK:
                self.fired.append((action_name, int(c.m["key"])))

        return record


def _stage_calls(count: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """(ruleset, facts) of every engine call made while evaluating `count` generated patients with all rules."""
    container = bootstrap(Settings(), engine=RulesEngine())
    calls: list[tuple[str, list[dict[str, Any]]]] = []
    original = container.engine.run

    def recording(name: str, facts: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
        calls.append((name, copy.deepcopy(list(facts))))
        return original(name, facts)

    container.engine.run = recording  # type: ignore[method-assign]
    for i in range(count):
        container.evaluator.evaluate_bytes(bundle_bytes(i), date(2026, 11, 1))
    container.close()
    return calls


def test_the_wrapper_fires_what_durables_own_host_fires() -> None:
    # The wrapper drives the C core itself instead of through the Host's callbacks; on the real rules and 150
    # varied patients (every stage), both must report the same firings in the same order.
    calls = _stage_calls(150)
    rulesets = compile_ruleset(load_ruleset(default_rules_dir(), Settings().rule_settings()))
    wrapper = RulesEngine()
    wrapper.register(copy.deepcopy(rulesets))

    def reference_firings() -> list[list[tuple[str, int]]]:
        host = _ReferenceHost()
        host.set_rulesets(copy.deepcopy(rulesets))
        out = []
        for n, (name, facts) in enumerate(calls):
            host.fired = []
            sid = f"r{n}"
            host.assert_facts(name, [{**f, "sid": sid} for f in facts])
            assert not host.get_state(name, sid).get("exception")
            host.delete_state(name, sid)
            out.append(host.fired)
        return out

    expected = wrapper.call(reference_firings)  # the C core is only ever called from one thread
    got = [wrapper.call(wrapper.run, name, facts) for name, facts in calls]
    assert sum(map(len, got)) > 10 * len(calls) // 3  # the rules really fire (~15 per stage)
    assert got == expected
    wrapper.close()
