"""How fast does a detector configuration learn our fakes? One training round, outside the loop.

Two measurements, both on a synth pool only (never on the evaluation set):

* ``--fit-pairs N``: train on the first N (real, own fake) pairs of the identity split's training
  side, without augmentation or multi-scale, and validate *on those same pairs* after every epoch.
  Fakes and reals share identity, crop and encoding, so the only way to separate them is the
  forgery itself: this measures how quickly a model can pick forgery cues up at all (an
  optimisation check, not a generalisation one).
* default: one round as the loop trains it (paired batches, augmentation, ``--batch-scale``, the
  forgery amplification curriculum ``--amplify``) on the
  identity split, validated on the held-out identities; then scored on ``--heldout`` (a synth run
  made with another recipe version, for example) and the global-quality check on 256 validation
  reals (AUC of processed vs as-is; 0.5 = blind).

The mask loss is printed next to the loss of the best *constant* mask (per pixel: half the mean fake
mask, since half the batch is real): a mask loss at that level means the decoder has learned where
faces usually are, not which pixels are forged.

    python benchmarks/bench_learning.py --data POOL --out RUN [--seed S] [--init-seed I] [--model-kwargs JSON]
        [--loss-kwargs JSON] [--fit-pairs 64 --epochs 20] [--heldout DIR] [--extra-train POOL]

Prints one ``RESULT {json}`` line.
"""
from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np
import torch

from detector.data import FaceDataset, identity_split, read_dataset, read_mask
from detector.losses import DetectorLoss
from detector.models import create_model
from detector.quality import quality_check
from detector.readers import group_identities
from detector.settings import LoopConfig
from detector.train import TrainSettings, evaluate, train_round

LOOP_LOSS_KWARGS = LoopConfig.__dataclass_fields__["loss_kwargs"].default_factory()
LOOP = LoopConfig(data_dirs=[], eval_dir="", out_dir="")


def prior_mask_bce(samples, limit: int = 800) -> float:
    """Mask BCE of the best constant prediction on a half-real batch (see the module docstring)."""
    masks = [read_mask(s.mask_path) for s in samples if s.label == 1 and s.mask_path][:limit]
    masks = np.stack([m for m in masks if m is not None and m.shape == masks[0].shape])
    q = np.clip(0.5 * masks.mean(0), 1e-6, 1 - 1e-6)
    fake = -(masks * np.log(q) + (1 - masks) * np.log(1 - q)).mean()
    real = -np.log(1 - q).mean()
    return float((fake + real) / 2)


def loss_curve(log_path, window: int = 40) -> list[dict]:
    """Mean of each loss part over consecutive windows of training steps."""
    steps = [r for r in map(json.loads, open(log_path)) if r["kind"] == "step"]
    return [{k: round(float(np.mean([s[k] for s in steps[i:i + window]])), 4) for k in ("cls", "sim", "mask")}
            | {"from_step": i} for i in range(0, len(steps), window)]


def split(samples, seed: int) -> tuple[list, list]:
    """(train, validation): the identity split ``--seed`` draws, at the loop's ``val_fraction``."""
    return identity_split(list(samples), LOOP.val_fraction, seed)


