"""Benchmark ``detector predict``: face finding per image, and scoring faces one by one
(batch 1, the baseline) against batched (the default, batch 32).

    .venv/bin/python benchmarks/bench_predict.py [--model freq_attention] [--size 256] [--faces 32]

Prints a markdown table (median of ``--runs`` runs, 1 torch thread).
"""
from __future__ import annotations

import argparse
import statistics
import time

import skimage.data
import torch

from detector.models import create_model
from detector.predict import Predictor


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="freq_attention")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    image = skimage.data.astronaut()
    pred = Predictor(model, size=args.size, batch_size=args.faces)
    crops = [pred.faces(image)[0].crop] * args.faces
    pred.score_crops(crops[:2])  # warm-up

    t_faces = median_time(lambda: pred.faces(image), max(args.runs, 5))
    pred.batch_size = 1
    t_single = median_time(lambda: pred.score_crops(crops), args.runs)
    pred.batch_size = args.faces
    t_batch = median_time(lambda: pred.score_crops(crops), args.runs)

    print(f"`python benchmarks/bench_predict.py --model {args.model} --size {args.size} --faces {args.faces}` "
          f"(machine: 2-core CPU shared, torch 1 thread, median of {args.runs} runs)\n")
    print("| step | ms per face | ratio |")
    print("|---|---:|---:|")
    print(f"| find + crop face (512x512 astronaut) | {1000 * t_faces:.1f} | |")
    print(f"| score, batch 1 (baseline) | {1000 * t_single / args.faces:.1f} | 1.00 |")
    print(f"| score, batch {args.faces} | {1000 * t_batch / args.faces:.1f} | {t_single / t_batch:.2f}x |")


if __name__ == "__main__":
    main()
