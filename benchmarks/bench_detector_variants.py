"""Detector design choices against each other: same pool, same split, same steps, same eval.

Each variant (a preset below: model + kwargs, input mode, loss weights, learning rate) is
trained with ``detector.train.train_round`` on the identity-disjoint train split of the
given synth pool(s) for ``--epochs`` x ``--steps`` batches; the best epoch is picked on the
synth validation split (never on the evaluation set), then that checkpoint is scored on
``--eval`` (e.g. the cross-generator xgen-webmorph set: AUC overall and per generator).
Variants run one after another with ``--threads`` torch threads each, or ``--parallel 2``
at a time (then use ``--threads 1``), so the wall times are comparable within one run.

    python benchmarks/bench_detector_variants.py --data bench-out/tl-fa/pool-base \\
        --eval ../shared/data/eval/xgen-webmorph --out bench-out/variants \\
        --variants fa_plain_full,tc_plain_full --epochs 4 --steps 60 --threads 2

Prints (and writes OUT/results.md) a markdown table; each variant's run directory keeps its
train log (per-step loss parts), best checkpoint and eval scores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

#: name -> settings. model/kw: create_model; mode: FaceDataset mode for training (validation and
#: evaluation always score whole faces, mode "full"); loss: DetectorLoss kwargs; lr: AdamW.
PLAIN = {"backbone": "plainnet", "fusion_depths": (1, 2, 3)}
VARIANTS: dict[str, dict] = {
    # the product model on a CPU-sized plain backbone, whole faces at native resolution
    "fa_plain_full": {"model": "freq_attention", "kw": {**PLAIN, "decoder_dim": 32}, "mode": "full",
                      "loss": {"lambda_sim": 1.0, "sim_reduction": "mse"}, "lr": 1e-3},
    # same with the paper's loss weights (lambda_sim 10, Frobenius)
    "fa_plain_full_fro": {"model": "freq_attention", "kw": {**PLAIN, "decoder_dim": 32}, "mode": "full",
                          "loss": {}, "lr": 1e-3},
    # with an exponential moving average of the weights (validated and kept instead of the raw ones)
    "fa_plain_full_ema": {"model": "freq_attention", "kw": {**PLAIN, "decoder_dim": 32}, "mode": "full",
                          "loss": {"lambda_sim": 1.0, "sim_reduction": "mse"}, "lr": 1e-3, "ema": 0.99},
    # SRM residuals instead of the DCT high-pass as the frequency stream's input
    "fa_plain_full_srm": {"model": "freq_attention", "kw": {**PLAIN, "decoder_dim": 32, "freq_input": "srm"},
                          "mode": "full", "loss": {"lambda_sim": 1.0, "sim_reduction": "mse"}, "lr": 1e-3},
    # SRM input, each training batch downscaled to a random side in [0.5, 1] x 256 (multi-scale traces)
    "fa_plain_full_srm_ms": {"model": "freq_attention", "kw": {**PLAIN, "decoder_dim": 32, "freq_input": "srm"},
                             "mode": "full", "loss": {"lambda_sim": 1.0, "sim_reduction": "mse"}, "lr": 1e-3,
                             "batch_scale": (0.5, 1.0)},
    # both: DCT high-pass and SRM residuals stacked (12 channels) as the frequency stream's input
    "fa_plain_full_dctsrm": {"model": "freq_attention", "kw": {**PLAIN, "decoder_dim": 32, "freq_input": "dct+srm"},
                             "mode": "full", "loss": {"lambda_sim": 1.0, "sim_reduction": "mse"}, "lr": 1e-3},
    # 128-px native patches for training (cheaper steps), whole faces at test time
    "fa_plain_patch": {"model": "freq_attention", "kw": {**PLAIN, "decoder_dim": 32}, "mode": "patch",
                       "loss": {"lambda_sim": 1.0, "sim_reduction": "mse"}, "lr": 1e-3},
    # the previous default: ImageNet-style timm backbone, 128-px patches, paper loss weights
    "fa_mnv3_patch": {"model": "freq_attention", "kw": {}, "mode": "patch", "loss": {}, "lr": 3e-4},
    # plain classifier baselines (label only, no mask / similarity supervision)
    "tc_plain_full": {"model": "timm_classifier", "kw": {"backbone": "plainnet"}, "mode": "full", "loss": {},
                      "lr": 1e-3},
    "tc_mnv3_resize": {"model": "timm_classifier", "kw": {}, "mode": "resize", "loss": {}, "lr": 3e-4},
}


def pool_side(data: list[str]) -> int:
    """Face side of the synth pool (``--size`` recorded in its run.json)."""
    run = Path(data[0]) / "run.json"
    if not run.is_file():
        raise SystemExit(f"{run}: missing; pass --side")
    return int(json.loads(run.read_text())["size"])


def run_variant(name: str, data: list[str], eval_dir: str, out: str, epochs: int, steps: int, batch: int,
                threads: int, seed: int, val_max: int, patch: int, resize: int, side: int) -> dict:
    import numpy as np
    import torch

    from detector.data import FaceDataset, identity_split, read_dataset, read_datasets
    from detector.losses import DetectorLoss
    from detector.models import create_model
    from detector.train import TrainSettings, evaluate, train_round

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    v = VARIANTS[name]
    run = Path(out) / name
    train, val = identity_split(read_datasets(data), val_fraction=0.1, seed=seed)
    if val_max and len(val) > val_max:  # a fixed, seeded subset keeps validation cheap
        keep = np.random.default_rng(seed).choice(len(val), val_max, replace=False)
        val = [val[i] for i in sorted(keep)]
    model = create_model(v["model"], **v["kw"])
    norm = model.input_norm
    # mode full: every face (train, validation, evaluation) at one side, as in detector.loop
    full = side if v["mode"] == "full" else None
    train_ds = FaceDataset(train, mode=v["mode"], patch=patch, size=resize, augment=True, norm=norm, seed=seed,
                           full_size=full)
    eval_mode = "resize" if v["mode"] == "resize" else "full"
    val_ds = FaceDataset(val, mode=eval_mode, size=resize, norm=norm, full_size=full)
    t0 = time.time()
    settings = TrainSettings(epochs=epochs, lr=v["lr"], batch_size=batch, workers=0, seed=seed,
                             max_steps_per_epoch=steps, progress=False, ema=v.get("ema", 0.0),
                             batch_scale=v.get("batch_scale"))
    summary = train_round(model, train_ds, val_ds, run, settings, loss_fn=DetectorLoss(**v["loss"]),
                          log=lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True))
    train_s = time.time() - t0
    ev_ds = FaceDataset(read_dataset(eval_dir), mode=eval_mode, size=resize, norm=norm, full_size=full)
    metrics, scores = evaluate(model, ev_ds)
    per = metrics.get("per_generator") or {}
    res = {"variant": name, "val_auc": summary["best_val_auc"], "best_epoch": summary["best_epoch"],
           "val_curve": [h.get("val_auc") for h in summary["history"]],
           "eval_auc": metrics.get("auc"), "eval_ap": metrics.get("ap"),
           "per_generator": {g: m.get("auc") for g, m in per.items()},
           "train_s": train_s, "steps": epochs * steps, "batch": batch, "side": full or resize,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    (run / "result.json").write_text(json.dumps(res, indent=1))
    print(f"[{name}] {json.dumps(res)}", file=sys.stderr, flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, help="synth output dir (repeatable)")
    ap.add_argument("--eval", required=True, help="evaluation set (manifest.csv dir, e.g. xgen-webmorph)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="fa_plain_full,tc_plain_full",
                    help=f"comma-separated presets: {', '.join(VARIANTS)}")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60, help="batches per epoch")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--resize", type=int, default=128)
    ap.add_argument("--side", type=int, help="mode full: face side for training, validation and evaluation "
                                             "(default: the pool's synth --size)")
    ap.add_argument("--val-max", type=int, default=400, help="validation images (seeded subset; 0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=1, help="variants run at once (processes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    common = (args.data, args.eval, args.out, args.epochs, args.steps, args.batch_size, args.threads, args.seed,
              args.val_max, args.patch, args.resize, args.side or pool_side(args.data))
    if args.parallel > 1:
        with ProcessPoolExecutor(args.parallel) as ex:
            results = list(ex.map(run_variant, names, *[[c] * len(names) for c in common]))
    else:
        results = [run_variant(n, *common) for n in names]

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    lines = [f"`python benchmarks/bench_detector_variants.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
             f"machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
             f"{args.threads} torch thread(s) per variant, {args.parallel} variant(s) at a time; "
             f"{args.epochs} epochs x {args.steps} steps x batch {args.batch_size}", "",
             "| variant | side | params (M) | val AUC per epoch | best val AUC | eval AUC | sbi | dfl_swap | eval AP | train s |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        curve = " / ".join(f(x) for x in r["val_curve"])
        pg = r["per_generator"]
        lines.append(f"| {r['variant']} | {r['side']} | {r['params_m']:.2f} | {curve} | {f(r['val_auc'])} | {f(r['eval_auc'])} | "
                     f"{f(pg.get('sbi'))} | {f(pg.get('dfl_swap'))} | {f(r['eval_ap'])} | {r['train_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    (Path(args.out) / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
