"""The Makefile, as make reads it (`make -n` in a copy of the layout): on a fresh clone every
target that runs the package plans the whole install, and the package's compiled bytecode is
rebuilt when a module changes."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _recipes() -> dict[str, list[str]]:
    """target -> recipe lines, for the Makefile's plain targets."""
    out: dict[str, list[str]] = {}
    name = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([a-z][a-z-]*):(?!=)", line)
        if rule:
            name = rule.group(1)
            out[name] = []
        elif line.startswith("\t") and name:
            out[name].append(line.strip())
        elif not line.strip():
            name = None
    return out


SOURCES = ("pyproject.toml", "constraints.txt", "pipeline/build_models.py",
           "pipeline/static_train.py", "pipeline/jitwarm.py", "pipeline/cli.py")
BUILT = (".venv/.installed", "models/.built", ".venv/.bytecode")
T0 = 1_700_000_000


def _layout(root: Path, names: tuple[str, ...]) -> None:
    """The Makefile and empty `names` under `root`, each newer than the one before."""
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        os.utime(path, (T0 + i, T0 + i))



def _plan(root: Path, target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=root, capture_output=True, text=True,
                          check=True).stdout


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


@needs_make
def test_on_a_fresh_clone_every_target_that_runs_the_package_plans_the_whole_install(tmp_path):
    # what make itself expands, not the Makefile's text: a variable a rule names before it is
    # defined expands to nothing, and `make install` on a fresh clone then did nothing
    _layout(tmp_path, SOURCES)
    runs = {name for name, recipe in _recipes().items()
            if any("$(BIN)/lockstep" in r or "$(BIN)/python" in r for r in recipe)}
    assert {"cluster", "test", "bench", "assign", "report"} <= runs
    for target in sorted(runs | {"install"}):
        plan = _plan(tmp_path, target)
        for step in ("-m venv .venv", "pip install --quiet torch==2.13.0",
                     "-m pipeline.build_models", "-m pipeline.jitwarm", "compileall -q pipeline"):
            assert step in plan, (target, step)


@needs_make
def test_the_bytecode_is_compiled_again_when_a_module_changes(tmp_path):
    # the sources, then the install, models and bytecode, each newer than the one before
    _layout(tmp_path, SOURCES + BUILT)

    def plan() -> str:
        return _plan(tmp_path, "cluster")

    assert "compileall" not in plan() and "lockstep cluster" in plan()
    os.utime(tmp_path / "pipeline/cli.py", (T0 + 100, T0 + 100))  # a module edited
    assert "compileall -q pipeline" in plan()
    assert "pipeline.jitwarm" not in plan()  # the models are not rebuilt for it
