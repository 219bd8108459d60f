"""A normal (non-editable) install works: the wheel ships the recipes and the ``py.typed``
markers as package data.

Builds the wheel from a copy of the sources (no build isolation, no index: no network),
installs it with ``--no-deps --target`` into a scratch folder (the test venv already has the
dependencies) and runs its ``synth`` console script with that folder first on ``sys.path``
and a working directory outside the source tree.  ~10 s.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: what the build reads (pyproject.toml, setup.py); a new build input must be added here
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "synth", "detector", "recipes")


def _run(cmd, cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, built and installed into a scratch ``--target`` folder; returns that folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("faceforge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.split("/")[-1] for n in names if n.startswith("synth/recipes/"))
    assert shipped == sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))
    assert not any(n.startswith(("tests/", "recipes/")) for n in names)
    assert {"synth/py.typed", "detector/py.typed"} <= set(names)  # typing markers (package data, setup.py)
    assert "detector/weights/default.pt" in names  # the shipped detector
    target = tmp / "site"
    _run(pip + ["install", "--no-deps", "--no-index", "-q", "--target", target, wheel], cwd=tmp)
    return target


@pytest.mark.slow
def test_wheel_install_runs_synth_recipes_and_generate(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONNOUSERSITE": "1"}
    where = _run([sys.executable, "-c", "import synth, synth.recipe; print(synth.__file__); "
                                        "print(synth.recipe.RECIPE_DIR)"], cwd=tmp_path, env=env).split()
    assert where == [str(installed / "synth" / "__init__.py"), str(installed / "synth" / "recipes")]

    synth = installed / "bin" / "synth"
    listed = _run([synth, "recipes"], cwd=tmp_path, env=env)
    assert {line.split()[0] for line in listed.splitlines() if line.strip()} >= {"mixed", "self-blend", "swap"}

    custom = tmp_path / "mine.yaml"  # --recipe takes a path; extends: finds the shipped recipe by name
    custom.write_text("extends: mixed\nname: mine\npairing: {self: 1}\n")
    assert _run([synth, "recipes", custom], cwd=tmp_path, env=env).split()[0] == "mine"

    for recipe in ("mixed", custom):
        out = tmp_path / f"out-{Path(recipe).stem}"
        _run([synth, "generate", "--n", "4", "--recipe", recipe, "--size", "64", "--backend", "serial",
              "--out", out, "--quiet"], cwd=tmp_path, env=env)
        report = json.loads((out / "report.json").read_text())
        assert report["n_done"] == 4 and report["recipe"] == Path(recipe).stem
