"""The command line as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "oligo-breast.json"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_evaluate_prints_results_json() -> None:
    done = _cli("evaluate", str(EXAMPLE), "--as-of", "2026-11-26")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["patient"] == "Patient/example-1" and result["assessment"]["omdState"] == "oligometastatic"


def test_evaluate_table_for_people() -> None:
    done = _cli("evaluate", str(EXAMPLE), "--as-of", "2026-11-26", "--format", "table")
    assert done.returncode == 0 and "mdt-review" in done.stdout and "oligometastatic" in done.stdout


def test_evaluate_bad_file_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Patient"}')
    done = _cli("evaluate", str(bad))
    assert done.returncode == 2 and "Bundle" in done.stderr


def test_rules_check_and_a_broken_rules_dir(tmp_path: Path) -> None:
    ok = _cli("rules", "check")
    assert ok.returncode == 0 and "sha256:" in ok.stdout
    broken = tmp_path / "rules"
    shutil.copytree(ROOT / "service" / "rules" / "files", broken)
    (broken / "mdt.yaml").write_text("area: mdt\nrules: []\n")
    bad = _cli("rules", "check", str(broken))
    assert bad.returncode == 1 and "mdt.yaml" in bad.stderr


def test_rules_test_runs_the_scenarios() -> None:
    done = _cli("rules", "test")
    assert done.returncode == 0, done.stdout
    assert " 0 failed" in done.stdout
