"""The torch side of the detector's data: :class:`FaceDataset` (modes, augmentation), :func:`collate`,
the balanced and paired batch samplers.

Samples come from :mod:`detector.readers` (readers, identity-disjoint split, pairing); those names,
and the toy-data writers of :mod:`detector.toy`, stay importable from here.

Resolution matters: blending traces live in the highest frequencies, so training defaults to
``mode="patch"`` (random native-resolution crops, dense mask target) and evaluation uses
``mode="full"`` (the whole face at native size, cropped to a multiple of 32, one logit from the
fully convolutional model). ``mode="resize"`` (whole face resized) is the classic baseline.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from detector.models.registry import IMAGENET_NORM
from detector.readers import (  # noqa: F401 (re-exported)
    DEEPFAKEBENCH_COMPRESSIONS,
    DEEPFAKEBENCH_FAKE_LABELS,
    DEEPFAKEBENCH_SPLITS,
    IMAGE_EXTENSIONS,
    Sample,
    check_samples,
    deepfakebench_label,
    group_identities,
    identity_split,
    image_size,
    load_problem,
    pair_ids,
    pair_indices,
    read_dataset,
    read_datasets,
    read_deepfakebench_json,
    read_folders,
    read_image,
    read_manifest_csv,
    read_mask,
    read_synth_dir,
    split_by_identities,
)
from detector.toy import write_toy_eval_dir, write_toy_synth_dir  # noqa: F401 (re-exported)

MODES = ("patch", "resize", "full")


# ------------------------------------------------------------------------------ augmentation

def _geometric(p_affine: float):
    import albumentations as A

    # Resampling low-passes the very traces we want, so affine warps are kept rare and mild;
    # flips and integer crops (patch mode) are lossless.
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), rotate=(-8, 8), translate_percent=(-0.03, 0.03), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101, p=p_affine),
    ])


def _photometric():
    import albumentations as A

    # Global image quality (blur, sharpen, resampling, noise, JPEG over the whole image) must carry
    # no label: these ops are drawn often and, with paired augmentation, identically for a fake and
    # its own real, so softness, crispness or compression alone never separates the classes.
    return A.Compose([
        # per-pixel colour ops only: ColorJitter's contrast pivots on the image mean, which the
        # forged region shifts, so it would alter a fake's background differently from its real's
        A.OneOf([A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=15, val_shift_limit=10),
                 A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15)], p=0.4),
        A.OneOf([A.GaussianBlur(sigma_limit=(0.3, 1.6), p=1.0),
                 A.Sharpen(alpha=(0.2, 0.6), lightness=(1.0, 1.0), p=1.0),
                 A.Downscale(scale_range=(0.45, 0.9), p=1.0)], p=0.45),
        A.GaussNoise(std_range=(0.005, 0.03), p=0.15),
        A.ImageCompression(quality_range=(40, 100), p=0.4),
    ])


def mirror_image(img: np.ndarray) -> np.ndarray:
    """The image mirrored left-right (H, W[, C], any dtype), as a contiguous copy; a module-level
    function so that a dataset holding it as ``global_op`` pickles into loader workers."""
    return np.ascontiguousarray(img[:, ::-1])


def _seed_pipeline(pipeline, rng: np.random.Generator) -> None:
    """Seed an albumentations Compose from ``rng`` with one stream its transforms draw from in turn."""
    seed = int(rng.integers(2 ** 31))
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


def _boundary_points(mask: np.ndarray) -> np.ndarray:
    """(K, 2) row/col coordinates of pixels on the forged-region boundary (soft or hard mask)."""
    soft = (mask > 0.05) & (mask < 0.95)
    if soft.sum() < 16:
        hard = (mask > 0.5).astype(np.uint8)
        soft = cv2.morphologyEx(hard, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    return np.argwhere(soft)


def _pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = max(0, h - img.shape[0]), max(0, w - img.shape[1])
    if ph == 0 and pw == 0:
        return img
    pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (img.ndim - 2)
    return np.pad(img, pads, mode="reflect" if min(img.shape[:2]) > 1 else "edge")


def full_view(img: np.ndarray, mask: np.ndarray, multiple: int = 32, min_side: int = 64,
              max_side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Whole face at native resolution for the fully convolutional model.

    Centre-crops each side down to a multiple of ``multiple`` (loses < 32 px of border), pads
    (reflect) sides below ``min_side``; faces larger than ``max_side`` are first downscaled
    (INTER_AREA) so the long side fits.
    """
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    img, mask = _pad_to(img, min_side, min_side), _pad_to(mask, min_side, min_side)
    h, w = img.shape[:2]
    th, tw = h // multiple * multiple, w // multiple * multiple
    y0, x0 = (h - th) // 2, (w - tw) // 2
    return img[y0:y0 + th, x0:x0 + tw], mask[y0:y0 + th, x0:x0 + tw]


