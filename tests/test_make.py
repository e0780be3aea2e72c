"""The Makefile: every target that runs the package depends on the install and on the package's
compiled bytecode, which is rebuilt when a module changes (`make -n` in a copy of the layout)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _targets() -> dict[str, tuple[str, list[str]]]:
    """target -> (prerequisites, recipe lines) of the Makefile's plain targets."""
    out: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([a-z][a-z-]*):(?!=)(.*)$", line)
        if rule:
            name = rule.group(1)
            out[name] = (rule.group(2).split("##")[0], [])
        elif line.startswith("\t") and name:
            out[name][1].append(line.strip())
        elif not line.strip():
            name = None
    return out


def test_every_target_that_runs_the_package_waits_for_the_install_and_the_bytecode():
    runs = {name: prereq for name, (prereq, recipe) in _targets().items()
            if any("$(BIN)/lockstep" in r or "$(BIN)/python" in r for r in recipe)}
    assert {"cluster", "test", "bench", "assign", "report"} <= set(runs)
    assert {name for name, prereq in runs.items() if "$(READY)" not in prereq} == set()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_the_bytecode_is_compiled_again_when_a_module_changes(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    t = 1_700_000_000
    # each file newer than the one before: the sources, then the install, models and bytecode
    for i, name in enumerate(("pyproject.toml", "constraints.txt", "pipeline/build_models.py",
                              "pipeline/static_train.py", "pipeline/jitwarm.py",
                              "pipeline/cli.py", ".venv/.installed", "models/.built",
                              ".venv/.bytecode")):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        os.utime(path, (t + i, t + i))

    def plan() -> str:
        return subprocess.run(["make", "-n", "cluster"], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout

    assert "compileall" not in plan() and "lockstep cluster" in plan()
    os.utime(tmp_path / "pipeline/cli.py", (t + 100, t + 100))  # a module edited
    assert "compileall -q pipeline" in plan()
    assert "pipeline.jitwarm" not in plan()  # the models are not rebuilt for it
