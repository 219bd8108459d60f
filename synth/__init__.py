"""synth: synthetic face-forgery data.

The op modules are a library of pure functions on arrays::

    from synth.blend import poisson_blend
    from synth.color import transfer
    from synth.degrade import jpeg_ratio

and the generator's path is available as library calls::

    from synth import make_fake, OnlineFakes
"""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import synth.blend` must not pay for mediapipe/recipes
    if name in ("make_fake", "OnlineFakes"):
        from synth import make

        return getattr(make, name)
    raise AttributeError(f"module 'synth' has no attribute {name!r}")
