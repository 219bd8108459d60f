"""Public names of a package imported on first use (PEP 562), so importing the package stays cheap."""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Mapping


def lazy_exports(package: str, public: Mapping[str, tuple[str, str]]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: name -> ``(module, attribute)`` loaded on first access.

    A loaded name is stored in the package, so the import happens once.
    """
    def __getattr__(name: str):
        if name in public:
            module, attr = public[name]
            value = getattr(importlib.import_module(module), attr)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__
