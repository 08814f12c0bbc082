"""The same data sent the way a FHIR client creates it — a transaction of POST entries with `urn:uuid` fullUrls, no
ids, references by urn (FHIR R4 Bundle reference resolution) — gives the same answer. Every golden Bundle is
re-encoded so; only the resource ids (assigned from the urns) differ."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.bootstrap import Container
from tests.conftest import FIXTURES

BUNDLES = sorted(p for p in FIXTURES.glob("*/bundle.json") if not p.parent.name.startswith("dq06"))


def _urn(key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}"


def _relink(node: Any, urns: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _relink(v, urns) for k, v in node.items()}
        if isinstance(out.get("reference"), str) and out["reference"] in urns:
            out["reference"] = urns[out["reference"]]
        return out
    if isinstance(node, list):
        return [_relink(v, urns) for v in node]
    return node


def as_post_transaction(bundle: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The Bundle as a POST transaction, and each resource's old "Type/id" → new "Type/<urn id>"."""
    resources = [e["resource"] for e in bundle["entry"]]
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    urns = {key: _urn(key) for key in keys if not key.startswith("Patient/")}  # Patients keep their ids
    entries = []
    for key, resource in zip(keys, resources, strict=True):
        fresh = _relink(resource, urns)
        entry: dict[str, Any] = {"resource": fresh, "request": {"method": "POST", "url": resource["resourceType"]}}
        if key in urns:
            del fresh["id"]
            entry["fullUrl"] = urns[key]
        entries.append(entry)
    renamed = {key: f"{key.split('/')[0]}/{urn.rsplit(':', 1)[-1]}" for key, urn in urns.items()}
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, renamed


def _summary(result: dict[str, Any], renamed: dict[str, str]) -> Any:
    lesions = sorted(
        (renamed.get(lesion["condition"], lesion["condition"]), lesion["siteClass"], json.dumps(lesion["mirels"]))
        for lesion in result["assessment"]["lesions"]
    )
    assessment = {k: v for k, v in result["assessment"].items() if k != "lesions"}
    recs = sorted((r["rule"], r["code"], r["indicator"]) for r in result["recommendations"])
    issues = sorted((i["code"], i["input"], tuple(i["rules"])) for i in result["issues"])
    return assessment, lesions, recs, issues


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.parent.name)
def test_post_transaction_with_urn_references_gives_the_same_answer(container: Container, path: Path) -> None:
    bundle = json.loads(path.read_text())
    transaction, renamed = as_post_transaction(bundle)
    as_of = date(2026, 11, 26)
    (first,) = container.evaluator.evaluate_json(bundle, as_of)
    (second,) = container.evaluator.evaluate_json(transaction, as_of)
    assert _summary(first, renamed) == _summary(second, {})
