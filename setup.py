"""Build configuration that ``pyproject.toml`` cannot express: the top-level ``recipes/`` folder
(the only copy of the recipes) is shipped as the package data ``synth/recipes``, where
:mod:`synth.recipe` finds it through :mod:`importlib.resources` in an installed wheel.  Source
checkouts and editable installs read ``recipes/`` itself.  The shipped detector checkpoint,
``detector/weights/default.pt``, is package data too.  ``tests/test_wheel.py`` builds the
wheel and runs ``synth`` from it."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["synth", "synth.*", "detector", "detector.*"]) + ["synth.recipes"],
    package_dir={"synth.recipes": "recipes"},
    package_data={"synth.recipes": ["*.yaml"], "synth": ["py.typed"], "detector": ["py.typed", "weights/*.pt"]},
)
