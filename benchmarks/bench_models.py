"""CPU latency and training throughput of the detector models vs a plain timm classifier.

For each backbone and input size: inference latency at batch 1 and batch 32 (eval mode,
no grad) and a training step at batch 16 (forward + DetectorLoss + backward + Adam step)
for ``timm_classifier`` (the baseline, same backbone, measured in the same run),
``freq_attention`` and ``wavelet_dual_branch``. Medians of ``--repeats`` runs after a
warm-up; ratios are against the plain classifier. Prints a markdown table.

    python benchmarks/bench_models.py                      # default backbone and size
    python benchmarks/bench_models.py --backbones resnet18 efficientnet_b0 \\
        mobilenetv3_large_100 mobilenetv3_small_100 --sizes 224 256 --no-train
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from detector.losses import DetectorLoss
from detector.models import DEFAULT_BACKBONE, DEFAULT_INPUT_SIZE, create_model

MODELS = {
    # name -> kwargs builder from the backbone
    "timm_classifier": lambda bb: {"backbone": bb},
    "freq_attention": lambda bb: {"backbone": bb},
    "wavelet_dual_branch": lambda bb: {},
}


def interleaved_medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each callable, timed in turns so load changes hit all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def inference_fn(model, batch: int, size: int):
    x = torch.randn(batch, 3, size, size)

    def run():
        model.eval()
        with torch.inference_mode():
            model(x)

    return run


def train_fn(model, batch: int, size: int):
    x = torch.randn(batch, 3, size, size)
    label = (torch.arange(batch) % 2).float()
    mask = torch.zeros(batch, 1, size, size)
    mask[1::2, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    loss_fn = DetectorLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        total, _ = loss_fn(model(x), label, mask)
        total.backward()
        opt.step()

    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=[DEFAULT_BACKBONE])
    ap.add_argument("--sizes", nargs="+", type=int, default=[DEFAULT_INPUT_SIZE])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-b32", action="store_true", help="skip the batch-32 latency")
    ap.add_argument("--no-train", action="store_true", help="skip the training-step throughput")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for bb in args.backbones:
        for size in args.sizes:
            names = ["timm_classifier"] + [m for m in args.models if m != "timm_classifier"]
            if bb != args.backbones[0]:
                names = [n for n in names if n != "wavelet_dual_branch"]  # backbone-free: measure once
            models = {n: create_model(n, **MODELS[n](bb)) for n in names}
            b1 = interleaved_medians({n: inference_fn(m, 1, size) for n, m in models.items()}, 4 * args.repeats)
            b32 = None if args.no_b32 else interleaved_medians(
                {n: inference_fn(m, 32, size) for n, m in models.items()}, args.repeats)
            tr = None if args.no_train else interleaved_medians(
                {n: train_fn(m, 16, size) for n, m in models.items()}, args.repeats)
            for n, m in models.items():
                r = {"model": n, "backbone": bb if n != "wavelet_dual_branch" else "-", "size": size,
                     "params_m": sum(p.numel() for p in m.parameters()) / 1e6,
                     "b1_ms": 1e3 * b1[n], "b1_ratio": b1[n] / b1["timm_classifier"],
                     "b32_ms": None, "b32_ratio": None, "train_ips": None, "train_ratio": None}
                if b32:
                    r.update(b32_ms=1e3 * b32[n], b32_ratio=b32[n] / b32["timm_classifier"])
                if tr:
                    r.update(train_ips=16 / tr[n], train_ratio=tr[n] / tr["timm_classifier"])
                rows.append(r)
            print(f"# done {bb} {size}", flush=True)

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print(f"\nmachine: {platform.machine()} {torch.get_num_threads()} torch threads (shared CPU), "
          f"torch {torch.__version__}, median of {args.repeats} (batch 1: {4 * args.repeats})\n")
    print("| model | backbone | size | params (M) | batch 1 (ms) | ratio | batch 32 (ms) | ratio "
          "| train b16 (img/s) | time ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['backbone']} | {r['size']} | {r['params_m']:.2f} | {r['b1_ms']:.1f} "
              f"| {r['b1_ratio']:.2f} | {f(r['b32_ms'], '.0f')} | {f(r['b32_ratio'], '.2f')} "
              f"| {f(r['train_ips'], '.1f')} | {f(r['train_ratio'], '.2f')} |")


if __name__ == "__main__":
    main()
