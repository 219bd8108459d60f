"""PNG encoding speed and size: ``synth.png.encode_png`` against OpenCV's encoder.

The generator writes three 256² PNGs per sample (real, fake, mask), so the encoder is a
large part of the I/O floor. Baseline: ``cv2.imencode(".png")`` at zlib level 1 with the
RLE strategy (the writer's previous setting, the fastest OpenCV setting that still
compresses) and at OpenCV's default. Images: face crops resized to SIZE and their soft
masks, one thread.

    python benchmarks/bench_encode.py --src ../shared/data/faces/utkface --n 200 --repeats 5

Without ``--src`` the scikit-image astronaut crop is used. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def _images(src: str | None, n: int, size: int) -> list[np.ndarray]:
    if src:
        files = sorted(p for p in Path(src).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:n]
        if not files:
            raise SystemExit(f"--src {src}: no .jpg/.png files")
        return [cv2.resize(cv2.imread(str(f))[..., ::-1], (size, size), interpolation=cv2.INTER_CUBIC) for f in files]
    from skimage import data

    return [cv2.resize(data.astronaut()[0:300, 100:400], (size, size), interpolation=cv2.INTER_AREA)] * n


def _mask(size: int) -> np.ndarray:
    disc = np.zeros((size, size), np.uint8)
    cv2.ellipse(disc, (size // 2, size // 2), (size // 3, size // 2 - size // 8), 0, 0, 360, 255, -1)
    return cv2.GaussianBlur(disc, (0, 0), size / 40)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", help="directory of face images (default: the astronaut crop)")
    p.add_argument("--n", type=int, default=200, help="images per repeat")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    from synth.png import encode_png

    cv2.setNumThreads(1)
    rgb = _images(args.src, args.n, args.size)
    mask = _mask(args.size)
    encoders = {
        "synth.png.encode_png (Up filter, zlib-ng Huffman)": encode_png,
        "cv2.imencode level 1 RLE (baseline)": lambda im: cv2.imencode(
            ".png", np.ascontiguousarray(im[..., ::-1]) if im.ndim == 3 else im,
            [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])[1],
        "cv2.imencode default": lambda im: cv2.imencode(
            ".png", np.ascontiguousarray(im[..., ::-1]) if im.ndim == 3 else im)[1],
    }
    rows = {}
    for name, enc in encoders.items():
        for kind, images in (("RGB", rgb), ("mask", [mask] * args.n)):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                sizes = [len(enc(im)) for im in images]
                times.append((time.perf_counter() - t0) / len(images) * 1000)
            rows[name, kind] = (statistics.median(times), float(np.mean(sizes)) / 1024)

    base = "cv2.imencode level 1 RLE (baseline)"
    print(f"\n`python benchmarks/bench_encode.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ")
    print(f"machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), one thread, "
          f"{args.size}² images, median of {args.repeats} x {args.n}\n")
    print("| encoder | RGB ms | RGB KB | mask ms | mask KB | sample (2 RGB + mask) ms | speed-up vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base_sample = 2 * rows[base, "RGB"][0] + rows[base, "mask"][0]
    for name in encoders:
        (rt, rs), (mt, ms) = rows[name, "RGB"], rows[name, "mask"]
        sample = 2 * rt + mt
        print(f"| {name} | {rt:.2f} | {rs:.1f} | {mt:.2f} | {ms:.1f} | {sample:.2f} | {base_sample / sample:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
