"""IDT colour transfer with numpy's sort against the radix sort (``synth._rowsort``), side by side.

    python benchmarks/bench_idt_sort.py [--faces ../shared/data/faces/utkface] [--pairs 40] [--rounds 5]

Both paths run in one process, alternating call by call on the same (image, reference, mask, seed), so the
ratio holds on a noisy VM. Reports the sort of one (3, 4096) projection block, the whole ``idt_transfer``
call (256 px, elliptical face mask, 10 iterations) for each path, which path ``sort_rows`` takes on this CPU,
and checks the two outputs are identical. Without ``--faces``, scikit-image's embedded photos are used.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", help="a folder of face images (default: scikit-image's embedded photos)")
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5, help="calls per pair and path")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import cv2
    import numpy as np
    from skimage import data

    from synth import _rowsort
    from synth import color as C

    cv2.setNumThreads(1)
    if args.faces:
        files = sorted(glob.glob(os.path.join(args.faces, "*.jpg")) + glob.glob(os.path.join(args.faces, "*.png")))
        if len(files) < 2:
            p.error(f"--faces {args.faces}: fewer than two .jpg/.png images")
        files = files[:2 * args.pairs]
        images = [cv2.resize(cv2.imread(f)[:, :, ::-1], (256, 256), interpolation=cv2.INTER_AREA) for f in files]
    else:
        images = [cv2.resize(im, (256, 256), interpolation=cv2.INTER_AREA)
                  for im in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())]
    mask = np.zeros((256, 256), np.uint8)
    cv2.ellipse(mask, (128, 128), (70, 90), 0, 0, 360, 255, -1)
    paths = {"numpy sort": lambda a: np.sort(a, axis=1), "radix sort": _rowsort.radix_sort_rows}

    rng = np.random.default_rng(0)
    block = (rng.integers(0, 256, (4096, 3)).astype(np.float32) @ C._random_rotations(rng, 1)[0]).T
    sort_ms = {name: [] for name in paths}
    for _ in range(200):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn(block)
            sort_ms[name].append((time.perf_counter() - t) * 1e3)

    call_ms = {name: [] for name in paths}
    identical = True
    n = max(1, len(images) // 2)
    for i in range(min(args.pairs, n)):
        image, reference = images[(2 * i) % len(images)], images[(2 * i + 1) % len(images)]
        for r in range(args.rounds):
            outs = []
            for name, fn in paths.items():
                C.sort_rows = fn  # the module-level name idt_transfer calls
                t = time.perf_counter()
                outs.append(C.idt_transfer(image, reference, mask, rng=np.random.default_rng(1000 * i + r)))
                call_ms[name].append((time.perf_counter() - t) * 1e3)
            identical &= bool(np.array_equal(*outs))
    C.sort_rows = _rowsort.sort_rows

    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"sort_rows takes the {'numpy' if _rowsort.numpy_sort_is_vectorised() else 'radix'} path here")
    print(f"{min(args.pairs, n)} pairs x {args.rounds} calls per path, 256 px, masked, 10 iterations; "
          f"outputs identical: {identical}\n")
    print("| path | sort (3, 4096) ms | idt_transfer ms |\n|---|---:|---:|")
    for name in paths:
        print(f"| {name} | {np.median(sort_ms[name]):.3f} | {np.median(call_ms[name]):.2f} |")
    a, b = (np.median(call_ms[k]) for k in paths)
    print(f"\nidt_transfer, numpy sort / radix sort: {a / b:.2f}x")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
