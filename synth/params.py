"""Parameter schemas for the op registry.

Each op module (``degrade``, ``color``, ``blend``) lists its ops as ``OPS``: a tuple of
:class:`Op`, each naming the function, the stage it belongs to and the domain of each
parameter.  Recipes give sampling *ranges* inside those domains; ``synth.recipe``
validates them against these schemas and samples concrete values, which are recorded
in the plan so a sample can be replayed exactly (the albumentations idea of sampling
parameters apart from applying them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Param:
    """Domain of one op parameter.

    kind: ``"float"``, ``"int"``, ``"choice"`` or ``"bool"``.
    low/high: inclusive bounds for ``float``/``int`` (``None`` = unbounded).
    choices: allowed values for ``choice`` (and allowed ints when ``int`` has a fixed set).
    default: value used when a recipe does not mention the parameter.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    default: Any = None
    doc: str = ""

    def check(self, value: Any, where: str) -> None:
        """Raise ``ValueError`` (prefixed with ``where``) if ``value`` lies outside the domain."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{where}: expected true/false, got {value!r}")
            return
        if self.kind == "choice" or (self.kind == "int" and self.choices):
            if value not in self.choices:
                raise ValueError(f"{where}: {value!r} is not one of {list(self.choices)}")
            return
        if self.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if self.kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"{where}: {value!r} is below the minimum {self.low}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{where}: {value!r} is above the maximum {self.high}")


@dataclass(frozen=True)
class Op:
    """A registered op.

    stage: which pipeline step calls it; the stage fixes the call signature:

    - ``"blur"``, ``"compression"``, ``"noise"``, ``"resample"``: ``fn(image, **params)``
      (plus ``rng=`` when ``random`` is true), uint8 HxWx3 -> uint8 HxWx3.
    - ``"color"``: ``fn(image, reference, mask=None, ref_mask=None, **params)``.
    - ``"blend"``: ``fn(source, target, mask, **params)``.
    random: the op draws from ``rng`` when applied (e.g. noise); the plan then records
    the seed of that rng so the op replays exactly.
    """

    name: str
    stage: str
    fn: Callable
    params: Mapping[str, Param] = field(default_factory=dict)
    random: bool = False
    doc: str = ""
