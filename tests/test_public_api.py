"""The packages' public names (``synth.__all__``, ``detector.__all__``) resolve, and are imported
on first use: importing the package alone, or a light submodule, loads none of the heavy ones."""
import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["synth", "detector"])
def test_all_names_resolve(package):
    module = importlib.import_module(package)
    assert module.__all__ == sorted(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    namespace = {}
    exec(f"from {package} import *", namespace)
    assert set(module.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(module, "no_such_name")


def test_synth_imports_its_public_names_on_first_use():
    code = ("import sys, synth, synth.blend\n"
            "print(sorted(m for m in ('synth.make', 'synth.recipe', 'mediapipe') if m in sys.modules))\n"
            "synth.make_fake\n"
            "print('synth.make' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"]


@pytest.mark.parametrize("package", ["synth", "detector"])
def test_python_m_runs_the_command(package):
    out = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout
    bad = subprocess.run([sys.executable, "-m", package, "no-such-command"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2  # argparse's usage error, as the console script
