"""Latency of the synth.blend methods vs cv2.seamlessClone, plus Poisson agreement numbers.

Inputs: skimage astronaut (target) and chelsea (source) resized to SxS, face-sized
elliptical uint8 mask on the astronaut's face.  Every function is timed in the same run,
after one warm-up call, two ways: "cold" = round-robin (one call of each function per
round: caches and allocator state are disturbed between calls, as in a generation
pipeline; load drifts hit all alike) and "warm" = ``--repeats`` calls back to back.
Medians of ``--repeats`` calls.

A second table (issue #19) times the default exact solve (``poisson_blend(s, t, m)``,
``domain="mask"``) against ``cv2.seamlessClone`` and an earlier solver (``synth/blend.py``
at ``--old-rev``, loaded from git into this process; default ``b85ce69``, the dense
Cholesky solve of every ring before session 17's hierarchical solve of large rings) and
this module with its hierarchical solve switched off (the same code and caches otherwise),
round-robin in one process (the order rotating each round), twice: the same mask every
call, and a new mask every call (a cycle of 8 ellipses 1 px apart, so every call misses
the cache of 4 masks).  Layout ``face`` is that issue's workload: generation's 256-px face
crop (scaled to S) with a 140x180-px ellipse (scaled) in its centre.  Then the agreement
of the default and the ``--old-rev`` solver on those 8 masks in both modes (max abs
difference of the float results; uint8 values that differ).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_blend.py [--sizes 256 512] [--repeats 20] [--layout crop|face]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/scipy load their BLAS

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections import OrderedDict  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data  # noqa: E402

from synth import blend as B  # noqa: E402


def ellipse_mask(size: int, grow: int = 0) -> np.ndarray:
    """uint8 SxS mask: a 140x180-px ellipse at 256 px (scaled to S) in the centre, its
    half-axes grown by ``grow`` px."""
    mask = np.zeros((size, size), np.uint8)
    f = size / 256
    cv2.ellipse(mask, (size // 2, size // 2), (round(70 * f) + grow, round(90 * f) + grow), 0, 0, 360, 255, -1)
    return mask


def face_pair(size: int, layout: str = "image"):
    """(source, target, mask) at SxS.

    layout "image": the whole astronaut photo, a face-sized ellipse on her face (small
    mask); "crop": the face crop that generation works on (crop scale 1.3) with the
    landmark face-oval mask (the mask covers ~40% of the image) and chelsea as source;
    "face": that crop with :func:`ellipse_mask` (issue #19's workload).
    """
    if layout in ("crop", "face"):
        from synth.face import crop_face, get_detector
        from synth.mask import build_mask

        face = get_detector().detect(data.astronaut())
        target, lm, _ = crop_face(data.astronaut(), face.landmarks, scale=1.3, size=size)
        source = cv2.resize(data.chelsea(), (size, size), interpolation=cv2.INTER_AREA)
        mask = build_mask((size, size), lm, "full") if layout == "crop" else ellipse_mask(size)
        return source, target, mask
    target = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    source = cv2.resize(data.chelsea(), (size, size), interpolation=cv2.INTER_AREA)
    mask = np.zeros((size, size), np.uint8)
    f = size / 512
    cv2.ellipse(mask, (round(215 * f), round(115 * f)), (round(45 * f), round(60 * f)), 0, 0, 360, 255, -1)
    return source, target, mask


def cv_clone(source, target, mask, flag):
    x, y, w, h = cv2.boundingRect(mask)
    # centre of the bounding rect keeps the source in place; seamlessClone modifies the
    # mask in place, hence the copy (also inside the timed call, for a fair comparison:
    # a 256x256 uint8 copy costs ~5 us)
    return cv2.seamlessClone(source, target, mask.copy(), (x + w // 2, y + h // 2), flag)


def print_header(args) -> None:
    print(f"Command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}` "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cv2.setNumThreads(1))  ")
    print(f"Machine: {os.cpu_count()}-core CPU ({cpu_name()}, {'with' if avx512() else 'without'} AVX-512), shared; "
          f"Python {platform.python_version()}, OpenCV {cv2.__version__}, numpy {np.__version__}  ")


def avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and " avx512f" in line for line in fh)
    except OSError:
        return False


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def old_blend_module(rev: str):
    """``synth/blend.py`` as of git revision ``rev``, as a module of its own (its imports
    resolve to today's synth package); None, with a note on stderr, if git cannot give it."""
    repo = Path(__file__).resolve().parents[1]
    try:
        text = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:synth/blend.py"],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"old solver: cannot read synth/blend.py at {rev!r} ({exc}); column skipped", file=sys.stderr)
        return None
    module = types.ModuleType(f"blend_at_{rev}")
    exec(compile(text, f"synth/blend.py@{rev}", "exec"), module.__dict__)  # noqa: S102 - the project's own file
    return module


def round_robin(cases: dict, inputs: list, repeats: int) -> dict[str, float]:
    """Median ms per case; each round calls every case once, call i on inputs[i % len].

    The order rotates from round to round (round i starts with case i mod n): a call right
    after ``seamlessClone`` finds its data evicted from the caches and is measurably slower
    (15-23 % at 512 px for a new mask each call, measured with the same code in both
    positions), so a fixed order would bias the comparison."""
    times = {name: [] for name in cases}
    for name, fn in cases.items():  # warm-up: caches that persist across masks (kernel table, DST eigenvalues)
        fn(*inputs[0])
    names = list(cases)
    for i in range(repeats):
        args = inputs[i % len(inputs)]
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            cases[name](*args)
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * float(np.median(v)) for name, v in times.items()}


DENSE = "exact, dense Cholesky for every ring (this module)"
_DENSE_CACHE: OrderedDict = OrderedDict()


def dense_poisson_blend(source, target, mask):
    """The default exact solve of this module with the hierarchical path switched off (every
    ring gets the dense Cholesky factor), in a cache of its own: the same code, data layout
    and caches as the default, so its column isolates the hierarchical solve's effect."""
    saved = B._HODLR_DENSE_MAX, B._RING_CACHE
    B._HODLR_DENSE_MAX, B._RING_CACHE = sys.maxsize, _DENSE_CACHE
    try:
        return B.poisson_blend(source, target, mask)
    finally:
        B._HODLR_DENSE_MAX, B._RING_CACHE = saved


def exact_vs_opencv(sizes, layout: str, repeats: int, old_rev: str) -> None:
    """Issue #19's table: the default exact solve vs cv2.seamlessClone vs the old solver."""
    old = old_blend_module(old_rev)
    rows, agree = {}, []
    for size in sizes:
        s, t, m = face_pair(size, layout)
        masks = [m] + [ellipse_mask(size, k) if layout == "face" else cv2.dilate(m, np.ones((3, 3), np.uint8), iterations=k)
                       for k in range(1, 8)]
        cases = {"exact (new default)": lambda s_, t_, m_: B.poisson_blend(s_, t_, m_),
                 "cv2.seamlessClone NORMAL_CLONE": lambda s_, t_, m_: cv_clone(s_, t_, m_, cv2.NORMAL_CLONE)}
        if old is not None:
            cases[f"exact, old solver ({old_rev})"] = lambda s_, t_, m_: old.poisson_blend(s_, t_, m_)
        cases[DENSE] = dense_poisson_blend
        cases["box domain (for reference)"] = lambda s_, t_, m_: B.poisson_blend(s_, t_, m_, domain="box")
        same = round_robin(cases, [(s, t, m)], repeats)
        new = round_robin(cases, [(s, t, mk) for mk in masks], max(repeats, 2 * len(masks)))
        rows[size] = (same, new, int((m > 0).sum()))
        if old is not None:
            for mode in B.POISSON_MODES:
                fmax, umax, ucount = 0.0, 0, 0
                for mk in masks:
                    f_new, u_new = B.poisson_blend_float(s, t, mk, mode=mode), B.poisson_blend(s, t, mk, mode=mode)
                    f_old, u_old = old.poisson_blend_float(s, t, mk, mode=mode), old.poisson_blend(s, t, mk, mode=mode)
                    du = np.abs(u_new.astype(int) - u_old)
                    fmax, umax, ucount = max(fmax, float(np.abs(f_new - f_old).max())), max(umax, int(du.max())), \
                        ucount + int((du > 0).sum())
                agree.append((size, mode, fmax, umax, ucount))
    print(f"\nExact (mask) solve vs cv2.seamlessClone vs the old solver; layout {layout}, "
          f"round-robin medians of >= {repeats} calls, ms (mask: " +
          ", ".join(f"{rows[sz][2]} px at {sz}" for sz in sizes) + "):\n")
    names = list(rows[sizes[0]][0])
    print("| method | " + " | ".join(f"{sz}² same mask | {sz}² new mask each call" for sz in sizes) + " |")
    print("|---|" + "---:|---:|" * len(sizes))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{rows[sz][0][name]:.2f} | {rows[sz][1][name]:.2f}" for sz in sizes) + " |")
    base, ours = "cv2.seamlessClone NORMAL_CLONE", "exact (new default)"
    for label, name in (("new default", ours), ("old solver", f"exact, old solver ({old_rev})"),
                        ("dense every ring", DENSE)):
        if name in names:
            print(f"| **seamlessClone / {label}** | " + " | ".join(
                " | ".join(f"**{rows[sz][k][base] / rows[sz][k][name]:.2f}x**" for k in (0, 1)) for sz in sizes) + " |")
    for size, mode, fmax, umax, ucount in agree:
        print(f"\n{size}², {mode}, the {len(masks)} masks: new default vs old solver: max abs difference {fmax:.3g} "
              f"(float result), {umax} (uint8; {ucount} of {len(masks) * size * size * 3} values differ)", end="")
    print()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--layout", choices=("image", "crop", "face"), default="image",
                    help="image: small face ellipse in the whole photo; crop: generation's face crop + face-oval mask; "
                         "face: that crop with a 140x180 ellipse (at 256 px; issue #19)")
    ap.add_argument("--old-rev", default="b85ce69",
                    help="git revision whose synth/blend.py is the 'old solver' of the exact-solve table")
    ap.add_argument("--exact-only", action="store_true", help="only the exact-solve table (issue #19)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    if args.exact_only:
        print_header(args)
        exact_vs_opencv(args.sizes, args.layout, args.repeats, args.old_rev)
        return

    cases = {
        "alpha": lambda s, t, m: B.alpha_blend(s, t, m),
        "poisson normal (mask, exact)": lambda s, t, m: B.poisson_blend(s, t, m),
        "poisson mixed (mask, exact)": lambda s, t, m: B.poisson_blend(s, t, m, mode="mixed"),
        "poisson normal (box, OpenCV formulation)": lambda s, t, m: B.poisson_blend(s, t, m, domain="box"),
        "poisson mixed (box)": lambda s, t, m: B.poisson_blend(s, t, m, mode="mixed", domain="box"),
        "pyramid (levels=5)": lambda s, t, m: B.pyramid_blend(s, t, m),
        "wavelet (haar, levels=5)": lambda s, t, m: B.wavelet_blend(s, t, m),
        "cv2.seamlessClone NORMAL_CLONE": lambda s, t, m: cv_clone(s, t, m, cv2.NORMAL_CLONE),
        "cv2.seamlessClone MIXED_CLONE": lambda s, t, m: cv_clone(s, t, m, cv2.MIXED_CLONE),
    }
    timings: dict[int, dict[str, float]] = {}
    agreement = []
    for size in args.sizes:
        s, t, m = face_pair(size, args.layout)
        for fn in cases.values():
            fn(s, t, m)  # warm-up (caches: potential table, DST eigenvalues)
        cold = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn(s, t, m)
                cold[name].append(time.perf_counter() - t0)
        warm = {name: [] for name in cases}
        for name, fn in cases.items():
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn(s, t, m)
                warm[name].append(time.perf_counter() - t0)
        timings[size] = {name: (1e3 * float(np.median(cold[name])), 1e3 * float(np.median(warm[name])))
                         for name in cases}
        inside = m > 0
        for mode, flag in (("normal", cv2.NORMAL_CLONE), ("mixed", cv2.MIXED_CLONE)):
            ref = cv_clone(s, t, m, flag).astype(int)
            for domain in B.POISSON_DOMAINS:
                diff = np.abs(B.poisson_blend(s, t, m, mode=mode, domain=domain).astype(int) - ref)
                agreement.append((size, mode, domain, diff.mean(), diff[inside].mean(), diff.max()))

    print_header(args)
    print(f"Median of {args.repeats} calls after warm-up, cold (round-robin) / warm (back to back); "
          f"layout {args.layout}, mask "
          + ", ".join(f"{int((face_pair(sz, args.layout)[2] > 0).sum())} px at {sz}" for sz in args.sizes) + ".\n")
    print("| method | " + " | ".join(f"{sz}x{sz} cold ms | {sz}x{sz} warm ms" for sz in args.sizes) + " |")
    print("|---|" + "---:|---:|" * len(args.sizes))
    for name in cases:
        print(f"| {name} | " + " | ".join(f"{timings[sz][name][0]:.2f} | {timings[sz][name][1]:.2f}"
                                          for sz in args.sizes) + " |")
    base = "cv2.seamlessClone NORMAL_CLONE"
    for ours in ("poisson normal (mask, exact)", "poisson normal (box, OpenCV formulation)"):
        print(f"| **ratio seamlessClone / {ours}** | " + " | ".join(
            " | ".join(f"**{timings[sz][base][k] / timings[sz][ours][k]:.2f}x**" for k in (0, 1))
            for sz in args.sizes) + " |")
    print("\nAgreement with cv2.seamlessClone (same mode; gray levels, uint8 output):\n")
    print("| size | mode | domain | mean abs diff (image) | mean abs diff (inside mask) | max abs diff |")
    print("|---:|---|---|---:|---:|---:|")
    for size, mode, domain, mean_all, mean_in, mx in agreement:
        print(f"| {size} | {mode} | {domain} | {mean_all:.3f} | {mean_in:.2f} | {mx} |")
    exact_vs_opencv(args.sizes, args.layout, args.repeats, args.old_rev)


if __name__ == "__main__":
    main()
