"""Benchmark: the augment-until loop on real data vs plain baselines with the same data and budget.

Pipeline (everything under --out; safe to rerun: every stage resumes):

1. ``synth index`` of --faces (e.g. UTKFace) -> OUT/index (once);
2. ``synth generate`` a base pool of --n samples (recipe --recipe) -> OUT/pool-base;
3. the *reference* variant (the first of --variants, default ``freq_attention:patch``) runs the
   loop: train --epochs-per-round epochs, evaluate on --eval (e.g. xgen-webmorph) per round,
   stop when --augment-until holds, else regenerate --regen-n fakes aimed at its misses;
4. every other variant (default ``timm_classifier:resize``, the naive baseline, and
   ``timm_classifier:patch``) replays the same rounds on the *same pools* (the reference's
   regenerated directories are linked, not regenerated) with the same epochs and steps: same data,
   same budget. ``--independent`` lets each variant run its own loop instead.

Prints (and writes OUT/results.md) a markdown table: per variant and round, eval AUC overall and
per generator (sbi, dfl_swap), validation AUC, wall time; plus a summary row per variant.

Real run (defaults: ~1 h for the reference loop on 2 CPU cores at ~2.5 s per freq_attention step of
32 patches, about half that per baseline; use --threads 1 while other jobs share the machine):

    .venv/bin/python benchmarks/bench_train_loop.py --faces ../shared/data/faces/utkface \\
        --eval ../shared/data/eval/xgen-webmorph --out bench-out/train-loop --threads 2

Smoke test of the plumbing (toy data instead of synth; a minute):

    .venv/bin/python benchmarks/bench_train_loop.py --toy --out /tmp/bench-toy --threads 1
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

import torch

from detector.cli import workers_option
from detector.data import read_dataset, write_toy_eval_dir, write_toy_synth_dir
from detector.loop import run_loop
from detector.models import DEFAULT_BACKBONE

TINY = {"freq_attention": {"backbone": "test_resnet", "embed_dim": 16, "decoder_dim": 8, "head_hidden": 16},
        "timm_classifier": {"backbone": "test_resnet"},
        "wavelet_dual_branch": {"levels": 2, "width": 8, "bilinear_dim": 8, "decoder_dim": 8}}


def parse_variant(text: str, backbone: str, tiny: bool) -> dict:
    """``model:mode`` (mode patch|resize) -> run_loop settings."""
    model, _, mode = text.partition(":")
    mode = mode or "patch"
    if mode not in ("full", "patch", "resize"):
        raise SystemExit(f"--variants: {text!r}: mode must be full, patch or resize")
    kwargs = dict(TINY.get(model, {})) if tiny else ({} if model == "wavelet_dual_branch" else {"backbone": backbone})
    return {"name": f"{model}:{mode}", "model_name": model, "model_kwargs": kwargs, "mode": mode}


def _toy_eval(path: Path) -> Path:
    return write_toy_eval_dir(path, n=24, size=128, seed=99)


def _subset_eval(eval_dir: str, limit: int, out: Path) -> str:
    """A manifest.csv over the first ``limit`` images per generator (absolute paths), for quick runs."""
    samples = read_dataset(eval_dir)
    per: dict[str, int] = {}
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "mask", "generator", "identity"])
        for s in samples:
            g = s.meta.get("generator", "")
            if per.get(g, 0) < limit:
                per[g] = per.get(g, 0) + 1
                w.writerow([s.path, s.label, s.mask_path or "", g, s.group[0] if s.group else ""])  # absolute paths
    return str(out)


def _toy_generate(out, n, recipe, size, seed, workers, weights, progress, **source):
    write_toy_synth_dir(out, n=n, size=size, seed=seed)


def _linking_generate(reference_run: Path):
    """generate_fn for replay variants: link the reference run's pool directory of the same round."""
    def gen(out, n, recipe, size, seed, workers, weights, progress, **source):
        src = reference_run / "pool" / Path(out).name
        if not (src / "manifest.jsonl").is_file():
            raise ValueError(f"{src}: the reference run has no pool for this round (it stopped earlier)")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        if not Path(out).exists():
            os.symlink(src.resolve(), out, target_is_directory=True)
    return gen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", help="face images to synthesise from (e.g. ../shared/data/faces/utkface)")
    ap.add_argument("--eval", help="evaluation set (e.g. ../shared/data/eval/xgen-webmorph)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--toy", action="store_true", help="toy data and tiny models (plumbing smoke test)")
    ap.add_argument("--variants", default="freq_attention:patch,timm_classifier:resize,timm_classifier:patch",
                    help="comma-separated model:mode; the first is the reference loop")
    ap.add_argument("--independent", action="store_true", help="each variant runs its own loop (own regeneration)")
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE,
                    help=f"timm backbone shared by all variants (default {DEFAULT_BACKBONE})")
    ap.add_argument("--recipe", default="mixed")
    ap.add_argument("--n", type=int, default=4000, help="base pool size (samples; each gives a real and a fake)")
    ap.add_argument("--regen-n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256, help="synth output size")
    ap.add_argument("--augment-until", default="auc>0.8")
    ap.add_argument("--max-rounds", type=int, default=4)
    ap.add_argument("--epochs-per-round", type=int, default=3)
    ap.add_argument("--max-steps-per-epoch", type=int, default=100)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--resize", type=int, default=128, help="side for mode resize (the naive baseline used 128)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lr-decay", type=float, default=0.5, help="per-round factor on the peak learning rate")
    ap.add_argument("--batch-scale", type=float, nargs=2, metavar=("LO", "HI"), default=(0.5, 1.0),
                    help="multi-scale training (LoopConfig.batch_scale; default 0.5 1, 1 1 = off)")
    ap.add_argument("--workers", type=workers_option, default="auto",
                    help="data loader processes (0: in the training process; default auto, as detector train)")
    ap.add_argument("--gen-workers", type=int, default=2, help="index / generation processes")
    ap.add_argument("--eval-limit", type=int, default=0, help="use only this many eval images per generator (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    if args.toy:
        base = write_toy_synth_dir(out / "pool-base", n=48, size=128, seed=args.seed) \
            if not (out / "pool-base" / "manifest.jsonl").is_file() else out / "pool-base"
        eval_dir = str(_toy_eval(out / "eval-toy"))
        generate_fn, source = _toy_generate, {"index": "toy", "statistics_n": 0}  # toy data has no faces to render
        budget = dict(regen_n=24, epochs_per_round=1, max_steps_per_epoch=3, patch=64, batch_size=8,
                      workers=0, max_rounds=2, regen_size=128)
        sides = {"resize": 64, "native": 128}
    else:
        if not args.faces or not args.eval:
            ap.error("--faces and --eval are required (or --toy)")
        from synth.generate import generate
        from synth.index import build_index

        build_index(args.faces, out / "index", workers=args.gen_workers)
        generate(out / "pool-base", n=args.n, recipe=args.recipe, index=out / "index", size=args.size,
                 seed=args.seed, workers=args.gen_workers)
        base = out / "pool-base"
        eval_dir = _subset_eval(args.eval, args.eval_limit, out / "eval-subset") if args.eval_limit else args.eval
        generate_fn, source = None, {"index": str(out / "index")}
        budget = dict(regen_n=args.regen_n, epochs_per_round=args.epochs_per_round,
                      max_steps_per_epoch=args.max_steps_per_epoch, patch=args.patch,
                      batch_size=args.batch_size, workers=args.workers, gen_workers=args.gen_workers,
                      max_rounds=args.max_rounds,
                      regen_size=args.size)
        sides = {"resize": args.resize, "native": args.size}
    t_data = time.time() - t0

    variants = [parse_variant(v.strip(), args.backbone, args.toy) for v in args.variants.split(",") if v.strip()]
    results = []
    reference = out / "runs" / variants[0]["name"].replace(":", "-")
    for k, v in enumerate(variants):
        run = out / "runs" / v["name"].replace(":", "-")
        # mode resize trains at --resize; full/patch keep the synth size (in mode full a different
        # size would resize every training face while validation and evaluation stay native)
        side = sides["resize" if v["mode"] == "resize" else "native"]
        settings = dict(budget, size=side, model_name=v["model_name"], model_kwargs=v["model_kwargs"], mode=v["mode"],
                        condition=args.augment_until, recipe=args.recipe, lr=args.lr, lr_decay=args.lr_decay,
                        batch_scale=args.batch_scale,
                        seed=args.seed, **source)
        gen = generate_fn
        if k > 0 and not args.independent:
            gen = _linking_generate(reference)
            settings["max_rounds"] = len(results[0]["summary"]["rounds"])  # same budget as the reference
        t = time.time()
        summary = run_loop([base], eval_dir, run, resume=(run / "state.json").is_file(), generate_fn=gen,
                           progress=False, **settings)
        results.append({"variant": v, "summary": summary, "wall_s": time.time() - t})

    lines = ["# bench_train_loop", "",
             f"command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ",
             f"machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
             f"torch threads {args.threads}, no GPU; data prep {t_data:.0f} s  ",
             f"condition: `{args.augment_until}`; budget per round: {budget['epochs_per_round']} epochs x "
             f"<= {budget['max_steps_per_epoch']} steps x batch {budget['batch_size']}; "
             f"{'replays on the reference pools' if not args.independent else 'independent loops'}", "",
             "| variant | round | pool dirs | val AUC | eval AUC | sbi AUC | dfl_swap AUC | eval AP | round wall s |",
             "|---|---|---|---|---|---|---|---|---|"]

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    for r in results:
        for rd in r["summary"]["rounds"]:
            per = rd["eval"].get("per_generator") or {}
            lines.append(f"| {r['variant']['name']} | {rd['round']} | {len(rd['pool'])} | {f(rd['val'].get('auc'))} | "
                         f"{f(rd['eval'].get('auc'))} | {f(per.get('sbi', {}).get('auc'))} | "
                         f"{f(per.get('dfl_swap', {}).get('auc'))} | {f(rd['eval'].get('ap'))} | {rd['wall_s']:.0f} |")
    lines += ["", "| variant | rounds | condition | final eval AUC | final sbi | final dfl_swap | total wall s |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        rds = r["summary"]["rounds"]
        last = rds[-1]["eval"] if rds else {}
        per = last.get("per_generator") or {}
        lines.append(f"| {r['variant']['name']} | {len(rds)} | {'met' if r['summary']['condition_met'] else 'not met'} | "
                     f"{f(last.get('auc'))} | {f(per.get('sbi', {}).get('auc'))} | "
                     f"{f(per.get('dfl_swap', {}).get('auc'))} | {r['wall_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
