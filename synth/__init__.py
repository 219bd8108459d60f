"""synth: synthetic face-forgery data.

The op modules are a library of pure functions on arrays::

    from synth.blend import poisson_blend
    from synth.color import transfer
    from synth.degrade import jpeg_ratio

and the generator's path is available as library calls::

    from synth import make_fake, OnlineFakes

The public names below are imported on first use (``import synth.blend`` does not pay for
mediapipe and the recipes).
"""
from __future__ import annotations

from synth._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> (module, attribute)
_PUBLIC = {
    "make_fake": ("synth.make", "make_fake"),
    "OnlineFakes": ("synth.make", "OnlineFakes"),
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
