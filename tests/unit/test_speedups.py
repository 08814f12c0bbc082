"""The fast form of fhir-core's null-in-list check answers exactly as the original (service/fhir/speedups.py)."""

from __future__ import annotations

import importlib
import inspect
import random
from typing import Any

import pytest
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import ValidationError

from service.fhir import speedups
from service.fhir.parse import USED_TYPES

ELEMENT_MODULES = (
    "codeableconcept",
    "coding",
    "reference",
    "quantity",
    "period",
    "extension",
    "identifier",
    "annotation",
    "dosage",
    "timing",
    "range",
    "ratio",
    "meta",
    "narrative",
    "humanname",
    "address",
)


def _classes() -> list[type[FHIRAbstractModel]]:
    found: dict[str, type[FHIRAbstractModel]] = {}
    for name in (*(t.lower() for t in USED_TYPES), *ELEMENT_MODULES):
        module = importlib.import_module(f"fhir.resources.R4B.{name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, FHIRAbstractModel) and cls.__module__ == module.__name__:
                found[cls.__qualname__] = cls
    return list(found.values())


def _outcome(check: Any, cls: type[FHIRAbstractModel], data: Any) -> Any:
    try:
        out = check(cls, data)
    except ValidationError as exc:
        return ("error", [(e["type"], e["loc"], e["msg"]) for e in exc.errors()])
    return ("same object", out is data)


VALUES: list[Any] = [None, "x", 1, [], [None], [{}, None], [None, None], ["a", None], [1], [{}], {"a": [None]}]


def _inputs(cls: type[FHIRAbstractModel], rng: random.Random) -> list[Any]:
    keys = [k for name, f in cls.model_fields.items() for k in (name, f.alias) if k]
    keys += ["unknownKey", "resourceType", "fhir_comments"]
    cases: list[Any] = ["not a dict", None, [None], {}]
    cases += [{k: v} for k in keys for v in VALUES]
    cases += [{k: rng.choice(VALUES) for k in rng.sample(keys, min(len(keys), 4))} for _ in range(40)]
    return cases


def test_the_fast_check_is_what_the_models_run() -> None:
    assert speedups.install()
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.observation import Observation

    for model in (Observation, CodeableConcept):
        bound = model.__pydantic_decorators__.model_validators["reject_null_complex_elements"].func
        assert bound.__func__ is speedups._reject_null_fast  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__qualname__)
def test_the_fast_check_answers_as_the_original(cls: type[FHIRAbstractModel]) -> None:
    original = speedups.original()
    assert original is not None
    rng = random.Random(cls.__qualname__)
    for data in _inputs(cls, rng):
        assert _outcome(speedups._reject_null_fast, cls, data) == _outcome(original, cls, data), data


def test_a_null_in_a_list_is_still_refused_with_the_original_message() -> None:
    from fhir.resources.R4B.observation import Observation

    with pytest.raises(ValidationError, match="None is not allowed as an element of coding"):
        Observation.model_validate({"resourceType": "Observation", "status": "final", "code": {"coding": [None]}})


def _after_outcome(check: Any, instance: Any) -> Any:
    try:
        return ("same object", check(instance) is instance)
    except (ValueError, ValidationError) as exc:
        return ("error", type(exc).__name__, str(exc))


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__qualname__)
def test_the_after_check_is_skipped_only_where_the_original_checks_nothing(cls: type[FHIRAbstractModel]) -> None:
    original = speedups.original_after()
    assert original is not None
    rng = random.Random(cls.__qualname__)
    empty = cls.model_construct()
    choices = [name for names in empty.get_one_of_many_fields().values() for name in names]
    required = [name for name, _ in empty.get_required_fields()]
    instances = [empty]
    for _ in range(20):  # random choice elements set (none, one or several) and required primitives set or not
        fields = {n: "x" for n in rng.sample(choices, min(len(choices), rng.randint(0, 2)))}
        fields |= {cls.get_alias_mapping().get(n, n): "x" for n in required if rng.random() < 0.5}
        instances.append(cls.model_construct(**fields))
    for instance in instances:
        # the lists the fast form keys on are the class's, whatever the instance holds
        assert instance.get_required_fields() == empty.get_required_fields()
        assert instance.get_one_of_many_fields() == empty.get_one_of_many_fields()
        assert _after_outcome(speedups._after_fast, instance) == _after_outcome(original, instance)


def test_a_choice_element_given_twice_is_still_refused() -> None:
    from fhir.resources.R4B.observation import Observation

    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 1}
    with pytest.raises(ValidationError, match="Any of one field value is expected"):
        Observation.model_validate({**body, "valueString": "a"})
