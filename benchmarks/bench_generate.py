"""Throughput of the generation job against the I/O floor measured in the same run.

For each N: ``synth.generate.generate`` (recipe, size, workers as given) into a fresh
directory, versus the *I/O floor*: the same worker count doing only the unavoidable work
per sample (decode the target source image, resize it to SIZE, encode + atomically write
three PNGs through the same writer, one sync per chunk) with no ops. Rates are samples (= fakes) per second,
median over ``--repeats``; peak RSS is summed over the job's process and its workers
(sampled from /proc every 0.2 s). The index is built once (``--index``, default
WORK/index) and reused by every run.

    python benchmarks/bench_generate.py --src ../shared/data/faces/utkface --sizes 500,2000,10000

Prints a markdown table. Run it on an otherwise idle machine for meaningful numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _tree_rss_mb(root_pid: int) -> float:
    """Resident memory of ``root_pid`` and all its descendants, MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21])  # pages
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Context manager sampling the process tree's RSS; ``.peak_mb`` after exit."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------- I/O floor

def _floor_chunk(index_path: str, out: str, seed: int, size: int, start: int, stop: int) -> int:
    import cv2

    from synth.worker import worker_state
    from synth.writer import sync_outputs, write_sample

    pool, _ = worker_state(index_path)  # same per-process pool the job uses
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).astype(np.uint8) * 255
    mask = cv2.GaussianBlur(disc, (0, 0), size / 40)  # a soft face-sized mask, like the job's
    for i in range(start, stop):
        key = pool.keys[pool.target_for(i, seed)]
        img = cv2.resize(pool.loader(key), (size, size), interpolation=cv2.INTER_AREA)
        write_sample(out, i, img, img, mask, fsync=False)
    sync_outputs(out)  # as the job does once per chunk
    return stop - start


def io_floor(index_path: Path, out: Path, n: int, size: int, workers: int, seed: int = 0) -> float:
    """Samples/s of decode + resize + write 3 PNGs, ``workers`` loky processes, same chunking.

    A private pool, started inside the timed region and shut down after it, as the job's
    is (so its idle workers do not count in the job's memory either).
    """
    from joblib.externals.loky import ProcessPoolExecutor

    from synth.generate import _chunk_size

    csize = _chunk_size(n, workers)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(_floor_chunk, str(index_path), str(out), seed, size, s, min(s + csize, n))
                   for s in range(0, n, csize)]
        assert sum(f.result() for f in futures) == n
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="directory of face images (e.g. ../shared/data/faces/utkface)")
    p.add_argument("--index", help="prebuilt index of --src (default: WORK/index, built once)")
    p.add_argument("--work", default="/tmp/bench_generate", help="scratch directory (outputs are deleted)")
    p.add_argument("--sizes", default="500,2000,10000", help="comma-separated N")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--recipe", default="mixed")
    p.add_argument("--backend", default="joblib")
    p.add_argument("--scheduler", help="dask scheduler address for --backend dask (e.g. tcp://127.0.0.1:8786); "
                                       "peak RSS then covers this process only, not the dask workers")
    p.add_argument("--settle", type=float, default=45.0,
                   help="seconds to wait after deleting a run's files before timing the next one: ext4 "
                        "skips recently deleted inodes for ~30 s, which made file creation up to 40x "
                        "slower right after a delete on the development VM")
    p.add_argument("--skip-floor", action="store_true",
                   help="time the job only (for one very large N; the floor is measured at smaller N)")
    args = p.parse_args(argv)
    if args.scheduler and args.backend != "dask":
        p.error(f"--scheduler is only used with --backend dask, got --backend {args.backend}")

    from synth.generate import generate
    from synth.index import build_index

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    index = Path(args.index) if args.index else work / "index"
    if not args.index:
        build_index(args.src, index, workers=args.workers, progress=True)
    sizes = [int(s) for s in args.sizes.split(",")]

    # warm-up: fill the OS file cache and import caches once for both paths
    warm = work / "warm"
    generate(warm, 16, recipe=args.recipe, index=index, size=args.size, workers=args.workers,
             backend=args.backend, scheduler=args.scheduler, progress=False)
    shutil.rmtree(warm)
    io_floor(index, warm, 16, args.size, args.workers)
    shutil.rmtree(warm)
    time.sleep(args.settle)

    rows = []
    for n in sizes:
        gen_rates, floor_rates, peaks, ok = [], [], [], None
        for rep in range(args.repeats):
            out = work / f"gen-{n}-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            with PeakRSS() as rss:
                t0 = time.perf_counter()
                report = generate(out, n, recipe=args.recipe, index=index, size=args.size,
                                  workers=args.workers, backend=args.backend, scheduler=args.scheduler,
                                  progress=False)
                wall = time.perf_counter() - t0
            gen_rates.append(n / wall)
            peaks.append(rss.peak_mb)
            ok = (report["n_ok"], report["n_skipped"])
            shutil.rmtree(out)
            time.sleep(args.settle)
            if not args.skip_floor:
                fout = work / f"floor-{n}-{rep}"
                floor_rates.append(io_floor(index, fout, n, args.size, args.workers))
                shutil.rmtree(fout)
                time.sleep(args.settle)
            else:
                floor_rates.append(float("nan"))
            print(f"N={n} rep {rep}: generate {gen_rates[-1]:.1f}/s in {wall:.0f} s, floor {floor_rates[-1]:.1f}/s, "
                  f"peak RSS {peaks[-1]:.0f} MB", file=sys.stderr)
        g, f = statistics.median(gen_rates), statistics.median(floor_rates)
        rows.append((n, g, f, g / f, max(peaks), ok))

    print(f"\n`python benchmarks/bench_generate.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ")
    print(f"machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
          f"recipe {args.recipe}, {args.size} px, {args.workers} workers ({args.backend}), "
          f"median of {args.repeats}; rates in samples (fakes) / s\n")
    print("| N | generate (fakes/s) | I/O floor (/s) | generate / floor | peak RSS (MB) | ok / skipped |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, g, f, r, peak, (n_ok, n_sk) in rows:
        print(f"| {n} | {g:.1f} | {f:.1f} | {r:.2f} | {peak:.0f} | {n_ok} / {n_sk} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
