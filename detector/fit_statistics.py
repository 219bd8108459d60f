"""Fitting the patch-statistics model and calibrating a score fusion.

:func:`extract_statistics` computes the fixed features of every image once (images on disk);
:func:`online_statistics` those of fakes rendered in memory (:class:`synth.OnlineFakes`), so tens of
thousands of faces cost no disk and no PNG encode or decode;
:func:`fit_patch_stats` then trains the MLP on them for many cheap steps;
:func:`fit_statistics_online` does both for a face pool (what ``detector train`` runs);
:func:`fuse_members` joins a trained detector and the statistics model, and
:func:`calibrate_fusion` / :func:`set_fusion_scale` set each member's logit scale of the
:class:`~detector.models.fusion.ScoreFusion` from data none of them was trained on;
:func:`fuse_with_statistics` does it all for a trained detector (``detector fuse``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from detector.data import FaceDataset, collate, mirror_image, size_grouped_batches
from detector.models.fusion import ScoreFusion
from detector.models.patch_stats import PatchStatsClassifier, StatisticsModel
from detector.quality import apply_global_op, draw_global_op
from detector.readers import Sample
from detector.statistics import patch_statistics, statistic_names
from detector.train import loader_workers, score_dataset

__all__ = ["STATISTICS_FITS", "PATCH_STATS_STEPS", "STATS_CONV_STEPS",
           "extract_statistics", "online_statistics", "fit_patch_stats", "fit_stats_conv",
           "fit_statistics_online", "fuse_members", "set_fusion_scale", "set_fusion_weights", "fused_logits", "to_logits",
           "calibrate_fusion", "member_logits", "fused_as_scored",
           "fuse_with_statistics"]

#: Default optimiser steps of each statistics model's fit (one copy: the fit functions, the loop and ``detector fuse`` use these).
PATCH_STATS_STEPS = 20000
STATS_CONV_STEPS = 5000
_TWIN_STREAM = 7  # random stream of the twins' draws, apart from anything else seeded by the same seed


@torch.no_grad()
def extract_statistics(model: StatisticsModel, samples: Sequence[Sample], batch_size: int = 64,
                       workers: int = 0, device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Features of every sample's whole image (no augmentation).

    Returns
    -------
    numpy.ndarray
        float32 (N, 9 * grid^2); rows of unreadable images are NaN.
    """
    ds = FaceDataset(samples, mode="full", norm=model.input_norm)
    n_features = model.n_features
    out = np.full((len(ds), n_features), np.nan, dtype=np.float32)
    loader = DataLoader(ds, batch_sampler=size_grouped_batches(ds.native_sizes(), batch_size), collate_fn=collate,
                        **loader_workers(workers))
    for batch in tqdm(loader, desc="statistics", disable=not progress, leave=False):
        if "image" in batch:
            out[batch["index"].numpy()] = model.features(batch["image"].to(device)).cpu().numpy()
    return out


