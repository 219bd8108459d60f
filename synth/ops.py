"""The op registry: name -> :class:`synth.params.Op` (function + parameter schema).

The op modules stay pure; each lists its ops in a module-level ``OPS`` tuple and this
module merges them once.  Recipes name ops by these names and ``synth.recipe``
validates recipe ranges against the schemas held here.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from synth import blend, color, degrade, perturb
from synth.params import Op

#: Call signature of each stage (see :class:`synth.params.Op`).
STAGES = ("perturb", "blur", "resample", "compression", "noise", "color", "blend")


def _build(modules) -> Mapping[str, Op]:
    registry: dict[str, Op] = {}
    for module in modules:
        for op in module.OPS:
            if op.name in registry:
                raise RuntimeError(f"op name {op.name!r} registered twice ({module.__name__})")
            if op.stage not in STAGES:
                raise RuntimeError(f"op {op.name!r} has unknown stage {op.stage!r}")
            registry[op.name] = op
    return MappingProxyType(registry)


REGISTRY: Mapping[str, Op] = _build((perturb, degrade, color, blend))


def get_op(name: str) -> Op:
    """Return the registered op ``name``; ``ValueError`` lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(REGISTRY))}") from None


def apply_step(step: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Apply one recorded plan step ``{"op": name, "params": {...}, "seed": int?}``.

    ``args``/``kwargs`` are the stage's positional inputs (image, or source/target/mask…).
    Random ops get a fresh ``np.random.default_rng(step["seed"])`` so a step replays exactly.
    """
    op = get_op(step["op"])
    params = dict(step.get("params", {}))
    if op.random:
        params["rng"] = np.random.default_rng(step["seed"])
    return op.fn(*args, **kwargs, **params)