# ---------------------------------------------------------------------------------- dataset

class FaceDataset(Dataset):
    """Torch dataset over :class:`Sample` s.

    Item: dict ``image`` (3,H,W) float32 normalised with ``norm``, ``label`` float32 scalar,
    ``mask`` (1,H,W) float32 [0,1] (forged pixels), ``mask_valid`` float32 scalar (0 when a fake
    has no mask), ``index`` int; or ``None`` when the image is unreadable (see :func:`collate`).

    Modes: ``patch`` (train): ``patch`` px crop at native resolution; a fake's crop is centred
    (with jitter of up to a quarter patch) near the mask boundary with probability
    ``boundary_fraction``, else on a forged pixel; a real's crop is uniform. The crop's label is 1
    when its mean mask value exceeds ``fake_threshold`` (a real's crop is always 0).
    ``resize``: whole face resized to ``size``. ``full``: whole face, native, multiple of 32; with
    ``full_size`` set (training, where a batch needs one size) a face of any other size is first
    resized to ``full_size`` x ``full_size`` (INTER_AREA), so a pool of one synth ``--size`` stays native.

    Augmentation (``augment=True``): geometric ops (flip, rare mild affine) on image and mask
    together, photometric ops (colour; global blur, sharpen, resampling, noise, JPEG) on the image
    only; the random state is derived from ``(seed, epoch, index)`` so a run replays exactly (call
    :meth:`set_epoch`). With ``paired_augment=True`` a synth fake and its own real (same manifest
    line, :func:`pair_ids`) share that state and so receive identical augmentation.
    ``global_op``: optional function uint8 HxWx3 -> uint8 HxWx3 applied to every image after
    loading (used to score globally processed copies, :mod:`detector.quality`).
    """

    def __init__(self, samples: Sequence[Sample], mode: str = "patch", patch: int = 128, size: int = 256,
                 augment: bool = False, norm: Mapping | None = None, seed: int = 0, fake_threshold: float = 0.1,
                 boundary_fraction: float = 0.5, p_affine: float = 0.2, full_size: int | None = None,
                 paired_augment: bool = False, global_op: Callable[[np.ndarray], np.ndarray] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if mode == "patch" and (patch < 32 or patch % 32):
            raise ValueError(f"patch: expected a multiple of 32 >= 32, got {patch}")
        if mode == "resize" and (size < 32 or size % 32):
            raise ValueError(f"size: expected a multiple of 32 >= 32, got {size}")
        self.samples = list(samples)
        if full_size is not None and (full_size < 32 or full_size % 32):
            raise ValueError(f"full_size: expected a multiple of 32 >= 32, got {full_size}")
        self.mode, self.patch, self.size, self.full_size = mode, patch, size, full_size
        self.augment, self.seed = augment, seed
        self.fake_threshold, self.boundary_fraction = fake_threshold, boundary_fraction
        norm = norm or IMAGENET_NORM
        self.mean = np.asarray(norm["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(norm["std"], np.float32).reshape(3, 1, 1)
        self.epoch = 0
        # a fake and its own real draw the same augmentation, so what differs between them is the forgery
        self._aug_ids = pair_ids(self.samples) if paired_augment else np.arange(len(self.samples))
        self.global_op = global_op
        self._geo = _geometric(p_affine) if augment else None
        self._photo = _photometric() if augment else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample_seed(self, index: int) -> int:
        key = int(self._aug_ids[index])
        return int(np.random.SeedSequence([self.seed, self.epoch, key]).generate_state(1)[0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, float] | None:
        """Raw ``(image uint8 HxWx3, mask float32 HxW, mask_valid)`` or None if unreadable."""
        s = self.samples[index]
        img = read_image(s.path)
        if img is None:
            return None
        h, w = img.shape[:2]
        if s.label == 0:
            return img, np.zeros((h, w), np.float32), 1.0  # a real has no forged pixel
        if s.mask_path is None:
            return img, np.zeros((h, w), np.float32), 0.0
        mask = read_mask(s.mask_path)
        if mask is None or mask.shape != (h, w):
            return None
        return img, mask, 1.0

    def _crop(self, img, mask, label, valid, rng):
        p = self.patch
        img, mask = _pad_to(img, p, p), _pad_to(mask, p, p)
        h, w = mask.shape
        pts = ()
        if label == 1 and valid:
            # fakes: centre on the blending boundary (where the traces are) or inside the forged
            # region, so fake images give forged patches; clean patches come from the reals
            pts = _boundary_points(mask) if rng.random() < self.boundary_fraction else np.argwhere(mask > 0.5)
        if len(pts):
            cy, cx = pts[rng.integers(len(pts))]
            jitter = rng.integers(-p // 4, p // 4 + 1, size=2)
            y0 = int(np.clip(cy + jitter[0] - p // 2, 0, h - p))
            x0 = int(np.clip(cx + jitter[1] - p // 2, 0, w - p))
        else:
            y0, x0 = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        img, mask = img[y0:y0 + p, x0:x0 + p], mask[y0:y0 + p, x0:x0 + p]
        if label == 1 and valid:
            label = int(mask.mean() > self.fake_threshold)
        return img, mask, label

    def __getitem__(self, index: int):
        raw = self.load(index)
        if raw is None:
            return None
        img, mask, valid = raw
        label = self.samples[index].label
        rng = np.random.default_rng(self.sample_seed(index))
        side = self.size if self.mode == "resize" else self.full_size if self.mode == "full" else None
        if side and img.shape[:2] != (side, side):
            img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)
        if self.global_op is not None:
            img = self.global_op(img)
        if self.augment:
            # one stream shared by the transforms of a Compose: set_random_seed would give each child
            # its own copy of the same stream, so their "apply?" draws coincide and the ops come nested
            # (JPEG only ever with a colour change and a blur), never independently
            _seed_pipeline(self._geo, rng)
            out = self._geo(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
            _seed_pipeline(self._photo, rng)
            img = self._photo(image=img)["image"]
        if self.mode == "patch":
            img, mask, label = self._crop(img, mask, label, valid, rng)
        elif self.mode == "full":
            img, mask = full_view(img, mask)
        x = (np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0 - self.mean) / self.std
        return {"image": torch.from_numpy(x), "label": torch.tensor(float(label)),
                "mask": torch.from_numpy(np.ascontiguousarray(np.clip(mask, 0, 1), dtype=np.float32))[None],
                "mask_valid": torch.tensor(float(valid)), "index": index}

    def native_sizes(self) -> list[tuple[int, int] | None]:
        """Per-sample (H, W) from file headers (None if unreadable), for size-grouped eval batches."""
        return [image_size(s.path) for s in self.samples]


def collate(items: list) -> dict:
    """Stack dataset items, dropping unreadable ones (``None``); ``batch["skipped"]`` counts them."""
    ok = [it for it in items if it is not None]
    batch = {"skipped": len(items) - len(ok)}
    if not ok:
        return batch
    shapes = {tuple(it["image"].shape) for it in ok}
    if len(shapes) > 1:  # mode "full" keeps native sizes; a training batch needs one size
        raise ValueError(f"a batch mixes image sizes {sorted(shapes)}: train mode 'full' needs same-size faces "
                         "(e.g. one synth --size); use mode 'patch' or 'resize' for mixed sizes")
    for k in ("image", "label", "mask", "mask_valid"):
        batch[k] = torch.stack([it[k] for it in ok])
    batch["index"] = torch.tensor([it["index"] for it in ok], dtype=torch.long)
    return batch


# ------------------------------------------------------------------------------------ samplers

class _EpochBatchSampler(Sampler):
    """Bookkeeping shared by the training samplers: ``total`` batches per epoch split over DDP
    replicas (``per_rank`` each), reseeded by :meth:`set_epoch`."""

    def __init__(self, batch_size: int, seed: int, num_replicas: int, rank: int, total: int):
        self.batch_size, self.seed = batch_size, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.per_rank = max(1, total // num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank


class BalancedBatchSampler(_EpochBatchSampler):
    """Batches with half reals and half fakes (by source label), seeded per epoch.

    Each epoch draws ``ceil(len(labels) / batch_size)`` batches: both classes are shuffled and
    cycled (the smaller class repeats). With ``num_replicas > 1`` (DDP) every rank builds the same
    batch list and takes every ``num_replicas``-th batch, so ranks see disjoint batches.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 num_batches: int | None = None):
        labels = np.asarray(labels)
        if batch_size < 2:
            raise ValueError(f"batch_size: a balanced batch needs at least 2, got {batch_size}")
        self.real = np.flatnonzero(labels == 0)
        self.fake = np.flatnonzero(labels == 1)
        if not len(self.real) or not len(self.fake):
            raise ValueError(f"BalancedBatchSampler needs both classes (n_real={len(self.real)}, n_fake={len(self.fake)})")
        super().__init__(batch_size, seed, num_replicas, rank, num_batches or math.ceil(len(labels) / batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        n_batches = self.per_rank * self.num_replicas
        n_fake = self.batch_size // 2
        n_real = self.batch_size - n_fake

        def stream(idx: np.ndarray, n: int) -> np.ndarray:
            reps = math.ceil(n / len(idx))
            return np.concatenate([rng.permutation(idx) for _ in range(reps)])[:n]

        reals = stream(self.real, n_batches * n_real).reshape(n_batches, n_real)
        fakes = stream(self.fake, n_batches * n_fake).reshape(n_batches, n_fake)
        batches = np.concatenate([reals, fakes], axis=1)
        for b in range(self.rank, n_batches, self.num_replicas):
            yield batches[b].tolist()


class PairedBatchSampler(_EpochBatchSampler):
    """Batches of whole pairs: each fake next to its own real, seeded per epoch.

    ``pairs``: (P, 2) ``[real_index, fake_index]`` (:func:`pair_indices`). A batch holds
    ``batch_size // 2`` pairs, reals first then their fakes in the same order, so the only
    difference between the two halves is the forgery (as SBI and Face X-ray train). Each epoch
    draws ``num_batches`` (default ``ceil(2P / batch_size)``) batches, cycling through a fresh
    permutation of the pairs; with ``num_replicas > 1`` (DDP) rank r takes every
    ``num_replicas``-th batch.
    """

    def __init__(self, pairs, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 num_batches: int | None = None):
        self.pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size: a paired batch needs an even size >= 2, got {batch_size}")
        if not len(self.pairs):
            raise ValueError("paired batches: no (real, fake) pairs; the training data has no fake whose own real "
                             "is present (a `synth generate` output has them; for other data use pairing "
                             "'independent', `--pairing independent`)")
        super().__init__(batch_size, seed, num_replicas, rank,
                         num_batches or math.ceil(2 * len(self.pairs) / batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 11])
        k = self.batch_size // 2
        n_batches = self.per_rank * self.num_replicas
        reps = math.ceil(n_batches * k / len(self.pairs))
        order = np.concatenate([rng.permutation(len(self.pairs)) for _ in range(reps)])[:n_batches * k]
        chosen = self.pairs[order].reshape(n_batches, k, 2)
        for b in range(self.rank, n_batches, self.num_replicas):
            yield chosen[b, :, 0].tolist() + chosen[b, :, 1].tolist()


def size_grouped_batches(sizes: Sequence[tuple[int, int] | None], batch_size: int) -> list[list[int]]:
    """Batches of indices whose images share the same (H, W) (unreadable ones batched alone), order kept within a size."""
    by_size: dict = {}
    for k, hw in enumerate(sizes):
        by_size.setdefault(hw if hw is not None else ("bad", k), []).append(k)
    batches = []
    for idx in by_size.values():
        batches.extend(idx[i:i + batch_size] for i in range(0, len(idx), batch_size))
    return batches
