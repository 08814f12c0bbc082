"""Recommendations → CDS Hooks 2.0 cards (cds-hooks.md §6, contract.md §3). No element is null or empty."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

from service.domain.result import Issue, Recommendation, RulesetInfo
from service.fhir.careplan import care_plan as build_care_plan
from service.fhir.careplan import code_coding
from service.fhir.util import LOCAL

REVIEW_URL = "https://doi.org/10.3390/curroncol32040226"
ORDER = {"critical": 0, "warning": 1, "info": 2}
OVERRIDE_REASONS = (
    ("already-addressed", "Already addressed"),
    ("not-clinically-appropriate", "Not clinically appropriate for this patient"),
    ("patient-declined", "Patient declined"),
    ("data-incorrect", "The patient data behind this card are incorrect"),
)


def card_uuid(canonical_base: str, patient: str, rule: str, code: str, lesion: str | None = None) -> str:
    name = f"{patient}#{rule}#{code}" + (f"#{lesion}" if lesion else "")
    return uuid5_text(_namespace(canonical_base), name)


@cache
def _namespace(canonical_base: str) -> bytes:
    return uuid.uuid5(uuid.NAMESPACE_URL, canonical_base).bytes


def uuid5_text(namespace: bytes, name: str) -> str:
    """str(uuid.uuid5(UUID(bytes=namespace), name)) without building UUID objects (RFC 4122 §4.3: SHA-1 of namespace
    and name, version 5, RFC 4122 variant); a response holds some twenty of them."""
    digest = bytearray(hashlib.sha1(namespace + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


ASSESSMENT_TOPIC = {"system": LOCAL, "code": "oligometastatic-assessment", "display": "OMD assessment"}


def short(text: str, limit: int = 139) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _source(label_rule: str, ruleset: RulesetInfo, topic: dict[str, str], url: str | None) -> dict[str, Any]:
    """`topic` is a Coding: the code's own display, the same for every patient (the card's summary says the rest)."""
    source: dict[str, Any] = {"label": f"OligoCDS {label_rule}, ruleset {ruleset.version}", "topic": topic}
    if url:
        source["url"] = url
    return source


def _ruleset_ext(ruleset: RulesetInfo) -> dict[str, str]:
    return {"name": ruleset.name, "version": ruleset.version, "digest": ruleset.digest}


def recommendation_card(
    rec: Recommendation,
    patient: str,
    ruleset: RulesetInfo,
    canonical_base: str,
    addresses: Sequence[str] = (),
) -> dict[str, Any]:
    """One card; with "Add to draft care plan" (a CarePlan proposal of this recommendation alone) when the
    recommendation adds a CarePlan activity, and a link to its source when it has a URL."""
    why = (
        f"\n\n**Why this card**: rule {rec.rule} fired on {', '.join(rec.evidence) or 'the patient record'}. "
        f"Ruleset {ruleset.name} {ruleset.version}."
    )
    card: dict[str, Any] = {
        "uuid": card_uuid(canonical_base, patient, rec.rule, rec.code, rec.lesion),
        "summary": short(rec.summary),
        "detail": rec.detail + why,
        "indicator": rec.indicator,
        "source": _source(rec.rule, ruleset, code_coding(rec.code), rec.source_url),
        "extension": {
            "org.oligocds.ruleset": _ruleset_ext(ruleset),
            "org.oligocds.explanation": {
                "rule": rec.rule,
                "code": rec.code,
                "rulesetVersion": ruleset.version,
                "evidence": list(rec.evidence),
                **rec.explanation,
            },
        },
    }
    if rec.indicator == "critical":
        card["overrideReasons"] = [{"system": LOCAL, "code": c, "display": d} for c, d in OVERRIDE_REASONS]
    if rec.activity:
        plan = build_care_plan(patient, ruleset, [rec], addresses, canonical_base)
        card["suggestions"] = [
            {
                "label": "Add to draft care plan",
                "uuid": _suggestion_uuid(canonical_base, patient, rec),
                "isRecommended": False,
                "actions": [
                    {
                        "type": "create",
                        "description": "Create a draft CarePlan proposal for this recommendation",
                        "resource": plan,
                    }
                ],
            }
        ]
        card["selectionBehavior"] = "at-most-one"
    if rec.source_url:
        card["links"] = [
            {"label": f"Source: {short(rec.citation or rec.source_url, 80)}", "url": rec.source_url, "type": "absolute"}
        ]
    return card


def _suggestion_uuid(canonical_base: str, patient: str, rec: Recommendation) -> str:
    """UUIDv5 like the card's, of the card's name with '#suggest' appended."""
    name = f"{patient}#{rec.rule}#{rec.code}" + (f"#{rec.lesion}" if rec.lesion else "") + "#suggest"
    return uuid5_text(_namespace(canonical_base), name)


def summary_card(
    patient: str,
    assessment: dict[str, Any],
    issues: Sequence[Issue],
    ruleset: RulesetInfo,
    canonical_base: str,
    care_plan: dict[str, Any],
    class_answers: Sequence[str] = (),
) -> dict[str, Any]:
    count = assessment["lesionCount"]
    n = count["value"]
    organs = len(assessment["organs"])
    state = assessment["omdState"]
    counted = f"{n if n is not None else 'unknown'}{'' if count['exact'] else '+'} lesions in {organs} organs"
    summary = {
        "oligometastatic": f"Oligometastatic disease: {counted} (1–5 = OMD, review definition)",
        "possible": f"Possible oligometastatic disease: at least {n} lesions in {organs} organs; "
        "confirm the lesion count",
        "polymetastatic": f"Polymetastatic disease: {counted} (more than 5 or diffuse)",
    }.get(state, f"Metastatic disease, oligometastatic status unknown ({counted})")
    lines = [
        f"**Oligometastatic status (OMD-01):** {state}",
        f"**Oligometastatic disease class (ESTRO/EORTC 2020): {assessment['omdClass']}**",  # the §2.5 line, whole
        f"**Controlled primary (OMD-03):** {_show(assessment['controlledPrimary'])}; "
        f"**ECOG:** {_show(assessment['ecog'])}",
    ]
    if class_answers:
        lines.append("\n**Classification answers (ESTRO/EORTC 2020)**")
        lines.extend(f"{n}. {answer}" for n, answer in enumerate(class_answers, 1))
    if issues:
        lines.append("\n**Open questions in the record**")
        lines.extend(f"- {i.code}: {i.input} ({', '.join(i.rules) or 'input check'}) — {i.detail}" for i in issues)
    lines.append(f"\nRuleset {ruleset.name} {ruleset.version}. For discussion at tumor board.")
    card: dict[str, Any] = {
        "uuid": card_uuid(canonical_base, patient, "OMD", "assessment"),
        "summary": short(summary),
        "detail": "\n".join(lines),
        "indicator": "info",
        "source": _source("OMD-01", ruleset, ASSESSMENT_TOPIC, REVIEW_URL),
        "extension": {"org.oligocds.ruleset": _ruleset_ext(ruleset)},
    }
    if care_plan.get("activity"):
        card["suggestions"] = [
            {
                "label": "Create draft care plan",
                "uuid": card_uuid(canonical_base, patient, "OMD", "create-care-plan"),
                "isRecommended": False,
                "actions": [
                    {
                        "type": "create",
                        "description": "Create the draft CarePlan proposal",
                        "resource": care_plan,
                    }
                ],
            }
        ]
        card["selectionBehavior"] = "at-most-one"
    return card


def _show(value: Any) -> str:
    return "unknown" if value is None else str(value).lower()


def cards(
    patient: str,
    assessment: dict[str, Any],
    recs: Sequence[Recommendation],
    issues: Sequence[Issue],
    ruleset: RulesetInfo,
    canonical_base: str,
    care_plan: dict[str, Any],
    class_answers: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Summary card first (when a distant metastasis is active), then critical → warning → info, rule id.
    The per-recommendation proposals address what the whole CarePlan addresses (the cancer conditions)."""
    addresses = [a["reference"] for a in care_plan.get("addresses", [])]
    ordered = sorted(recs, key=lambda r: (ORDER[r.indicator], r.rule, r.code, r.lesion or ""))
    out = [recommendation_card(r, patient, ruleset, canonical_base, addresses) for r in ordered]
    if assessment["omdState"] != "not-applicable":
        out.insert(0, summary_card(patient, assessment, issues, ruleset, canonical_base, care_plan, class_answers))
    return out
