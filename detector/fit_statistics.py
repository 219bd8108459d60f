"""Fitting the patch-statistics model and calibrating a score fusion.

:func:`extract_statistics` computes the fixed features of every image once;
:func:`fit_patch_stats` then trains the MLP on them for many cheap steps;
:func:`calibrate_fusion` sets each member's logit scale of a
:class:`~detector.models.fusion.ScoreFusion` from labelled data none of them was trained on;
:func:`fuse_with_statistics` does all three for a trained detector (``detector fuse``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from detector.data import FaceDataset, collate, size_grouped_batches
from detector.models.fusion import ScoreFusion
from detector.models.patch_stats import PatchStatsClassifier
from detector.readers import Sample
from detector.train import loader_workers, score_dataset

__all__ = ["extract_statistics", "fit_patch_stats", "calibrate_fusion", "fuse_with_statistics"]


@torch.no_grad()
def extract_statistics(model: PatchStatsClassifier, samples: Sequence[Sample], batch_size: int = 64,
                       workers: int = 0, device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Features of every sample's whole image (no augmentation).

    Returns
    -------
    numpy.ndarray
        float32 (N, 9 * grid^2); rows of unreadable images are NaN.
    """
    ds = FaceDataset(samples, mode="full", norm=model.input_norm)
    n_features = model.feature_mean.numel()
    out = np.full((len(ds), n_features), np.nan, dtype=np.float32)
    loader = DataLoader(ds, batch_sampler=size_grouped_batches(ds.native_sizes(), batch_size), collate_fn=collate,
                        **loader_workers(workers))
    for batch in tqdm(loader, desc="statistics", disable=not progress, leave=False):
        if "image" in batch:
            out[batch["index"].numpy()] = model.features(batch["image"].to(device)).cpu().numpy()
    return out


def fit_patch_stats(model: PatchStatsClassifier, features: np.ndarray, labels: np.ndarray, steps: int = 20000,
                    batch_size: int = 256, lr: float = 2e-3, weight_decay: float = 1e-2, seed: int = 0,
                    progress: bool = False) -> list[float]:
    """Fit ``model``'s standardisation and MLP to ``features`` (N, F) and ``labels`` (N,) in {0, 1}.

    Rows with non-finite features are left out. AdamW with a one-cycle schedule peaking at ``lr``;
    minibatches (with replacement) and dropout drawn from generators seeded by ``seed``, so a fit
    replays exactly on the same machine; the caller's global random state is left as it was.
    Returns the mean label loss of every 100 steps (the last window may be shorter). The model is left in eval mode.
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or features.shape[1] != model.feature_mean.numel() or len(labels) != len(features):
        raise ValueError(f"features/labels: expected (N, {model.feature_mean.numel()}) and (N,), "
                         f"got {features.shape} and {labels.shape}")
    ok = np.isfinite(features).all(1)
    if len(np.unique(labels[ok])) != 2 or not set(np.unique(labels[ok])) <= {0, 1}:
        raise ValueError("labels: need both reals (0) and fakes (1) among the readable samples")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size: expected >= 1, got {steps} and {batch_size}")
    x = torch.from_numpy(features[ok])
    y = torch.from_numpy(labels[ok].astype(np.float32))
    model.feature_mean.copy_(x.mean(0))
    model.feature_std.copy_(x.std(0).clamp_min(1e-6))
    model.train()
    opt = torch.optim.AdamW(model.mlp.parameters(), lr=lr / 2, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    losses, window = [], []
    with torch.random.fork_rng():  # dropout draws from the global generator: seed it here, restore it after
        torch.manual_seed(seed)
        for _ in tqdm(range(steps), desc="fit", disable=not progress, leave=False):
            idx = torch.randint(0, len(x), (batch_size,), generator=gen)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model.classify(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            window.append(loss.item())
            if len(window) == 100:
                losses.append(float(np.mean(window)))
                window = []
    if window:
        losses.append(float(np.mean(window)))
    model.eval()
    return losses


def _logits(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities.astype(np.float64), 1e-15, 1 - 1e-15)
    return np.log(p) - np.log1p(-p)


def calibrate_fusion(fusion: ScoreFusion, samples: Sequence[Sample], batch_size: int = 16, workers: int = 0,
                     device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Set each member's ``logit_mean`` / ``logit_std`` from its logits on ``samples``.

    ``samples`` should hold reals and fakes none of the members was trained on (e.g. the synth
    validation split), never the evaluation set. Returns the members' logits (N, M), NaN for
    unreadable images.
    """
    if not samples:
        raise ValueError("calibrate_fusion: no samples")
    ds = FaceDataset(list(samples), mode="full", norm=fusion.input_norm)
    logits = np.stack([_logits(score_dataset(m, ds, batch_size, workers, device, progress, "calibrate")[0])
                       for m in fusion.members], 1)
    ok = np.isfinite(logits).all(1)
    if ok.sum() < 2:
        raise ValueError("calibrate_fusion: fewer than two readable samples")
    fusion.logit_mean.copy_(torch.from_numpy(logits[ok].mean(0)).float())
    fusion.logit_std.copy_(torch.from_numpy(logits[ok].std(0)).float().clamp_min(1e-6))
    return logits


