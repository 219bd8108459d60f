"""Where one generation sample's time goes: cProfile of plan + render + write in one process.

    python benchmarks/profile_render.py --index bench-out/utk.index --n 300 [--recipe mixed] [--top 30]

Prints the per-sample wall time (with profiler overhead) and the functions with the largest
cumulative time under ``synth/``. One process, one OpenCV thread, swap neighbours prefetched
per 64 samples, as a generation worker runs.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="a `synth index` of the faces")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--recipe", default="mixed")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)

    import cv2

    from synth import writer
    from synth.index import load_index
    from synth.pool import FacePool
    from synth.recipe import load_recipe, sample_plan
    from synth.render import DegenerateSample, FaceCache, render
    from synth.worker import prefetch_swap_partners

    cv2.setNumThreads(1)
    pool = FacePool.from_index(load_index(args.index))
    faces, rec = FaceCache(pool), load_recipe(args.recipe)
    out = tempfile.mkdtemp(prefix="profile_render_")

    def run():
        for i in range(args.n):
            if i % 64 == 0:  # as a generation worker does per chunk of 64 samples
                prefetch_swap_partners(pool, rec, range(i, min(i + 64, args.n)), 0)
            plan = sample_plan(rec, pool, i, 0, args.size, None)
            try:
                real, fake, mask = render(plan, faces)
            except DegenerateSample:
                continue
            writer.write_sample(out, i, real, fake, mask, fsync=False)

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(run)
    print(f"{(time.perf_counter() - t0) / args.n * 1000:.1f} ms per sample (profiled), outputs in {out}")
    pstats.Stats(prof).sort_stats("cumulative").print_stats("synth/", args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