class _PairStatistics(Dataset):
    """Item i: ``(features, masks)``: float32 (2K, F), the statistics of the real and the fake of
    ``fakes[i]`` (K = 1) and, with probability ``twins``, of both once more under one global
    operation (K = 2); with ``masks`` the mask's share of each cell, float32 (K, grid, grid), else
    None. None when the item renders no usable fake. Computed where the item is rendered (a DataLoader worker), so only
    2K x F numbers cross between processes instead of the images."""

    def __init__(self, fakes, grid: int, masks: bool = False, twins: float = 0.0, seed: int = 0, extended: bool = False):
        self.fakes, self.grid, self.masks, self.twins, self.seed = fakes, grid, masks, twins, seed
        self.extended = extended

    def __len__(self) -> int:
        return len(self.fakes)

    def __getitem__(self, i: int):
        from synth.render import DegenerateSample

        try:
            item = self.fakes[i]
        except DegenerateSample:  # its retries exhausted: counted and left out, as synth generate does
            return None
        images = [item["real"], item["fake"]]
        if self.twins:
            rng = np.random.default_rng((self.seed, _TWIN_STREAM, i))
            if rng.random() < self.twins:  # the same global operation on both: global quality carries no label
                name, value = draw_global_op(rng)
                images += [apply_global_op(im, name, value) for im in images]
        pairs = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            features = patch_statistics(pairs, self.grid, self.extended).numpy()
            if not self.masks:
                return features, None
            share = F.adaptive_avg_pool2d(torch.from_numpy(item["mask"]).float()[None] / 255.0, self.grid)
            return features, share.expand(len(images) // 2, -1, -1).numpy()


def _collate_pairs(items: list) -> tuple[np.ndarray | None, np.ndarray | None, int, int]:
    ok = [x for x in items if x is not None]
    features = np.concatenate([f for f, _ in ok]) if ok else None
    masks = np.concatenate([m for _, m in ok]) if ok and ok[0][1] is not None else None
    return features, masks, len(items) - len(ok), len(items)


def online_statistics(fakes, grid: int = 8, batch_size: int = 32, workers: int = 0, progress: bool = False,
                      with_masks: bool = False, twins: float = 0.0, seed: int = 0, extended: bool = False):
    """Statistics of the real and the fake of every item of ``fakes``, rendered in memory.

    Parameters
    ----------
    fakes : synth.OnlineFakes
        Rendered (and measured) by ``workers`` DataLoader processes (0: in this one); every item
        is replayable from its plan, so the features do not depend on ``workers``.
    grid : int
        Cells per side (:func:`~detector.statistics.patch_statistics`).
    batch_size : int
        Items collected per step.
    with_masks : bool
        Also return each pair's mask as the share of each cell that was pasted.
    twins : float
        Probability in [0, 1] that an item adds a second pair: its real and fake under the same
        global operation (blur, sharpen, resampling or JPEG over the whole image,
        :func:`detector.quality.draw_global_op`), drawn from ``seed`` and the item's index, so the
        pairs replay exactly. A model fitted on them learns that global quality carries no label.
    extended : bool
        The 13 statistics of :data:`~detector.statistics.EXTENDED_STATISTICS` instead of the 9.

    Returns
    -------
    features : numpy.ndarray
        float32 (2M, S * grid^2), S = 9 (13 ``extended``): real and fake of each pair, in turn (the twin pair right after
        its item's own).
    labels : numpy.ndarray
        int64 (2M,): 0, 1, 0, 1, ...
    n_skipped : int
        Items that rendered no usable fake (left out).
    masks : numpy.ndarray
        Only with ``with_masks``: float32 (M, grid, grid) in [0, 1], the fake's pasted share of each cell.
    """
    if not 0.0 <= twins <= 1.0:
        raise ValueError(f"twins: expected a probability in [0, 1], got {twins!r}")
    loader = DataLoader(_PairStatistics(fakes, grid, with_masks, twins, seed, extended), batch_size=batch_size,
                        collate_fn=_collate_pairs, **loader_workers(workers))
    chunks, mask_chunks, skipped = [], [], 0
    with tqdm(total=len(fakes), desc="statistics", unit="pair", disable=not progress, leave=False) as bar:
        for features, masks, bad, n_items in loader:
            skipped += bad
            if features is not None:
                chunks.append(features)
                mask_chunks.append(masks)
            bar.update(n_items)
    features = np.concatenate(chunks) if chunks else np.zeros((0, len(statistic_names(extended)) * grid * grid), np.float32)
    labels = np.tile(np.array([0, 1], np.int64), len(features) // 2)
    if not with_masks:
        return features, labels, skipped
    return features, labels, skipped, (np.concatenate(mask_chunks) if mask_chunks else
                                       np.zeros((0, grid, grid), np.float32))


def fit_patch_stats(model: PatchStatsClassifier, features: np.ndarray, labels: np.ndarray, steps: int = PATCH_STATS_STEPS,
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

    def step_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        return F.binary_cross_entropy_with_logits(model.classify(x[idx]), y[idx])

    model.train()
    losses = _optimise(model.mlp.parameters(), step_loss, steps, lr, weight_decay, seed, progress)
    model.eval()
    return losses


def _optimise(params, step_loss, steps: int, lr: float, weight_decay: float, seed: int, progress: bool) -> list[float]:
    """``steps`` AdamW steps on ``step_loss(gen)`` with a one-cycle schedule peaking at ``lr``.

    ``gen`` (for minibatch draws) is seeded by ``seed``, and so is torch's global generator (dropout) for
    the duration, restored after: a fit replays exactly on the same machine. Returns the mean loss of
    every 100 steps (the last window may be shorter).
    """
    opt = torch.optim.AdamW(params, lr=lr / 2, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    losses, window = [], []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in tqdm(range(steps), desc="fit", disable=not progress, leave=False):
            loss = step_loss(gen)
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
    return losses


def fit_stats_conv(model, features: np.ndarray, masks: np.ndarray, steps: int = STATS_CONV_STEPS, batch_pairs: int = 64,
                   lr: float = 2e-3, weight_decay: float = 1e-2, lambda_mask: float = 1.0, seed: int = 0,
                   progress: bool = False) -> list[float]:
    """Fit a ``stats_conv`` model to (real, fake) pairs of statistic maps and the fakes' masks.

    Parameters
    ----------
    model : detector.models.stats_conv.StatsConvDetector
    features : numpy.ndarray
        float32 (2M, S * grid^2), S = 9 (13 for ``model.extended``): the real and the fake of each pair in turn, as
        :func:`online_statistics` returns them.
    masks : numpy.ndarray
        float32 (M, grid, grid) in [0, 1]: each fake's pasted share of each cell (a real's is 0).
    steps, batch_pairs : int
        Optimiser steps; pairs per step (both images of a pair in the same batch, flipped alike).
    lambda_mask : float
        Weight of the per-cell mask loss beside the label loss (both binary cross-entropy).

    Each step draws ``batch_pairs`` pairs with replacement and mirrors each pair left-right with
    probability 0.5 (a mirrored face has mirrored statistics), from a generator seeded by ``seed``;
    AdamW with a one-cycle schedule peaking at ``lr``. The fit replays exactly on the same machine;
    the caller's global random state is left as it was. Pairs with a non-finite feature are left
    out. Returns the mean loss of every 100 steps; the model is left in eval mode.
    """
    c, g = len(statistic_names(model.extended)), model.grid
    features = np.asarray(features, dtype=np.float32)
    masks = np.asarray(masks, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != model.n_features or len(features) % 2:
        raise ValueError(f"features: expected (2M, {model.n_features}) real/fake rows in turn, got {features.shape}")
    if masks.shape != (len(features) // 2, g, g):
        raise ValueError(f"masks: expected ({len(features) // 2}, {g}, {g}), got {masks.shape}")
    if steps < 1 or batch_pairs < 1 or lambda_mask < 0:
        raise ValueError(f"steps, batch_pairs, lambda_mask: expected >= 1, >= 1, >= 0, got {steps}, {batch_pairs}, "
                         f"{lambda_mask}")
    pairs = features.reshape(-1, 2, c, g, g)
    ok = np.isfinite(pairs).reshape(len(pairs), -1).all(1)
    if not ok.any():
        raise ValueError("features: no pair with finite statistics")
    x = torch.from_numpy(pairs[ok])
    m = torch.from_numpy(masks[ok])
    model.feature_mean.copy_(x.mean((0, 1, 3, 4)))
    model.feature_std.copy_(x.std((0, 1, 3, 4)).clamp_min(1e-6))
    y = torch.tensor([0.0, 1.0]).repeat(batch_pairs)

    def step_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(x), (batch_pairs,), generator=gen)
        flip = torch.rand(batch_pairs, generator=gen) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1, 1), x[idx].flip(-1), x[idx]).flatten(0, 1)
        mb = torch.where(flip.view(-1, 1, 1), m[idx].flip(-1), m[idx])
        mb = torch.stack([torch.zeros_like(mb), mb], 1).flatten(0, 1)
        logit, mask_logit = model.classify_maps(xb.flatten(1))
        return F.binary_cross_entropy_with_logits(logit, y) + \
            lambda_mask * F.binary_cross_entropy_with_logits(mask_logit, mb)

    model.train()
    losses = _optimise(model.parameters(), step_loss, steps, lr, weight_decay, seed, progress)
    model.eval()
    return losses


def _fit_mlp(model, features, labels, masks, steps, seed, progress):
    return fit_patch_stats(model, features, labels, steps=steps, seed=seed, progress=progress)


def _fit_conv(model, features, labels, masks, steps, seed, progress):
    return fit_stats_conv(model, features, masks, steps=steps, seed=seed, progress=progress)


# the statistics models fit_statistics_online can fit: name -> (fit, default steps)
STATISTICS_FITS = {"patch_stats": (_fit_mlp, PATCH_STATS_STEPS), "patch_stats_extended": (_fit_mlp, PATCH_STATS_STEPS),
                   "stats_conv": (_fit_conv, STATS_CONV_STEPS), "stats_conv_fine": (_fit_conv, STATS_CONV_STEPS),
                   "stats_conv_extended": (_fit_conv, STATS_CONV_STEPS)}


def fit_statistics_online(pool, n: int, *, model: str = "patch_stats", recipe="mixed", size: int = 256, seed: int = 0,
                          steps: int | None = None, twins: float = 0.0, workers: int = 0, progress: bool = False,
                          extra=()):
    """Fit a statistics model on ``n`` fresh (real, fake) pairs rendered from ``pool``.

    Parameters
    ----------
    pool : synth.pool.FacePool or synth.index.Index
        Faces to draw targets and swap partners from; keep validation identities out of it.
    n : int
        Items of ``synth.OnlineFakes(pool, recipe, size, seed, length=n)``; 2n faces.
    extra : sequence of (pool, int), optional
        More face sources and the number of items rendered from each, added to the fit: e.g. faces of
        the photo domain the detector will be used on. Source ``k`` (from 0) renders
        ``synth.OnlineFakes(pool_k, recipe, size, seed + k + 1, length=n_k)``, so its pairs differ from
        ``pool``'s even when the faces are the same. Pairs never mix faces of two sources.
    model : str
        A key of :data:`STATISTICS_FITS`: ``"patch_stats"`` (the MLP, :func:`fit_patch_stats`) or
        ``"stats_conv"`` (the convolutional model with its mask head, :func:`fit_stats_conv`).
    steps : int, optional
        Optimiser steps (default: the model's, :data:`STATISTICS_FITS`). ``seed`` fixes the pairs,
        the model's initial weights and its fit: the model replays exactly on the same machine.
    twins : float
        Probability that an item adds its pair under a global operation (:func:`online_statistics`).

    Returns
    -------
    model : PatchStatsClassifier or StatsConvDetector
        Fitted, in eval mode.
    report : dict
        ``model``, ``steps``, ``twins``, ``n_items`` (all sources), ``n_items_extra`` (per ``extra`` source),
        ``n_skipped``, ``n_faces`` (twins included), ``fit_loss_first``,
        ``fit_loss_last``, ``features_s``, ``fit_s`` (wall seconds).

    Raises
    ------
    ValueError
        ``n < 1``, an ``extra`` count < 1, an unknown ``model``, or no item rendered a usable fake.
    """
    import time

    from detector.models import create_model
    from synth import OnlineFakes

    sources = [(pool, n), *extra]
    for k, (_, count) in enumerate(sources):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{'n' if k == 0 else f'extra[{k - 1}]'}: expected a positive int count, got {count!r}")
    n_items = sum(count for _, count in sources)
    if model not in STATISTICS_FITS:
        raise ValueError(f"model: expected one of {list(STATISTICS_FITS)}, got {model!r}")
    fit, default_steps = STATISTICS_FITS[model]
    steps = default_steps if steps is None else steps
    name = model
    with torch.random.fork_rng():  # the model's initial weights from ``seed`` too: the fit replays exactly
        torch.manual_seed(seed)
        model = create_model(name)
    t0 = time.time()
    parts = [online_statistics(OnlineFakes(faces, recipe=recipe, size=size, seed=seed + k, length=count), model.grid,
                               workers=workers, progress=progress, with_masks=True, twins=twins, seed=seed + k,
                               extended=model.extended)
             for k, (faces, count) in enumerate(sources)]
    features, labels, masks = (np.concatenate([part[i] for part in parts]) for i in (0, 1, 3))
    skipped = sum(part[2] for part in parts)
    t1 = time.time()
    if not len(features):
        raise ValueError(f"fit_statistics_online: none of the {n_items} items rendered a usable fake")
    losses = fit(model, features, labels, masks, steps, seed, progress)
    return model, {"model": name, "steps": steps, "twins": twins, "n_items": n_items,
                   "n_items_extra": [c for _, c in extra], "n_skipped": skipped, "n_faces": int(len(features)),
                   "fit_loss_first": losses[0], "fit_loss_last": losses[-1], "features_s": round(t1 - t0, 1),
                   "fit_s": round(time.time() - t1, 1)}


def fuse_members(cnn: torch.nn.Module, stats: torch.nn.Module, mirror: bool = False) -> ScoreFusion:
    """A ``score_fusion`` of copies of ``cnn`` (first: its mask and relation map are the fusion's) and
    the statistics model ``stats``, in eval mode on ``cnn``'s device, scale unset (:func:`set_fusion_scale`);
    ``mirror``: the fusion averages each face's two mirror views (:class:`~detector.models.fusion.ScoreFusion`)."""
    from detector.models.fusion import fusion_of

    return fusion_of([cnn, stats], mirror=mirror)


def set_fusion_scale(fusion: ScoreFusion, logits: np.ndarray) -> np.ndarray:
    """Set ``logit_mean`` / ``logit_std`` from the members' logits (N, M) on calibration faces.

    Rows with a non-finite logit are left out. The scale uses no label: it only puts the members
    on one footing. Returns the fused logits (N,) of those faces (NaN where a member's is).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != len(fusion.members):
        raise ValueError(f"logits: expected (N, {len(fusion.members)}), got {logits.shape}")
    ok = np.isfinite(logits).all(1)
    if ok.sum() < 2:
        raise ValueError("set_fusion_scale: fewer than two faces with finite logits")
    fusion.logit_mean.copy_(torch.from_numpy(logits[ok].mean(0)).float())
    fusion.logit_std.copy_(torch.from_numpy(logits[ok].std(0)).float().clamp_min(1e-6))
    return fused_logits(fusion, logits)


def _member_z(fusion: ScoreFusion, logits: np.ndarray) -> np.ndarray:
    """Members' logits (N, M) standardised with the fusion's stored scale, float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return (logits - fusion.logit_mean.cpu().double().numpy()) / fusion.logit_std.cpu().double().numpy()


def fused_logits(fusion: ScoreFusion, logits: np.ndarray) -> np.ndarray:
    """The fusion's logit (N,) from its members' logits (N, M), with its stored scale and weights
    (NaN where a member's is): what ``fusion(x)["logit"]`` gives, without running the members."""
    return _member_z(fusion, logits) @ fusion.logit_weight.cpu().double().numpy()


def set_fusion_weights(fusion: ScoreFusion, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Set ``logit_weight`` by a logistic regression of the labels on the z-scored member logits.

    Call after :func:`set_fusion_scale` with the same calibration faces (labelled faces none of
    the members was trained on, e.g. the synth validation split; never an evaluation set). The
    regression (L2, C = 1, with intercept) gives one coefficient per member; negative ones are set
    to 0 (a member is never used against its own direction) and the rest normalised to sum 1, so
    the fused logit stays on the members' z scale. All coefficients <= 0: equal weights are kept.

    Parameters
    ----------
    logits : float array (N, M), the members' logits; rows with a non-finite value are left out.
    labels : int array (N,), 0 real / 1 fake; both classes must be present among the finite rows.

    Returns
    -------
    weights : float64 (M,), as stored.
    """
    from sklearn.linear_model import LogisticRegression

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[1] != len(fusion.members) or labels.shape != (len(logits),):
        raise ValueError(f"logits, labels: expected (N, {len(fusion.members)}) and (N,), got {logits.shape}, {labels.shape}")
    ok = np.isfinite(logits).all(1)
    if len(np.unique(labels[ok])) != 2:
        raise ValueError("set_fusion_weights: the calibration faces with finite logits hold only one class")
    coef = np.clip(LogisticRegression(C=1.0).fit(_member_z(fusion, logits[ok]), labels[ok]).coef_[0], 0.0, None)
    weights = coef / coef.sum() if coef.sum() > 0 else np.full(len(coef), 1.0 / len(coef))
    fusion.logit_weight.copy_(torch.from_numpy(weights).float())
    return weights


def to_logits(probabilities: np.ndarray) -> np.ndarray:
    """float64 log-odds of fake probabilities (clipped to [1e-15, 1 - 1e-15]; NaN stays NaN)."""
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
    logits = member_logits(fusion, samples, batch_size=batch_size, workers=workers, device=device, progress=progress)
    set_fusion_scale(fusion, logits)
    return logits


def member_logits(fusion: ScoreFusion, samples: Sequence[Sample], *, global_op=None, full_size: int | None = None,
                  batch_size: int = 16, workers: int = 0, device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Each member's logits (N, M) on the whole images of ``samples`` (under ``global_op`` if given,
    resized to ``full_size`` if given, as :class:`~detector.data.FaceDataset`); NaN for unreadable images."""
    ds = FaceDataset(list(samples), mode="full", norm=fusion.input_norm, full_size=full_size, global_op=global_op)
    return np.stack([to_logits(score_dataset(m, ds, batch_size, workers, device, progress, "calibrate")[0])
                     for m in fusion.members], 1)


def fused_as_scored(fusion: ScoreFusion, samples: Sequence[Sample], logits: np.ndarray, **kwargs) -> np.ndarray:
    """The fusion's logits (N,) on ``samples`` as its forward scores them, from the members' logits
    (N, M) on the images as they are: with ``fusion.mirror`` averaged with the fused logits of the
    mirror images (scored here; ``kwargs`` as :func:`member_logits`)."""
    fused = fused_logits(fusion, logits)
    if fusion.mirror:
        fused = (fused + fused_logits(fusion, member_logits(fusion, samples, global_op=mirror_image, **kwargs))) / 2
    return fused


def fuse_with_statistics(cnn, samples: Sequence[Sample], *, val_fraction: float = 0.1, steps: int = PATCH_STATS_STEPS,
                         calibration: int = 400, seed: int = 0, workers: int = 0, device: str = "cpu",
                         progress: bool = False, mirror: bool = True) -> tuple[ScoreFusion, dict]:
    """Fit a ``patch_stats`` model on ``samples`` and fuse it with the trained detector ``cnn``.

    The samples (reals and fakes, e.g. ``synth generate`` outputs; more is better, the MLP is
    cheap) are split identity-disjointly (``val_fraction``, ``seed``); the statistics model is
    fitted on the training part, and the fusion's scale is calibrated on ``calibration`` reals
    and as many fakes of the validation part, which none of the members was fitted on (the
    CNN's own training data may overlap it if it came from the same faces). Returns the fusion
    (eval mode, on ``device``) and a report: sample counts, the statistics model's validation AUC,
    and the AUC of each member and of the fusion on the calibration samples. ``mirror`` (the default, as
    ``detector train``'s): the fusion averages each face's two mirror views
    (:class:`~detector.models.fusion.ScoreFusion`); its calibration AUC is then measured that way too.
    """
    if not isinstance(mirror, bool):
        raise ValueError(f"mirror: expected True or False, got {mirror!r}")
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
    fusion = fuse_members(cnn, stats, mirror=mirror).to(device)  # copies: the caller's cnn stays where it was
    rng = np.random.default_rng(seed)
    cal = [reals[k] for k in rng.permutation(len(reals))[:calibration]] + \
          [fakes[k] for k in rng.permutation(len(fakes))[:calibration]]
    logits = calibrate_fusion(fusion, cal, workers=workers, device=device, progress=progress)
    # the scale is set on one view, as the loop sets it; the AUC is of the fusion as it scores
    fused = fused_as_scored(fusion, cal, logits, workers=workers, device=device, progress=progress)
    y_cal = np.array([s.label for s in cal])
    ok_cal = np.isfinite(logits).all(1) & np.isfinite(fused)
    report = {
        "n_train": len(train), "n_val": len(val), "n_calibration": len(cal), "fit_loss_last": losses[-1],
        "statistics_val_auc": float(binary_metrics(y_val, val_logits)["auc"]),
        "calibration_auc": {name: float(binary_metrics(y_cal[ok_cal], v[ok_cal])["auc"])
                            for name, v in ((cnn.model_name, logits[:, 0]), ("patch_stats", logits[:, 1]),
                                            ("fused", fused))},
    }
    return fusion, report
