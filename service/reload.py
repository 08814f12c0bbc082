"""Rule hot reload: when the rule files change (a ConfigMap update), check the new set and swap it in atomically;
keep the old set when the new one is invalid. Requests in flight finish on the ruleset they started with."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.bootstrap import Container
from service.rules.engine import EngineError
from service.rules.evaluator import RuleRunner
from service.rules.loader import RuleFileError, default_rules_dir, digest_of, load_ruleset

log = logging.getLogger("oligocds.reload")


def _sources(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.yaml"))}


@dataclass(slots=True)
class RuleReloader:
    """Polls the rules folder; `check()` does one round and returns "unchanged", "reloaded" or "rejected"."""

    container: Container
    on_result: Callable[[str], None] = lambda result: None
    interval_s: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    last_error: str | None = None
    _rejected: str | None = None

    @property
    def directory(self) -> Path:
        return self.container.settings.rules_dir or default_rules_dir()

    def check(self) -> str:
        digest: str | None = None
        try:
            digest = digest_of(_sources(self.directory))
            if digest in (self.container.runner.ruleset.digest, self._rejected):
                return self._done("unchanged")
            settings = self.container.settings
            ruleset = load_ruleset(self.directory, settings.rule_settings())
            runner = RuleRunner(ruleset, self.container.engine)
        except (RuleFileError, EngineError, OSError) as exc:
            self.last_error, self._rejected = str(exc), digest
            log.error("rule reload rejected, keeping %s: %s", self.container.runner.ruleset.digest, exc)
            return self._done("rejected")
        self.container.runner = runner  # one attribute store: atomic for the readers
        self.last_error = None
        log.info("rules reloaded: %s %s %s", ruleset.name, ruleset.version, ruleset.digest)
        return self._done("reloaded")

    def _done(self, result: str) -> str:
        if result != "unchanged":
            self.on_result(result)
        return result

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rule-reloader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
