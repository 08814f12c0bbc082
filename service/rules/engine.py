"""The only module that touches durable-rules (2.0.28, unmaintained C code).

What we know of it (docs/durable-rules.md) shapes this wrapper:
- one owner thread makes every call: the C core has no locks and never releases the GIL;
- the Host's background timer threads are never started (they can touch freed state and crash);
- every evaluation gets a fresh session id that is deleted afterwards (at most 1,024 live sessions per ruleset);
- every fact kind has a catch-all rule, so no fact raises MessageNotHandledException (a batch with one unhandled
  fact is dropped whole and the next call may crash); MessageObservedException is turned into an error;
- actions are not Python callbacks: `run` drives the same C calls as durable's `Host` (assert_facts,
  start_action_for_state, then update_state + complete_and_start_action per firing, delete_state) and only records
  (action name, fact key) of each firing. The Host's per-firing work (a JSON decode and encode of the session state,
  a closure and a promise chain: ~25 µs, most of the engine's time) is skipped. A firing that cannot be read does
  not stop the loop half-way (the Host swallows action errors the same way): the session is completed, deleted,
  and the error raised.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import durable_rules_engine as native
import orjson
from durable import engine as durable_engine

T = TypeVar("T")
FactKinds = ("patient", "lesion")
SINK = "sink"


class EngineError(RuntimeError):
    """durable-rules reported an error while evaluating a session."""


class _Host(durable_engine.Host):  # type: ignore[misc]
    """A durable Host without timer threads. It parses and registers rulesets; `RulesEngine.run` dispatches the
    firings itself, so the actions it resolves are never called."""

    def _run(self) -> None:  # no background dispatch / timer threads
        return None

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        def unused(c: Any) -> None:
            raise EngineError(f"action {action_name} called through the durable Host")

        return unused

    def handle(self, ruleset: str) -> int:
        """The C core's handle of a registered ruleset."""
        return int(self.get_ruleset(ruleset)._handle)


class RulesEngine:
    """Runs compiled durable-rules rulesets on one owner thread."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable-owner")
        self._host: _Host = self.call(_Host)
        self._sids = itertools.count(1)
        self._owner: threading.Thread | None = self.call(threading.current_thread)
        # per registered ruleset: the C core's handle, and rule name (what a firing names) → action
        self._registered: dict[str, tuple[int, dict[str, str]]] = {}

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the owner thread and wait for it."""
        return self.submit(fn, *args).result()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._executor.submit(fn, *args)

    def register(self, rulesets: Mapping[str, dict[str, Any]]) -> None:
        """Register compiled rulesets (names must be new: a changed ruleset gets a new name)."""
        new = {name: body for name, body in rulesets.items() if name not in self._registered}
        for name, body in new.items():
            actions = {rule: str(spec["run"]) for rule, spec in body.items()}  # durable pops "run"
            try:
                self.call(self._host.set_rulesets, {name: body})
            except Exception as exc:  # the C core reports only an error code
                raise EngineError(f"durable-rules refused ruleset {name}: {exc}") from exc
            self._registered[name] = (self.call(self._host.handle, name), actions)

    def run(self, ruleset: str, facts: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
        """Assert `facts` in a fresh session of `ruleset`; return (action, fact key) pairs. Owner thread only."""
        if threading.current_thread() is not self._owner:
            raise EngineError("durable-rules called from a thread that does not own it")
        strays = {f.get("kind") for f in facts} - set(FactKinds)
        if strays:  # a fact no rule handles makes durable drop the batch (and may crash it): refuse it first
            raise EngineError(f"{ruleset}: facts of unknown kind {sorted(map(str, strays))}")
        if ruleset not in self._registered:
            raise EngineError(f"ruleset {ruleset} is not registered")
        handle, actions = self._registered[ruleset]
        sid = str(next(self._sids))
        payload = orjson.dumps([{**f, "sid": sid} for f in facts]).decode()
        fired: list[tuple[str, int]] = []
        unreadable: Exception | None = None
        try:
            code, state = native.assert_facts(handle, payload)
            if code in (1, 2):  # the Host's MessageNotHandledException / MessageObservedException
                what = "no rule handles a fact" if code == 1 else "a fact was already observed"
                raise EngineError(f"{ruleset}: {what}")
            started = native.start_action_for_state(handle, 0 if code == 3 else state)
            if started:
                state_json, message = started[0], started[1]
                while message:
                    try:
                        ((rule, binding),) = orjson.loads(message).items()
                        action = actions[rule]
                        if action != SINK:
                            fired.append((action, int(binding["m"]["key"])))
                    except Exception as exc:  # finish the session first, as the Host would
                        unreadable = unreadable or exc
                    native.update_state(handle, state_json)
                    message = native.complete_and_start_action(handle, state)
        finally:
            native.delete_state(handle, sid)
        if unreadable is not None:
            raise EngineError(f"action failed in {ruleset}: {unreadable!r}") from unreadable
        return fired

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def sink_rules() -> dict[str, Any]:
    """Catch-all rules so that every fact is handled."""
    return {f"{SINK}${kind}": {"all": [{"m": {"kind": kind}}], "run": SINK} for kind in FactKinds}