def fuse_with_statistics(cnn, samples: Sequence[Sample], *, val_fraction: float = 0.1, steps: int = 20000,
                         calibration: int = 400, seed: int = 0, workers: int = 0, device: str = "cpu",
                         progress: bool = False) -> tuple[ScoreFusion, dict]:
    """Fit a ``patch_stats`` model on ``samples`` and fuse it with the trained detector ``cnn``.

    The samples (reals and fakes, e.g. ``synth generate`` outputs; more is better, the MLP is
    cheap) are split identity-disjointly (``val_fraction``, ``seed``); the statistics model is
    fitted on the training part, and the fusion's scale is calibrated on ``calibration`` reals
    and as many fakes of the validation part, which none of the members was fitted on (the
    CNN's own training data may overlap it if it came from the same faces). Returns the fusion
    (eval mode, on ``device``) and a report: sample counts, the statistics model's validation AUC,
    and the AUC of each member and of the fusion on the calibration samples.
    """
    from detector.metrics import binary_metrics
    from detector.models import create_model
    from detector.readers import identity_split

    train, val = identity_split(list(samples), val_fraction, seed)
    reals = [s for s in val if s.label == 0]
    fakes = [s for s in val if s.label == 1]
    if not reals or not fakes:
        raise ValueError("fuse_with_statistics: the validation split needs reals and fakes; give more samples")
    stats = create_model("patch_stats")
    features = extract_statistics(stats, train + val, workers=workers, device="cpu", progress=progress)
    losses = fit_patch_stats(stats, features[: len(train)], np.array([s.label for s in train]), steps=steps,
                             seed=seed, progress=progress)
    with torch.no_grad():
        val_features = torch.from_numpy(features[len(train):])
        ok = torch.isfinite(val_features).all(1)
        val_logits = stats.classify(val_features[ok]).numpy()
    y_val = np.array([s.label for s in val])[ok.numpy()]
    fusion = create_model("score_fusion", members=[{"name": cnn.model_name, "kwargs": cnn.model_kwargs},
                                                   {"name": "patch_stats", "kwargs": stats.model_kwargs}])
    fusion.members[0].load_state_dict(cnn.state_dict())
    fusion.members[1].load_state_dict(stats.state_dict())
    fusion.to(device).eval()
    rng = np.random.default_rng(seed)
    cal = [reals[k] for k in rng.permutation(len(reals))[:calibration]] + \
          [fakes[k] for k in rng.permutation(len(fakes))[:calibration]]
    logits = calibrate_fusion(fusion, cal, workers=workers, device=device, progress=progress)
    y_cal = np.array([s.label for s in cal])
    ok_cal = np.isfinite(logits).all(1)
    z = (logits - fusion.logit_mean.cpu().numpy()) / fusion.logit_std.cpu().numpy()
    report = {
        "n_train": len(train), "n_val": len(val), "n_calibration": len(cal), "fit_loss_last": losses[-1],
        "statistics_val_auc": float(binary_metrics(y_val, val_logits)["auc"]),
        "calibration_auc": {name: float(binary_metrics(y_cal[ok_cal], v[ok_cal])["auc"])
                            for name, v in ((cnn.model_name, logits[:, 0]), ("patch_stats", logits[:, 1]),
                                            ("fused", z.mean(1)))},
    }
    return fusion, report
