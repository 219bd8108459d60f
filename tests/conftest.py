"""Fixtures shared by several test modules.

The data fixtures are module-scoped, like the per-module copies they replace: a module that
changes one in place cannot reach another module.  Heavy imports (scikit-image, MediaPipe,
the detector) happen inside the fixtures, so collecting a module that uses none of them
stays cheap.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest


@pytest.fixture(scope="session")
def load_script():
    """``load_script("examples/x.py")``: a script of the repository (a path relative to its root)
    imported as a module, for testing examples and benchmarks that are not in a package. Its folder is on
    ``sys.path`` while it loads, as when it runs as a script, so it may import its neighbours."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def load(relpath: str):
        path = root / relpath
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
        return module

    return load


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    """scikit-image's astronaut photo (512 x 512 RGB uint8), the embedded default face."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def astro_lm(astro) -> np.ndarray:
    """The astronaut's 468 face-mesh landmarks ((468, 2) float32 pixel coordinates)."""
    from synth.face import get_detector

    return get_detector().detect(astro).landmarks


@pytest.fixture(scope="module")
def jittered_pool(astro_lm):
    """``jittered_pool(n=5)``: a FacePool of ``n`` faces whose landmarks are the astronaut's
    plus N(0, 2) px noise (seed 0), and whose images are black 256 x 256: enough for plans."""
    from synth.pool import FacePool

    def make(n=5):
        rng = np.random.default_rng(0)
        lms = np.stack([astro_lm + rng.normal(0, 2, size=astro_lm.shape).astype(np.float32) for _ in range(n)])
        return FacePool(keys=[f"face{i}.png" for i in range(n)], landmarks=lms,
                        loader=lambda k: np.zeros((256, 256, 3), np.uint8))

    return make


@pytest.fixture(scope="session")
def bomb_png():
    """``bomb_png(w, h)``: the bytes of a PNG whose header claims w x h RGB pixels but which
    holds almost no data (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    def make(w: int, h: int) -> bytes:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))

    return make


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory):
    """(train, eval): a toy synth directory (24 samples, 64 px, seed 0) and a csv-format
    evaluation set with two generators (12 samples, seed 99): the data of the tiny training runs."""
    from detector.data import write_toy_eval_dir, write_toy_synth_dir

    root = tmp_path_factory.mktemp("toy")
    return (write_toy_synth_dir(root / "data", n=24, size=64, seed=0),
            write_toy_eval_dir(root / "eval", n=12, size=64, seed=99, generators=("gen_a", "gen_b")))


@pytest.fixture(scope="module")
def tiny_fused_run(toy_dirs, astro, astro_lm):
    """``tiny_fused_run(out, **overrides)``: a tiny one-round ``detector train`` run into ``out`` (a freq_attention
    CNN on the test backbone, fused with a statistics model fitted on two astronaut faces; condition ``auc>1``),
    returning the run's state: the run folder the benchmarks that read one are tested on. ``overrides`` are
    further ``run_loop`` keywords (e.g. ``cnn_members=2``)."""
    from detector.loop import run_loop
    from synth.pool import FacePool

    data, ev = toy_dirs
    faces = FacePool.from_arrays({"a": astro, "b": astro.copy()}, {"a": astro_lm, "b": astro_lm})
    tiny = {"backbone": "test_resnet", "embed_dim": 16, "decoder_dim": 8, "head_hidden": 16}
    settings = dict(model_name="freq_attention", model_kwargs=tiny, patch=32, batch_size=8, workers=0,
                    epochs_per_round=1, lr=3e-3, statistics_n=6, statistics_steps=20, condition="auc>1",
                    index="/faces/index", regen_size=64, progress=False, statistics_faces=faces, max_rounds=1,
                    log=lambda m: None)

    def run(out, **overrides):
        return run_loop([data], ev, out, **{**settings, **overrides})

    return run