def quality_reals(val, seed: int, n: int = 256) -> list:
    """The validation reals of the global-quality check: the first ``n`` after a shuffle seeded by ``--seed``."""
    reals = [s for s in val if s.label == 0]
    random.Random(seed).shuffle(reals)
    return reals[:n]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="synth pool (training side)")
    p.add_argument("--out", required=True, help="run directory for this benchmark's checkpoints and logs")
    p.add_argument("--extra-train", action="append", default=[], metavar="DIR",
                   help="another synth pool whose every pair is added to the training side only (repeatable)")
    p.add_argument("--heldout", help="a synth run or eval-style set to score after training (not xgen-webmorph)")
    p.add_argument("--model", default="freq_attention")
    p.add_argument("--model-kwargs", default='{"head_pooled": false}')
    p.add_argument("--loss-kwargs", default=json.dumps(LOOP_LOSS_KWARGS),
                   help="DetectorLoss kwargs (default: the loop's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-seed", type=int, default=None,
                   help="seed of the weights, augmentation and batch order (default: --seed); --seed alone picks the "
                        "identity split, so runs that differ only here share their validation side")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=LOOP.max_steps_per_epoch, help="max steps per epoch (default: the loop's)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-scale", default="0.5,1", help="lo,hi or 'none'")
    p.add_argument("--batch", type=int, default=16, help="training batch size (pairs x 2)")
    p.add_argument("--amplify", type=float, default=LOOP.amplify,
                   help="forgery amplification at the start, 1 = off (default: the loop's)")
    p.add_argument("--amplify-until", type=float, default=LOOP.amplify_until,
                   help="fraction of the steps where it reaches 1 (default: the loop's)")
    p.add_argument("--precision", default=LOOP.precision, help="fp32, bf16 or auto (default: the loop's)")
    p.add_argument("--twins", type=int, default=LOOP.twins, help="quality twins per batch (default: the loop's)")
    p.add_argument("--twin-weight", type=float, default=LOOP.twin_weight)
    p.add_argument("--twin-loss", default=LOOP.twin_loss, help="kl or logit (detector.train.TWIN_LOSSES)")
    p.add_argument("--detail-match", type=float, default=LOOP.detail_match,
                   help="probability that a pair's fine-detail energy is matched (default: the loop's)")
    p.add_argument("--fit-pairs", type=int, default=0, help="fit test on this many training pairs (0 = off)")
    a = p.parse_args(argv)

    init_seed = a.seed if a.init_seed is None else a.init_seed
    torch.manual_seed(init_seed)
    def read(path):  # every set is read before training, so a bad path costs seconds, not a round
        try:
            return read_dataset(path)
        except ValueError as e:  # read_dataset names the path and what is wrong with it
            p.error(str(e))

    train, val = split(read(a.data), a.seed)
    extra = [s for d in a.extra_train for s in read(d)]
    heldout = read(a.heldout) if a.heldout else None
    leak = group_identities(extra) & group_identities(val)
    if leak:
        p.error(f"--extra-train: {len(leak)} identities are also on the validation side (e.g. {min(leak)!r})")
    train = train + extra
    fit = a.fit_pairs > 0
    if fit:
        train = val = train[:2 * a.fit_pairs]  # read_synth_dir lists each real next to its own fake
    model = create_model(a.model, **json.loads(a.model_kwargs))
    train_ds = FaceDataset(train, "full", augment=not fit, norm=model.input_norm, full_size=a.size, seed=init_seed,
                           paired_augment=True)
    val_ds = FaceDataset(val, "full", norm=model.input_norm, full_size=a.size)
    scale = None if fit or a.batch_scale == "none" else tuple(float(v) for v in a.batch_scale.split(","))
    settings = TrainSettings(epochs=a.epochs, lr=a.lr, batch_size=a.batch, workers=0, device="cpu", seed=init_seed,
                             progress=False, max_steps_per_epoch=a.steps, batch_scale=scale, paired=True,
                             amplify=a.amplify, amplify_until=a.amplify_until, precision=a.precision,
                             twins=0 if fit else a.twins, twin_weight=a.twin_weight,
                             twin_loss=a.twin_loss, detail_match=0.0 if fit else a.detail_match)
    res = train_round(model, train_ds, val_ds, a.out, settings, loss_fn=DetectorLoss(**json.loads(a.loss_kwargs)),
                      log=lambda m: print(m, file=sys.stderr))
    result = {"args": vars(a), "val_auc": [round(h["val_auc"], 4) for h in res["history"]],
              "best_epoch": res["best_epoch"], "wall_s": res["wall_s"], "prior_mask_bce": round(prior_mask_bce(train), 4),
              "losses": loss_curve(f"{a.out}/train_log.jsonl")}
    if not fit:
        q = quality_check(model, quality_reals(val, a.seed), full_size=a.size)
        result["quality"] = {k: round(v, 4) for k, v in q["auc"].items()} | {"max_dev": round(q["max_dev"], 4)}
    if heldout is not None:
        metrics, _ = evaluate(model, FaceDataset(heldout, "full", norm=model.input_norm,
                                                 full_size=a.size), 16, 0, "cpu", False, "heldout")
        result["heldout_auc"] = round(metrics["auc"], 4)
    print("RESULT", json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
