"""Small readers for raw (already validated) FHIR R4 JSON: codings, references, dates."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import orjson

Resource = dict[str, Any]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOCAL = "http://oligocds.org/fhir/CodeSystem/oligocds"
MCODE = "http://hl7.org/fhir/us/mcode"


_memo = threading.local()


@contextmanager
def codings_memo() -> Iterator[None]:
    """Within the block, the codings of each CodeableConcept are read once (fact readers ask the same
    Observation codes many times). Per thread, and dropped at the end of the block."""
    _memo.cache = {}
    try:
        yield
    finally:
        _memo.cache = None


def codings(concept: Any) -> tuple[tuple[str, str], ...]:
    """(system, code) pairs of a CodeableConcept (or a list of them), in order."""
    cache: dict[int, tuple[Any, tuple[tuple[str, str], ...]]] | None = getattr(_memo, "cache", None)
    if cache is not None:
        hit = cache.get(id(concept))
        if hit is not None and hit[0] is concept:
            return hit[1]
    found = tuple(_codings(concept))
    if cache is not None:
        cache[id(concept)] = (concept, found)  # holding the object keeps its id from being reused
    return found


def _codings(concept: Any) -> Iterator[tuple[str, str]]:
    items = concept if isinstance(concept, list) else [concept]
    for item in items:
        if isinstance(item, dict):
            for c in item.get("coding") or []:
                if isinstance(c, dict) and c.get("code") is not None:
                    yield str(c.get("system") or ""), str(c["code"])


def concept_texts(concept: Any) -> list[str]:
    """The text and coding displays of a CodeableConcept (or a list of them), for matching by name."""
    texts: list[str] = []
    for item in concept if isinstance(concept, list) else [concept]:
        if not isinstance(item, dict):
            continue
        texts += [t for t in [item.get("text")] if isinstance(t, str)]
        displays = [c.get("display") for c in item.get("coding") or [] if isinstance(c, dict)]
        texts += [d for d in displays if isinstance(d, str)]
    return texts


def has_code(concept: Any, system: str, codes: Iterable[str]) -> bool:
    found = codings(concept)
    return bool(found) and any(s == system and c in codes for s, c in found)


def code_in(concept: Any, system: str) -> str | None:
    """The first code of `system` in a CodeableConcept."""
    return next((c for s, c in codings(concept) if s == system), None)


def local_code(concept: Any) -> str | None:
    return code_in(concept, LOCAL)


def ref_id(reference: Any) -> str | None:
    """'Condition/x' from {'reference': 'Condition/x'} (absolute URLs and _history are trimmed)."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str) or not ref:
        return None
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else ref


def has_id(resource: Mapping[str, Any]) -> bool:
    """The resource carries an id (a non-empty string)."""
    value = resource.get("id")
    return isinstance(value, str) and bool(value)


def canonical(resource: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a resource: orjson with sorted keys (equality of content, content hashes)."""
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def rid(resource: Resource) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def parse_date(value: Any) -> date | None:
    """A FHIR date or dateTime (any precision) as a date; partial dates take the first day."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            return date(int(value), 1, 1)
        if len(value) == 7:
            return date(int(value[:4]), int(value[5:7]), 1)
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def effective_date(resource: Resource) -> date | None:
    """Observation/Procedure/Condition clinical date: effective[x] / performed[x] / onset[x], else issued."""
    for key in ("effectiveDateTime", "performedDateTime", "onsetDateTime", "occurrenceDateTime"):
        if key in resource:
            return parse_date(resource[key])
    for key in ("effectivePeriod", "performedPeriod", "onsetPeriod"):
        period = resource.get(key)
        if isinstance(period, dict):
            return parse_date(period.get("end") or period.get("start"))
    return parse_date(resource.get("effectiveInstant") or resource.get("issued"))


def extensions(resource: Any, url_suffixes: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Extensions whose URL ends with one of the given suffixes (mCODE STU1 and STU4 spellings)."""
    suffixes = tuple(url_suffixes)
    if not isinstance(resource, dict):
        return
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and str(ext.get("url", "")).endswith(suffixes):
            yield ext


def add_months(d: date, months: int) -> date:
    month = d.month - 1 + months
    year = d.year + month // 12
    month = month % 12 + 1
    days = [
        31,
        29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1]
    return date(year, month, min(d.day, days))
