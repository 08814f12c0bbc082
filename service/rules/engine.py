"""The only module that touches durable-rules (2.0.28, unmaintained C code).

What we know of it (docs/durable-rules.md) shapes this wrapper:
- one owner thread makes every call: the C core has no locks and never releases the GIL;
- the Host's background timer threads are never started (they can touch freed state and crash);
- every evaluation gets a fresh session id that is deleted afterwards (at most 1,024 live sessions per ruleset);
- every fact kind has a catch-all rule, so no fact raises MessageNotHandledException (a batch with one unhandled
  fact is dropped whole and the next call may crash); MessageObservedException is turned into an error;
- errors inside actions are swallowed by the engine into its state: our actions only record what fired, and the
  state is checked for an `exception` after every evaluation.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from durable import engine as durable_engine

T = TypeVar("T")
FactKinds = ("patient", "lesion")
SINK = "sink"


class EngineError(RuntimeError):
    """durable-rules reported an error while evaluating a session."""


class _Host(durable_engine.Host):  # type: ignore[misc]
    """A durable Host without timer threads whose actions record (action name, fact key)."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, int]] = []
        super().__init__()

    def _run(self) -> None:  # no background dispatch / timer threads
        return None

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        host = self

        def record(c: Any) -> None:
            if action_name != SINK:
                host.fired.append((action_name, int(c.m["key"])))

        return record


class RulesEngine:
    """Runs compiled durable-rules rulesets on one owner thread."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable-owner")
        self._host: _Host = self.call(_Host)
        self._sids = itertools.count(1)
        self._owner: threading.Thread | None = self.call(threading.current_thread)
        self._loaded: set[str] = set()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the owner thread and wait for it."""
        return self.submit(fn, *args).result()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._executor.submit(fn, *args)

    def register(self, rulesets: Mapping[str, dict[str, Any]]) -> None:
        """Register compiled rulesets (names must be new: a changed ruleset gets a new name)."""
        new = {name: body for name, body in rulesets.items() if name not in self._loaded}
        for name, body in new.items():
            try:
                self.call(self._host.set_rulesets, {name: body})
            except Exception as exc:  # the C core reports only an error code
                raise EngineError(f"durable-rules refused ruleset {name}: {exc}") from exc
            self._loaded.add(name)

    def run(self, ruleset: str, facts: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
        """Assert `facts` in a fresh session of `ruleset`; return (action, fact key) pairs. Owner thread only."""
        if threading.current_thread() is not self._owner:
            raise EngineError("durable-rules called from a thread that does not own it")
        strays = {f.get("kind") for f in facts} - set(FactKinds)
        if strays:  # a fact no rule handles makes durable drop the batch (and may crash it): refuse it first
            raise EngineError(f"{ruleset}: facts of unknown kind {sorted(map(str, strays))}")
        sid = str(next(self._sids))
        host = self._host
        fired: list[tuple[str, int]] = []
        host.fired = fired
        try:
            host.assert_facts(ruleset, [{**f, "sid": sid} for f in facts])
            state = host.get_state(ruleset, sid)
            if isinstance(state, dict) and state.get("exception"):
                raise EngineError(f"action failed in {ruleset}: {state['exception']}")
        except (durable_engine.MessageNotHandledException, durable_engine.MessageObservedException) as exc:
            raise EngineError(f"{ruleset}: {exc.message}") from exc
        finally:
            host.delete_state(ruleset, sid)
        return fired

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def sink_rules() -> dict[str, Any]:
    """Catch-all rules so that every fact is handled."""
    return {f"{SINK}${kind}": {"all": [{"m": {"kind": kind}}], "run": SINK} for kind in FactKinds}
