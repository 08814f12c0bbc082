"""The one composition root: builds the engine, the ruleset and the evaluator from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.config import Settings
from service.evaluate import Evaluator
from service.fhir.facts import FactOptions
from service.rules.engine import RulesEngine
from service.rules.evaluator import RuleRunner
from service.rules.loader import default_rules_dir, load_ruleset


@dataclass(slots=True)
class Container:
    settings: Settings
    engine: RulesEngine
    runner: RuleRunner  # swapped by the rule reloader; readers go through current_runner()
    evaluator: Evaluator = field(init=False)

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(
            engine=self.engine,
            runner=self.current_runner,
            options=fact_options(self.settings),
            canonical_base=self.settings.canonical_base,
        )

    def current_runner(self) -> RuleRunner:
        return self.runner

    def close(self) -> None:
        self.engine.close()


def fact_options(settings: Settings) -> FactOptions:
    return FactOptions(
        stale_ps_days=settings.stale_ps_days,
        stale_renal_days=settings.stale_renal_days,
        systemic_includes_endocrine=settings.systemic_includes_endocrine,
        systemic_lookback_days=settings.systemic_lookback_days,
        adt_lookback_days=settings.adt_lookback_days,
    )


def bootstrap(settings: Settings, engine: RulesEngine | None = None) -> Container:
    engine = engine or RulesEngine()
    ruleset = load_ruleset(settings.rules_dir or default_rules_dir(), settings.rule_settings())
    return Container(settings, engine, RuleRunner(ruleset, engine))
