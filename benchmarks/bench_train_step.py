"""Training throughput of the default detector: faces/s of one optimiser step, and where it goes.

For each input side and thread count, a training step at ``--batch`` (forward + ``DetectorLoss``
+ backward + AdamW step) of ``create_model(--model)`` is timed with the contiguous (NCHW) and the
channels-last (NHWC) memory layout, in turns so load changes hit both alike. FLOPs per step come
from ``torch.utils.flop_counter`` (forward + backward, multiply-add = 2 FLOPs) and give the achieved
GFLOP/s; the channels-last step is also timed under bfloat16 autocast (``--precision bf16``), which
is faster on some CPUs with native bf16 and slower on others. Separately, the data side: one worker's
faces/s of ``FaceDataset`` decoding + augmenting a synth pool (``--data``), which must stay ahead of
the step. Prints a markdown table.

    python benchmarks/bench_train_step.py --data RUN_OF_SYNTH_GENERATE
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_models import interleaved_medians  # this folder is on sys.path when run as a script
from detector.losses import DetectorLoss
from detector.models import create_model
from detector.train import channels_last


def make_step(model_name: str, side: int, batch: int, nhwc: bool, seed: int = 0, bf16: bool = False):
    """A closure running one full training step on a fixed random batch (``bf16``: the forward pass and
    loss under bfloat16 autocast, as ``detector train --precision bf16`` runs them)."""
    torch.manual_seed(seed)
    model = create_model(model_name).train()
    x = torch.randn(batch, 3, side, side)
    label = (torch.arange(batch) % 2).float()
    mask = torch.rand(batch, 1, side, side) * label.view(-1, 1, 1, 1)
    valid = torch.ones(batch, dtype=torch.bool)
    if nhwc:
        model, x = channels_last(model), channels_last(x)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = DetectorLoss(lambda_sim=1.0, sim_reduction="mse")

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(model(x), label, mask, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_flops(model_name: str, side: int, batch: int) -> int:
    step = make_step(model_name, side, batch, nhwc=False)
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def loader_rate(data: str, side: int, n: int) -> float:
    """Faces/s of one process reading + augmenting samples of a synth pool (as one loader worker)."""
    from detector.data import FaceDataset, read_dataset

    samples = read_dataset(data)[:n]
    ds = FaceDataset(samples, mode="full", size=side, full_size=side, augment=True, paired_augment=True)
    t = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return len(ds) / (time.perf_counter() - t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="freq_attention")
    ap.add_argument("--sides", type=int, nargs="+", default=[256, 192, 128])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", help="a `synth generate` output dir: also time the data side")
    ap.add_argument("--loader-n", type=int, default=200)
    args = ap.parse_args(argv)

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"batch {args.batch}, model {args.model}, medians of {args.repeats}\n")
    print("| side | threads | GFLOP/step | NCHW faces/s | NHWC faces/s | speed-up | NHWC GFLOP/s | NHWC bf16 faces/s "
          "| bf16 / fp32 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side in args.sides:
        gflop = step_flops(args.model, side, args.batch) / 1e9
        for threads in args.threads:
            torch.set_num_threads(threads)
            fns = {k: make_step(args.model, side, args.batch, k != "nchw", bf16=k == "bf16") for k in ("nchw", "nhwc", "bf16")}
            med = interleaved_medians(fns, args.repeats)
            rate = {k: args.batch / v for k, v in med.items()}
            print(f"| {side} | {threads} | {gflop:.1f} | {rate['nchw']:.1f} | {rate['nhwc']:.1f} | "
                  f"{med['nchw'] / med['nhwc']:.2f} | {gflop / med['nhwc']:.0f} | {rate['bf16']:.1f} | "
                  f"{med['nhwc'] / med['bf16']:.2f} |", flush=True)
    if args.data:
        torch.set_num_threads(1)
        for side in args.sides:
            print(f"\ndata side, one process, side {side}: {loader_rate(args.data, side, args.loader_n):.0f} faces/s")


if __name__ == "__main__":
    main()
