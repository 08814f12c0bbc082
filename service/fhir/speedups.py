"""Faster, equivalent forms of two fhir.resources validators (measured in docs/performance.md).

fhir-core's `FHIRAbstractModel.reject_null_complex_elements` runs before every element of every resource is
validated (each Coding, CodeableConcept, Reference, …) and walks all of the element class's fields, asking for each
whether it is a list of a complex type, to refuse a `null` inside such a list. It can only refuse something when the
element holds a list with a `null` in it; for everything else it returns the data unchanged. `_reject_null_fast`
looks for such a list first and hands the element to the original check only when it finds one, so the answers and
the error messages are the original's; a unit test compares the two on generated inputs. Likewise the "after"
validator, which checks required primitive elements and choice (`[x]`) elements, runs only for classes that have
such elements (lists the generated classes return as constants; a test checks that they do).

pydantic binds a model's validators by name when the model class is created, so `install()` must run before the
fhir.resources model classes are imported: `service/fhir/__init__.py` calls it. Models created earlier keep the
original (slower, same answers). It changes nothing for a fhir-core version it was not checked against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

log = logging.getLogger(__name__)

CHECKED_VERSIONS = ("1.1.",)  # fhir-core releases whose two validators these were compared with

_original: Callable[[Any, Any], Any] | None = None
_original_after: Callable[[Any], Any] | None = None
_checks_something: dict[type, bool] = {}  # model class → has required primitives or choice ([x]) elements


def _after_fast(self: Any) -> Any:
    """`validate_after_model_construction`, skipped for a class whose required-primitive and choice-element lists
    (constant per generated class) are both empty: the original then checks nothing and returns the instance."""
    cls = type(self)
    needed = _checks_something.get(cls)
    if needed is None:
        needed = _checks_something[cls] = bool(self.get_required_fields()) or bool(self.get_one_of_many_fields())
    assert _original_after is not None
    return _original_after(self) if needed else self


def _reject_null_fast(cls: Any, data: Any) -> Any:
    if isinstance(data, dict):
        for value in data.values():
            if type(value) is list and any(item is None for item in value):
                assert _original is not None
                return _original(cls, data)
    return data


def install() -> bool:
    """Put the fast checks in place of the originals; True when they are (also when they already were)."""
    global _original, _original_after
    try:
        installed = version("fhir-core")
    except PackageNotFoundError:
        return False
    if not installed.startswith(CHECKED_VERSIONS):
        log.info("fhir-core %s: validator speed-up not installed (checked against %s)", installed, CHECKED_VERSIONS)
        return False
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    current = FHIRAbstractModel.__dict__["reject_null_complex_elements"]
    if isinstance(current, classmethod) and current.__func__ is _reject_null_fast:
        return True
    _original = current.__func__
    _original_after = FHIRAbstractModel.__dict__["validate_after_model_construction"]
    FHIRAbstractModel.reject_null_complex_elements = classmethod(_reject_null_fast)  # type: ignore[method-assign,assignment]
    FHIRAbstractModel.validate_after_model_construction = _after_fast  # type: ignore[method-assign,assignment]
    return True


def original() -> Callable[[Any, Any], Any] | None:
    """The replaced check (for the equivalence test)."""
    return _original


def original_after() -> Callable[[Any], Any] | None:
    """The replaced after-validator (for the equivalence test)."""
    return _original_after
