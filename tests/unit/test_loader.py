"""Rule files: schema check, digest, stage order, and the errors a rule author sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.config import Settings
from service.rules.loader import RuleFileError, default_rules_dir, load_ruleset

SETTINGS = Settings().rule_settings()


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target)
    return target


def test_shipped_rules_load_in_dependency_order() -> None:
    rs = load_ruleset(default_rules_dir(), SETTINGS)
    assert rs.name == "oligocds" and rs.digest.startswith("sha256:")
    stage_of = {part.key: k for k, parts in enumerate(rs.stages) for part in parts}
    assert stage_of["OMD-01:derive"] < stage_of["OMD-CLASS:derive"] < stage_of["SABR-01:outcomes"]
    assert stage_of["SABR-01:derive"] < stage_of["EBRT-PALL:outcomes"]
    assert stage_of["BMA-01:derive"] < stage_of["BMA-02:outcomes"]
    ids = {r.id for r in rs.rules}
    for rule in ["OMD-01", "OMD-02", "OMD-03", "OMD-CLASS", "PS-01", "MDT-01", "MDT-02", "MDT-03"]:
        assert rule in ids
    assert {f"DQ-0{i}" for i in range(1, 7)} <= ids
    assert all(r.citation for r in rs.rules)


def test_digest_changes_with_any_rule_file(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    before = load_ruleset(folder, SETTINGS).digest
    mdt = folder / "mdt.yaml"
    mdt.write_text(mdt.read_text() + "\n# a comment\n")
    assert load_ruleset(folder, SETTINGS).digest != before


def test_schema_error_names_file_and_place(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    mdt = folder / "mdt.yaml"
    mdt.write_text(mdt.read_text().replace("indicator: warning", "indicator: urgent", 1))
    with pytest.raises(RuleFileError, match=r"mdt.yaml: rules/0/outcomes/0/indicator"):
        load_ruleset(folder, SETTINGS)


def test_unknown_setting_and_bad_yaml_are_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    omd = folder / "omd_status.yaml"
    omd.write_text(omd.read_text().replace("controlled_primary_days", "no_such_setting", 1))
    with pytest.raises(RuleFileError, match="no_such_setting"):
        load_ruleset(folder, SETTINGS)
    (folder / "omd_status.yaml").write_text("rules: [")
    with pytest.raises(RuleFileError, match="not valid YAML"):
        load_ruleset(folder, SETTINGS)


def test_duplicate_rule_id_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    mdt = folder / "mdt.yaml"
    mdt.write_text(mdt.read_text().replace("id: MDT-02", "id: MDT-01"))
    with pytest.raises(RuleFileError, match="defined twice"):
        load_ruleset(folder, SETTINGS)


def test_cyclic_derivations_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cyclic"
    folder.mkdir()
    (folder / "ruleset.yaml").write_text("name: t\nversion: 0.0.1\n")
    (folder / "x.yaml").write_text(
        "area: x\nrules:\n"
        "  - {id: A-1, title: aaa, citation: cited, level: patient,\n"
        "     derive: {fact: a, cases: [{value: 1, when: {b: 1}}]}}\n"
        "  - {id: B-1, title: bbb, citation: cited, level: patient,\n"
        "     derive: {fact: b, cases: [{value: 1, when: {a: 1}}]}}\n"
    )
    with pytest.raises(RuleFileError, match="cycle"):
        load_ruleset(folder, SETTINGS)


def test_every_threshold_line_carries_a_provenance_tag() -> None:
    # clinical-rules §1.1: the detail lists "the thresholds and their provenance tags" ([REV …], [LABEL], [KNOW]…)
    import yaml

    files = Path(__file__).resolve().parents[2] / "service" / "rules" / "files"
    untagged = []
    for path in files.glob("*.yaml"):
        for rule in yaml.safe_load(path.read_text()).get("rules", []):
            lines = [*rule.get("thresholds", [])]
            lines += [t for outcome in rule.get("outcomes", []) for t in outcome.get("thresholds", [])]
            untagged += [f"{rule['id']}: {t}" for t in lines if "[" not in t]
    assert not untagged
