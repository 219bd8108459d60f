"""Per-step CPU of a generation worker in a long run's steady state (face store filled).

    python benchmarks/profile_steps.py --index bench-out/utk.index [--start 20000] [--count 1500]

One process runs ``synth.worker.make_chunk`` on samples ``[start, start + count)`` twice:
a warm pass fills a face store (as the first passes of a long run do), then a measured pass
with the in-process face cache emptied, so every face comes from the store as it does in a
100k run. Each step (every op by name, mask build, store reads, PNG encodes, file writes,
planning) is timed with ``time.process_time`` (user + sys of this process) around the call;
no profiler overhead. Outputs go to a temporary directory under ``--work`` (default: the
system's temp dir; on the development VM use ``/var/tmp``, see BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="a `synth index` of the faces")
    p.add_argument("--start", type=int, default=20000, help="first sample (a later pass of the pool)")
    p.add_argument("--count", type=int, default=1500)
    p.add_argument("--recipe", default="mixed")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--work", default=None, help="directory for the store and outputs (removed after)")
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # as in a generation worker

    from synth import render, visibility, writer
    from synth.facestore import FaceStore
    from synth.index import load_index
    from synth.pool import FacePool
    from synth.recipe import load_recipe
    from synth.runstate import index_hash as run_index_hash
    from synth.worker import Chunk, make_chunk, worker_state

    spent, calls = collections.Counter(), collections.Counter()

    def timed(owner, name, label=None):
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            key = label(a) if label else name
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - t
                calls[key] += 1

        setattr(owner, name, wrapper)

    if args.work:
        os.makedirs(args.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="profile_steps_", dir=args.work)
    try:
        rec = load_recipe(args.recipe)
        pool = FacePool.from_index(load_index(args.index))
        index_hash, store = run_index_hash(pool), os.path.join(work, "store")
        stop = args.start + args.count

        def run(out):
            for s in range(args.start, stop, 64):
                make_chunk(Chunk(out, args.index, index_hash, rec, 0, args.size, None, s,
                                 min(s + 64, stop), store=store, sync=False))

        run(os.path.join(work, "warm"))
        timed(render, "apply_step", lambda a: "op " + a[0]["op"])
        timed(render.masklib, "build_mask")
        timed(render.masklib, "subtract_occlusion")
        timed(render, "warp_image")
        timed(visibility, "sample_plan")
        timed(writer, "encode_image", lambda a: "encode " + a[0])
        timed(writer, "write_bytes_atomic")
        timed(writer, "dumps_line")
        for name in ("load_face", "load_occlusion", "load_png"):
            timed(FaceStore, name)
        _, faces = worker_state(args.index, index_hash, store)
        faces._faces.clear()
        faces._occ.clear()
        t = time.process_time()
        run(os.path.join(work, "measured"))
        total = (time.process_time() - t) / args.count * 1000
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"`python benchmarks/profile_steps.py --index {args.index} --start {args.start} --count {args.count}`"
          f" ({args.recipe}, {args.size} px): {total:.2f} ms CPU per sample\n")
    print("| step | ms / sample | calls | ms / call |\n|---|---:|---:|---:|")
    for key, sec in spent.most_common():
        print(f"| {key} | {sec / args.count * 1000:.3f} | {calls[key]} | {sec / calls[key] * 1000:.3f} |")
    print(f"| other (chunk loop, manifest record, ...) | {total - sum(spent.values()) / args.count * 1000:.3f} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
