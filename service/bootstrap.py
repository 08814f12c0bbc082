"""The one composition root: builds the engine, the ruleset, the evaluator and the store from settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from service.config import Settings
from service.evaluate import Evaluator
from service.fhir.facts import FactOptions
from service.ingest import Ingestor
from service.rules.engine import RulesEngine
from service.rules.evaluator import RuleRunner
from service.rules.loader import default_rules_dir, load_ruleset
from service.store import Store, open_store


@dataclass(slots=True)
class Container:
    settings: Settings
    engine: RulesEngine
    runner: RuleRunner  # swapped by the rule reloader; readers go through current_runner()
    store_override: Store | None = None  # a store built by the caller (tests); else opened from settings on first use
    evaluator: Evaluator = field(init=False)
    ingestor: Ingestor = field(init=False)
    _store: Store | None = field(default=None, init=False)
    _store_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(
            engine=self.engine,
            runner=self.current_runner,
            options=fact_options(self.settings),
            canonical_base=self.settings.canonical_base,
        )
        self.ingestor = Ingestor(self.evaluator)
        self._store = self.store_override

    @property
    def store(self) -> Store:
        """The patient state store, opened (and migrated) on first use: stateless commands never touch it."""
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.settings.store_url)
            return self._store

    @property
    def store_opened(self) -> bool:
        return self._store is not None

    def current_runner(self) -> RuleRunner:
        return self.runner

    def close(self) -> None:
        if self._store is not None and self.store_override is None:
            self._store.close()
        self.engine.close()


def fact_options(settings: Settings) -> FactOptions:
    return FactOptions(
        stale_ps_days=settings.stale_ps_days,
        stale_renal_days=settings.stale_renal_days,
        systemic_includes_endocrine=settings.systemic_includes_endocrine,
        systemic_lookback_days=settings.systemic_lookback_days,
        adt_lookback_months=settings.adt_lookback_months,
        dental_exam_months=settings.dental_exam_months,
    )


def bootstrap(settings: Settings, engine: RulesEngine | None = None, store: Store | None = None) -> Container:
    engine = engine or RulesEngine()
    ruleset = load_ruleset(settings.rules_dir or default_rules_dir(), settings.rule_settings())
    return Container(settings, engine, RuleRunner(ruleset, engine), store_override=store)
