"""Latency of the synth.blend methods vs cv2.seamlessClone, plus Poisson agreement numbers.

Inputs: skimage astronaut (target) and chelsea (source) resized to SxS, face-sized
elliptical uint8 mask on the astronaut's face.  Every function is timed in the same run,
after one warm-up call, two ways: "cold" = round-robin (one call of each function per
round: caches and allocator state are disturbed between calls, as in a generation
pipeline; load drifts hit all alike) and "warm" = ``--repeats`` calls back to back.
Medians of ``--repeats`` calls.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_blend.py [--sizes 256 512] [--repeats 20] [--layout crop]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/scipy load their BLAS

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data  # noqa: E402

from synth import blend as B  # noqa: E402


def face_pair(size: int, layout: str = "image"):
    """(source, target, mask) at SxS.

    layout "image": the whole astronaut photo, a face-sized ellipse on her face (small
    mask); "crop": the face crop that generation works on (crop scale 1.3) with the
    landmark face-oval mask (the mask covers ~40% of the image) and chelsea as source.
    """
    if layout == "crop":
        from synth.face import crop_face, get_detector
        from synth.mask import build_mask

        face = get_detector().detect(data.astronaut())
        target, lm, _ = crop_face(data.astronaut(), face.landmarks, scale=1.3, size=size)
        source = cv2.resize(data.chelsea(), (size, size), interpolation=cv2.INTER_AREA)
        return source, target, build_mask((size, size), lm, "full")
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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--layout", choices=("image", "crop"), default="image",
                    help="image: small face ellipse in the whole photo; crop: generation's face crop + face-oval mask")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

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

    print(f"Command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}` "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cv2.setNumThreads(1))  ")
    print(f"Machine: {os.cpu_count()}-core CPU ({cpu_name()}), shared; Python {platform.python_version()}, "
          f"OpenCV {cv2.__version__}, numpy {np.__version__}  ")
    print(f"Median of {args.repeats} calls after warm-up, cold (round-robin) / warm (back to back); "
          f"layout {args.layout}, mask " + ", ".join(f"{int((face_pair(sz, args.layout)[2] > 0).sum())} px at {sz}" for sz in args.sizes) + ".\n")
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


if __name__ == "__main__":
    main()
