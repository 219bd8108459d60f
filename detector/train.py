"""One training round: AdamW + cosine schedule, per-epoch validation, best-epoch selection.

The best epoch is chosen by AUC on the *validation split of the training pool* (never on an
evaluation set). ``OUT/best.pt`` (a :mod:`detector.checkpoint` file) holds the best weights,
``OUT/last.pt`` the full training state for resuming an interrupted round, ``OUT/train_log.jsonl``
one line per step and per epoch.

DDP: when started by ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the round initialises a
``gloo`` process group, wraps the model in DistributedDataParallel and gives each rank its own
share of the balanced batches; rank 0 alone validates and writes files, and every rank ends with
the best weights.
"""
from __future__ import annotations

import copy
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from detector.checkpoint import atomic_torch_save, save_checkpoint
from detector.data import BalancedBatchSampler, FaceDataset, PairedBatchSampler, collate, size_grouped_batches
from detector.metrics import compute_metrics
from detector.models.registry import logits_of
from detector.readers import pair_indices

LAST_STATE = "last.pt"
TRAIN_LOG = "train_log.jsonl"


# ---------------------------------------------------------------------------------- distributed

def dist_env() -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment (``(0, 1)`` when not distributed)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed() -> tuple[int, int]:
    """Initialise the gloo process group when launched by torchrun; returns ``(rank, world_size)``."""
    rank, world = dist_env()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return rank, world


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _broadcast(obj, world: int):
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def channels_last(x):
    """``x`` (a module or a 4-D batch) in the channels-last memory layout.

    Convolutions run about 1.6x faster this way on CPU (oneDNN's native layout; BENCHMARKS.md,
    session 9, "Training throughput") and on CUDA tensor cores; values and parameter names are unchanged.
    """
    return x.to(memory_format=torch.channels_last)


PRECISIONS = ("fp32", "bf16")


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"`` -> ``"bf16"`` where the device runs bfloat16 natively (CPUs with AVX512-BF16 or AMX
    through oneDNN, CUDA GPUs with bf16 support), else ``"fp32"``; other values are checked and returned.

    Native is not always faster on a CPU: :func:`train_round` times both before it trusts ``"bf16"``
    there (:func:`faster_precision`)."""
    if precision == "auto":
        if str(device).startswith("cuda"):
            return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
        # oneDNN also "supports" bf16 on plain AVX-512 by emulation, which is no faster: ask for the
        # native instructions
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return "bf16" if native and torch.backends.mkldnn.is_available() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {['auto', *PRECISIONS]}, got {precision!r}")
    return precision


def faster_precision(model: torch.nn.Module, loss_fn: Callable, side: int, batch_size: int, device: str = "cpu", *,
                     repeats: int = 5, margin: float = 1.25) -> tuple[str, dict]:
    """Whether float32 or bfloat16 autocast trains ``model`` faster on this device.

    CPUs with native bf16 instructions differ: with AMX, or on AMD Zen 4, a bf16 step of the default
    detector cost ~0.6 of a float32 one; on an Intel VM with AVX512-BF16 but no AMX, 1.1-1.3x
    (BENCHMARKS.md, "Train → evaluate → regenerate", sessions 12, 28 and 38). So the flags cannot
    decide; this times it. A copy of ``model`` runs ``repeats`` training steps (forward, ``loss_fn``,
    backward) on a fixed random batch of ``batch_size`` faces of ``side`` px in each precision,
    alternating, after one warm-up step each, and each precision is judged by its fastest step (other
    work on the machine only ever adds time). ``model``, its gradients and torch's global random state
    are left untouched.

    Returns ``(precision, seconds)``: ``"bf16"`` only when its fastest step is at least ``margin`` x
    faster, and the fastest seconds per step of each. The margin is wide because timings of a few steps
    on a shared VM scatter by ~15 %: a near tie keeps float32, the exact one, and a run does not switch
    precision from round to round by chance.
    """
    if repeats < 1 or not margin > 0:
        raise ValueError(f"repeats, margin: expected >= 1 and > 0, got {repeats}, {margin}")
    probe = channels_last(copy.deepcopy(model).to(device).train())
    gen = torch.Generator().manual_seed(0)
    image = channels_last(torch.randn(batch_size, 3, side, side, generator=gen).to(device))
    label = (torch.arange(batch_size) % 2).float().to(device)
    mask = (torch.rand(batch_size, 1, side, side, generator=gen) * label.cpu().view(-1, 1, 1, 1)).to(device)
    valid = torch.ones(batch_size, dtype=torch.bool, device=device)
    kind = torch.device(device).type

    def step(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator
            with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
                out = probe(image)
            out = {k: v.float() if torch.is_tensor(v) else v for k, v in out.items()}
            loss, _ = loss_fn(out, label, mask, valid)
            loss.backward()
        probe.zero_grad(set_to_none=True)
        if kind == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    times = {"fp32": [], "bf16": []}
    for k in range(repeats + 1):
        for name in times:
            t = step(name == "bf16")
            if k:  # the first of each is the warm-up (allocations, oneDNN kernel selection)
                times[name].append(t)
    seconds = {name: float(min(v)) for name, v in times.items()}
    return ("bf16" if seconds["fp32"] >= margin * seconds["bf16"] else "fp32"), seconds


def _train_side(ds: FaceDataset) -> int:
    """The side of the faces ``ds`` yields for training (patch, resized or full face)."""
    return {"patch": ds.patch, "resize": ds.size}.get(ds.mode, ds.full_size or ds.size)


def _worker_init(_):
    cv2.setNumThreads(1)  # DataLoader workers share the cores with the training process
    torch.set_num_threads(1)


def resolve_workers(workers: int | str, device: str) -> int:
    """DataLoader worker processes for a model on ``device``: ``"auto"`` -> 0 on a CPU, 2 on other devices
    (CUDA); an int >= 0 is returned as is; anything else -> ValueError.

    On a CPU the model's own threads already use every core, so loader processes only compete with them
    (the OpenMP team of a convolution waits for its slowest thread, and a core lent to a loader makes it
    slow), and every loader start costs seconds (a forkserver child imports torch), while decoding a face
    costs a few ms against tens of ms of model compute. A GPU leaves the cores to the loaders. Measured in
    BENCHMARKS.md ("Train → evaluate → regenerate", session 34): the same round, same results, in less time.
    """
    if workers == "auto":
        return 0 if str(device).split(":")[0] == "cpu" else 2
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected 'auto' or an int >= 0, got {workers!r}")
    return workers


def loader_workers(workers: int) -> dict:
    """DataLoader kwargs for ``workers`` worker processes (none for 0).

    Workers start from a forkserver where the platform has one, not by forking this process:
    a child forked after OpenCV's pthreads pool has run can hang inside OpenCV (opencv#5150),
    and the parent here has usually decoded images already. Python 3.14 makes forkserver the
    Linux default too. The dataset must pickle.
    """
    if not workers:
        return {"num_workers": 0}
    context = "forkserver" if "forkserver" in mp.get_all_start_methods() else None
    return {"num_workers": workers, "worker_init_fn": _worker_init, "multiprocessing_context": context}


# ------------------------------------------------------------------------------------- scoring

@torch.no_grad()
def score_dataset(model: torch.nn.Module, dataset: FaceDataset, batch_size: int = 16, workers: int = 0,
                  device: str = "cpu", progress: bool = False, desc: str = "score") -> tuple[np.ndarray, int]:
    """Fake probability (sigmoid of the logit) for every sample of ``dataset``.

    Images are batched by native size (mode ``full`` keeps each face's own size). Returns
    ``(scores float64 (N,), n_skipped)``; unreadable samples get NaN and are counted.
    """
    was_training = model.training
    channels_last(model).eval()
    scores = np.full(len(dataset), np.nan)
    sizes = dataset.native_sizes() if dataset.mode == "full" else [(0, 0)] * len(dataset)
    loader = DataLoader(dataset, batch_sampler=size_grouped_batches(sizes, batch_size), collate_fn=collate,
                        **loader_workers(workers))
    skipped = 0
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        skipped += batch["skipped"]
        if "image" not in batch:
            continue
        logit = logits_of(model, channels_last(batch["image"].to(device))).float()
        scores[batch["index"].numpy()] = torch.sigmoid(logit).cpu().numpy()
    model.train(was_training)
    return scores, skipped


def evaluate(model: torch.nn.Module, dataset: FaceDataset, batch_size: int = 16, workers: int = 0,
             device: str = "cpu", progress: bool = False, desc: str = "eval") -> tuple[dict, np.ndarray]:
    """Score ``dataset`` and compute metrics (per generator, per video when the samples say so).

    Returns ``(metrics, scores)``; ``metrics["n_skipped"]`` counts unreadable images (left out).
    """
    scores, skipped = score_dataset(model, dataset, batch_size, workers, device, progress, desc)
    metrics = sample_metrics(dataset.samples, scores)
    metrics["n_skipped"] = int(skipped)
    return metrics, scores


def sample_metrics(samples: Sequence, scores: np.ndarray) -> dict:
    """:func:`detector.metrics.compute_metrics` of ``scores`` (fake probabilities aligned with ``samples``; NaN
    for unreadable, left out), per generator and per video when the samples say so."""
    ok = np.isfinite(scores)
    samples = [s for s, k in zip(samples, ok) if k]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    generators = [s.meta.get("generator", "unknown") for s in samples]
    videos = [s.meta.get("video") for s in samples]
    return compute_metrics(labels, np.asarray(scores)[ok], generators=generators,
                           videos=videos if all(v is not None for v in videos) and videos else None)


# ------------------------------------------------------------------------------------- helpers

def _auc_key(metrics: dict) -> float:
    auc = metrics.get("auc", math.nan)
    return auc if math.isfinite(auc) else -math.inf


class _JsonlLog:
    def __init__(self, path: Path | None):
        self.fh = path.open("a") if path is not None else None

    def write(self, rec: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(rec) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


# --------------------------------------------------------------------------------------- round

class WeightEMA:
    """Exponential moving average of a model's ``state_dict`` (parameters and BatchNorm statistics).

    ``update(model)`` after each optimiser step (the first call copies); ``averaged()`` returns a
    copy of the model holding the average. Only ``state_dict`` entries are averaged, so
    non-persistent, input-size-dependent buffers (e.g. a DCT mask) are left alone.

    Not ``torch.optim.swa_utils.AveragedModel`` / timm's ``ModelEmaV3``: with buffers averaged they
    walk ``module.buffers()``, which includes those non-persistent buffers (their shape follows the
    last input size), and integer buffers (``num_batches_tracked``) must be copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.n = float(decay), 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._module = copy.deepcopy(model)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.n += 1
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if self.n == 1 or not s.is_floating_point():
                s.copy_(v)
            else:
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)

    def averaged(self) -> torch.nn.Module:
        self._module.load_state_dict(self.shadow)
        return self._module

    def state_dict(self) -> dict:
        return {"n": self.n, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


def check_batch_scale(scale) -> tuple[float, float] | None:
    """``None`` or ``(lo, hi)`` with ``0 < lo <= hi <= 1`` as a tuple of floats; ValueError otherwise."""
    if scale is None:
        return None
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"batch_scale: expected (lo, hi), got {scale!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"batch_scale: expected (lo, hi) with 0 < lo <= hi <= 1, got {scale!r}")
    return lo, hi


def rescale_batch(image: torch.Tensor, mask: torch.Tensor, scale: tuple[float, float],
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Downscale a batch (image B x C x H x W float, mask B x 1 x H x W in [0, 1]) to one side drawn
    uniformly from the multiples of 32 in ``[scale[0] * H, scale[1] * H]`` (antialiased bilinear).
    H == W is expected (square faces); with no multiple of 32 in range the batch is returned as is."""
    h = image.shape[-1]
    sides = [s for s in range(32, h + 1, 32) if scale[0] * h - 1e-6 <= s <= scale[1] * h + 1e-6]
    if not sides:
        return image, mask
    side = int(rng.choice(sides))
    if side == h:
        return image, mask
    size = (side, side)
    return (F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False),
            F.interpolate(mask, size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1))


def amplify_pairs(image: torch.Tensor, factor: torch.Tensor | float, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """A paired batch (reals in the first half, their own fakes in the same order in the second)
    with each fake's difference from its real scaled: ``real + factor * (fake - real)``, clamped to
    the valid range ``[lo, hi]`` (per channel, shape (1, C, 1, 1), in the batch's normalisation).

    ``factor`` is a float or one value per pair (shape (B // 2,)). The forgery is the only
    difference inside a pair, so this strengthens exactly the traces to learn (seams, colour and
    quality mismatches) and nothing else; factor 1 is a no-op.
    """
    half = image.shape[0] // 2
    factor = torch.as_tensor(factor, dtype=image.dtype).reshape(-1, 1, 1, 1)
    real, fake = image[:half], image[half:2 * half]
    out = image.clone()
    out[half:2 * half] = torch.maximum(torch.minimum(real + factor * (fake - real), hi), lo)
    return out


_DETAIL_SIGMA = 1.0
_DETAIL_GAIN = (-1.0, 4.0)  # -1: the blurred image itself; beyond +4 sharpening rings visibly


def _gaussian_blur(x: torch.Tensor, sigma: float = _DETAIL_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of a float batch (B, C, H, W), reflect-padded, radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def detail_gain(band: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """Per image ``x``, the gain ``a`` of ``x + a (x - G x)`` (``G``: Gaussian blur, sigma 1; ``a < 0``
    blurs, ``a > 0`` sharpens) whose fine-detail energy ``mean((y - G y)^2)`` equals ``energy``.

    With ``d = x - G x`` and ``e = d - G d`` the energy is ``D + 2 a B + a^2 C`` (``D = mean d^2``,
    ``B = mean d e``, ``C = mean e^2``), so ``a`` is the root nearest 0; where the target lies below
    the reachable minimum, the minimising ``a``. Clipped to [-1, 4].

    band : float tensor (B, C, H, W), the detail band ``d = x - G x``; energy : float tensor (B,).
    Returns float tensor (B,).
    """
    d = band
    e = d - _gaussian_blur(d)
    dd, de, ee = ((d * d).mean((1, 2, 3)), (d * e).mean((1, 2, 3)), (e * e).mean((1, 2, 3)).clamp_min(1e-12))
    disc = (de * de + ee * (energy - dd)).clamp_min(0)
    return ((-de + disc.sqrt()) / ee).clamp(*_DETAIL_GAIN)


def match_detail_pairs(image: torch.Tensor, p: float, rng: np.random.Generator, lo: torch.Tensor,
                       hi: torch.Tensor) -> torch.Tensor:
    """A paired batch (reals in the first half, their own fakes in the same order in the second) in
    which pairs drawn with probability ``p`` have one side (real or fake, drawn evenly) globally
    sharpened or blurred until its fine-detail energy equals the other's (:func:`detail_gain`).

    Blending, colour transfer and sharpening of the source leave most of our fakes with a little more
    fine detail than their own reals (``benchmarks/bench_pair_detail.py``), so "more detail" is a
    label on our data and "a sharpened photo is fake" what a model may learn from it.
    Matched pairs carry no such label; the seams and mismatches *inside* the fake remain, since one
    gain is applied to the whole image. The matched pairs are balanced: as many whose fake has more
    detail than its real as the reverse (a random subset of the larger group is left as is).
    Otherwise blurring would mostly meet fakes and sharpening reals, and the operation itself would
    become the label. Clamped to ``[lo, hi]`` (per channel, (1, C, 1, 1)).
    """
    half = image.shape[0] // 2
    chosen = rng.random(half) < p
    real_side = rng.random(half) < 0.5
    order = rng.permutation(half)
    if not half or not chosen.any():
        return image
    with torch.no_grad():
        band = image - _gaussian_blur(image)
        energy = (band * band).mean((1, 2, 3))
        richer_fake = (energy[half:2 * half] > energy[:half]).numpy()
        groups = [order[chosen[order] & (richer_fake[order] == g)] for g in (True, False)]
        n = min(len(g) for g in groups)
        k = np.sort(np.concatenate([g[:n] for g in groups])).astype(np.int64)
        if not len(k):
            return image
        side = torch.from_numpy(real_side[k])
        k = torch.from_numpy(k)
        moved = torch.where(side, k, k + half)
        other = torch.where(side, k + half, k)
        d = band[moved]
        gain = detail_gain(d, energy[other])
        out = image.clone()
        out[moved] = torch.maximum(torch.minimum(image[moved] + gain.reshape(-1, 1, 1, 1) * d, hi), lo)
    return out


def quality_twins(image: torch.Tensor, n_pairs: int, rng: np.random.Generator, mean: np.ndarray,
                  std: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Globally processed copies of the first ``n_pairs`` pairs of a paired batch.

    Each chosen pair draws one global operation (:func:`detector.quality.draw_global_op`: blur,
    sharpen, down-up resampling or JPEG over the whole image), applied to its real and its fake alike.
    Training the twins' scores to equal their originals' (:func:`twin_consistency`) tells the model
    that global image quality carries no label, which the data alone does not: any correlation
    between the recipes' fakes and sharpness survives augmentation that treats both classes alike.

    Parameters
    ----------
    image : float tensor (2P, 3, H, W), normalised with ``mean``/``std``; reals ``[0, P)``, their
        fakes ``[P, 2P)`` in the same order (:class:`detector.data.PairedBatchSampler`).
    n_pairs : pairs to copy, ``0 <= n_pairs <= P``.
    mean, std : the dataset's per-channel normalisation, 3 values each (any shape).

    Returns
    -------
    twins : float tensor (2 n, 3, H, W), the processed reals then the processed fakes, normalised.
    source : long tensor (2 n,), the index in ``image`` each twin was made from.
    """
    from detector.quality import apply_global_op, draw_global_op

    pairs = image.shape[0] // 2
    if not 0 <= n_pairs <= pairs:
        raise ValueError(f"twins: expected 0 <= twins <= {pairs} pairs in the batch, got {n_pairs}")
    source = torch.tensor(list(range(n_pairs)) + [pairs + i for i in range(n_pairs)], dtype=torch.long)
    m = torch.as_tensor(mean, dtype=image.dtype).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype).reshape(-1, 1, 1)
    u8 = ((image[source] * s + m).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    ops = [draw_global_op(rng) for _ in range(n_pairs)] * 2  # the real and the fake of a pair share one op
    done = np.stack([apply_global_op(np.ascontiguousarray(im), *op) for im, op in zip(u8, ops)])
    twins = torch.from_numpy(done).permute(0, 3, 1, 2).to(image.dtype) / 255
    return (twins - m) / s, source


def twin_consistency(twin_logit: torch.Tensor, source_logit: torch.Tensor) -> torch.Tensor:
    """KL divergence of the twins' fake probabilities from their originals' (held fixed), mean over
    twins: zero when global processing leaves every score unchanged. The original is the target, so
    the gradient moves the processed copy's score, not the score the label loss is training."""
    p = torch.sigmoid(source_logit.detach())
    entropy = -(p * torch.log(p.clamp_min(1e-7)) + (1 - p) * torch.log((1 - p).clamp_min(1e-7)))
    return (torch.nn.functional.binary_cross_entropy_with_logits(twin_logit, p, reduction="none") - entropy).mean()


def twin_logit_gap(twin_logit: torch.Tensor, source_logit: torch.Tensor) -> torch.Tensor:
    """Squared difference of the twins' logits from their originals' (held fixed), mean over twins.

    Unlike :func:`twin_consistency`, whose gradient shrinks with ``p (1 - p)`` where scores sit near
    0.5, this pulls a shifted logit back at the same rate wherever it is: the global-quality check
    ranks processed reals against unprocessed ones, so a small shift shared by all of them is what
    it reads, whatever the probabilities."""
    return (twin_logit - source_logit.detach()).pow(2).mean()


# the consistency terms a twin can take, by name (``TrainSettings.twin_loss``)
TWIN_LOSSES = {"kl": twin_consistency, "logit": twin_logit_gap}


def amplify_factor(start: float, step: int, steps: int, until: float) -> float:
    """Forgery amplification at ``step`` of ``steps``: ``start`` decaying linearly to 1 at ``until`` x steps."""
    if start <= 1.0 or until <= 0:
        return 1.0
    return 1.0 + (start - 1.0) * max(0.0, 1.0 - step / (until * steps))


@dataclass(frozen=True)
class TrainSettings:
    """How one round trains (:func:`train_round`): schedule, batches, curriculum and numerics.

    Every range is checked on construction (``ValueError`` naming the field); ``batch_scale`` is
    stored normalised to a tuple of floats. Frozen: derive variants with :func:`dataclasses.replace`.

    Parameters
    ----------
    epochs : int, >= 1
        Epochs in the round; AdamW's rate follows one cosine from ``lr`` down to ``lr / 100`` over
        ``epochs`` x the steps per epoch.
    lr : float, > 0
        Peak learning rate.
    batch_size : int, >= 2 (even when ``paired``)
        Training batch size; batches are balanced real/fake by :class:`BalancedBatchSampler`
        (``ceil(len / batch_size)`` batches per epoch, or ``max_steps_per_epoch``), or with
        ``paired=True`` made of whole (real, own fake) pairs by :class:`PairedBatchSampler`.
    workers : int >= 0 or "auto"
        DataLoader worker processes for training and validation (0 = in this process); ``"auto"``:
        :func:`resolve_workers` (none on a CPU, where they would compete with the model for the cores).
    device : str
        Torch device the model trains on (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    weight_decay : float, >= 0
        AdamW's decoupled weight decay.
    seed : int, >= 0
        Seeds the batch sampler and the per-epoch draws of ``batch_scale``, ``amplify`` and ``twins``.
    val_batch_size : int, >= 1
        Batch size for validation (faces grouped by native size).
    progress : bool
        Show tqdm progress bars (rank 0 only).
    max_steps_per_epoch : int >= 0 or None
        Cap on the training steps per epoch; None or 0 = a full pass over the sampler's batches.
    best_name : str
        File name of the best weights (checkpoint format) in ``out_dir``.
    resume : bool
        Continue from ``out_dir/last.pt`` when present (it must hold the same epochs/steps schedule).
    grad_clip : float, >= 0
        Clip the gradient norm to this value before every step; 0 = no clipping.
    ema : float, in [0, 1)
        When > 0, validate, select and keep an exponential moving average of the weights (decay
        ``ema`` per step, BatchNorm statistics averaged too) instead of the raw weights; 0 = off.
    batch_scale : (lo, hi) with 0 < lo <= hi <= 1, or None
        Each training batch (image and mask) is downscaled to a side drawn per batch from the
        multiples of 32 in ``[lo, hi]`` x its side, so blend traces are seen at several scales (fakes
        met in practice were often made at a higher resolution than the crop they are judged at).
        Validation stays at the dataset's side. None = off.
    paired : bool
        Batches of whole (real, own fake) pairs (:class:`PairedBatchSampler`; the training dataset
        should then use ``paired_augment=True``) instead of independently drawn balanced batches.
    amplify : float, >= 1
        A curriculum for paired batches: each fake's difference from its own real is multiplied by a
        factor drawn per pair uniformly in ``[1, a]``, where ``a`` starts at ``amplify`` and decays
        linearly to 1 at ``amplify_until`` x the round's steps (:func:`amplify_pairs`); 1 = off.
        Ignored without ``paired``.
    amplify_until : float, in (0, 1]
        Fraction of the round's steps at which the amplification reaches 1.
    precision : str, ``"fp32"``, ``"bf16"`` or ``"auto"``
        ``"bf16"``: the training forward pass under bfloat16 autocast (weights, optimiser and loss
        stay float32); about 1.7x faster steps on some CPUs with native bf16, slower on others. ``"auto"``:
        bf16 where ``device`` runs it natively (:func:`resolve_precision`) and, on a CPU, where a timed
        step (:func:`faster_precision`, a few seconds before the first epoch) shows it faster; else fp32.
        Validation always runs in float32. Stored as given; the precision used is in the result.
    twins : int, 0 <= twins <= batch_size // 2; > 0 only with ``paired``
        The first ``twins`` pairs of every batch are copied once more, globally processed
        (:func:`quality_twins`), and ``twin_weight`` x the ``twin_loss`` term (logged as ``twin``)
        is added to the loss; the twins take no other loss. 0 = off.
    twin_weight : float, >= 0
        Weight of the twins' consistency term.
    twin_loss : str, a key of :data:`TWIN_LOSSES`
        ``"kl"`` (:func:`twin_consistency`, on probabilities) or ``"logit"`` (:func:`twin_logit_gap`,
        squared logit difference).
    detail_match : float, in [0, 1]; > 0 only with ``paired``
        Probability that a pair has its fine-detail energy matched (:func:`match_detail_pairs`),
        after amplification and rescaling, so the model sees matched pairs. 0 = off.
    """

    epochs: int
    lr: float = 3e-4
    batch_size: int = 32
    workers: int | str = "auto"
    device: str = "cpu"
    weight_decay: float = 0.05
    seed: int = 0
    val_batch_size: int = 16
    progress: bool = True
    max_steps_per_epoch: int | None = None
    best_name: str = "best.pt"
    resume: bool = True
    grad_clip: float = 5.0
    ema: float = 0.0
    batch_scale: tuple[float, float] | None = None
    paired: bool = False
    amplify: float = 1.0
    amplify_until: float = 0.5
    precision: str = "fp32"
    twins: int = 0
    twin_weight: float = 1.0
    twin_loss: str = "kl"
    detail_match: float = 0.0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size: expected >= 2 (a batch holds both classes), got {self.batch_size}")
        if self.paired and self.batch_size % 2:
            raise ValueError(f"batch_size: expected an even size for paired batches, got {self.batch_size}")
        resolve_workers(self.workers, self.device)
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay}")
        if self.seed < 0:
            raise ValueError(f"seed: expected >= 0, got {self.seed}")
        if self.val_batch_size < 1:
            raise ValueError(f"val_batch_size: expected >= 1, got {self.val_batch_size}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 0:
            raise ValueError(f"max_steps_per_epoch: expected None or >= 0 (None, 0 = a full pass), "
                             f"got {self.max_steps_per_epoch}")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip: expected >= 0 (0 = off), got {self.grad_clip}")
        if self.twins and not self.paired:
            raise ValueError("twins: quality twins need paired batches (paired=True)")
        if not (0 <= self.twins <= self.batch_size // 2 and self.twin_weight >= 0):
            raise ValueError(f"twins, twin_weight: expected 0 <= twins <= {self.batch_size // 2} and twin_weight >= 0, "
                             f"got {self.twins}, {self.twin_weight}")
        if self.twin_loss not in TWIN_LOSSES:
            raise ValueError(f"twin_loss: expected one of {sorted(TWIN_LOSSES)}, got {self.twin_loss!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema: expected a decay in [0, 1), got {self.ema}")
        object.__setattr__(self, "batch_scale", check_batch_scale(self.batch_scale))
        resolve_precision(self.precision, self.device)
        if not self.amplify >= 1.0:
            raise ValueError(f"amplify: expected >= 1 (1 = off), got {self.amplify}")
        if not 0.0 < self.amplify_until <= 1.0:
            raise ValueError(f"amplify_until: expected in (0, 1], got {self.amplify_until}")
        if not 0.0 <= self.detail_match <= 1.0:
            raise ValueError(f"detail_match: expected a probability in [0, 1], got {self.detail_match!r}")
        if self.detail_match and not self.paired:
            raise ValueError("detail_match: matching a fake's detail to its own real needs paired batches (paired=True)")


def train_round(model: torch.nn.Module, train_ds: FaceDataset, val_ds: FaceDataset | None, out_dir: str | Path,
                settings: TrainSettings, *, loss_fn: Callable | None = None, log: Callable[[str], None] = print,
                extra: dict | None = None) -> dict:
    """Train ``model`` for ``settings.epochs`` epochs on ``train_ds``, validating on ``val_ds`` after each.

    Parameters
    ----------
    model : built by ``detector.models.create_model`` (its ``input_norm`` should match the datasets').
    train_ds : a :class:`FaceDataset` (usually ``augment=True``; ``paired_augment=True`` with
        ``settings.paired``).
    val_ds : a :class:`FaceDataset` in mode ``full`` (whole faces) or None (then the last epoch wins).
    out_dir : receives ``settings.best_name`` (best weights, checkpoint format), ``last.pt``,
        ``train_log.jsonl``.
    settings : a :class:`TrainSettings` (checked on construction): schedule, batches, curriculum, precision.
    loss_fn : ``loss_fn(out, label, mask, mask_valid) -> (total, parts)``; default ``DetectorLoss()``.
    log : called with each progress message (rank 0 only).
    extra : stored in the best checkpoint's metadata, next to ``epoch`` and ``val``.

    Returns a dict (identical on every DDP rank): ``best_epoch`` (0-based), ``best_val_auc``,
    ``val_metrics`` (of the best epoch), ``val_scores`` (np.ndarray aligned with ``val_ds.samples``,
    NaN for unreadable), ``history`` (per-epoch dicts), ``best_path``, ``precision`` (``"fp32"`` or
    ``"bf16"``, what ``settings.precision`` resolved to), ``world_size``, ``wall_s``.
    On return the model holds the best epoch's weights.
    """
    if loss_fn is None:
        from detector.losses import DetectorLoss

        loss_fn = DetectorLoss()
    rank, world = init_distributed()
    main = rank == 0
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    _barrier(world)
    say = log if main else (lambda _msg: None)
    t_start = time.time()

    channels_last(model.to(settings.device))
    # broadcast_buffers=False: models keep size-dependent non-persistent buffers (e.g. a DCT mask rebuilt
    # for rank 0's validation sizes) that must not be broadcast; BN statistics stay per rank and every
    # rank ends with rank 0's best weights. find_unused_parameters: the mask/similarity heads get no
    # gradient in batches whose masks are all invalid.
    net = (torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)
           if world > 1 else model)
    if settings.paired:
        sampler = PairedBatchSampler(pair_indices(train_ds.samples), settings.batch_size, seed=settings.seed,
                                     num_replicas=world, rank=rank)
    else:
        sampler = BalancedBatchSampler(train_ds.labels, settings.batch_size, seed=settings.seed, num_replicas=world,
                                       rank=rank)
    steps = min(len(sampler), settings.max_steps_per_epoch or len(sampler))
    averaged = WeightEMA(model, settings.ema) if settings.ema else None
    # pixel values 0 and 1 in the datasets' normalisation (the amplified fakes stay valid images)
    pix_lo = torch.from_numpy(-train_ds.mean / train_ds.std)[None]
    pix_hi = torch.from_numpy((1.0 - train_ds.mean) / train_ds.std)[None]
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, settings.epochs * steps),
                                                       eta_min=settings.lr * 0.01)

    state = {"epoch": -1, "best_epoch": -1, "best_key": -math.inf, "history": [], "val_scores": None,
             "val_metrics": None, "step": 0}
    last_path, best_path = out_dir / LAST_STATE, out_dir / settings.best_name
    if settings.resume and last_path.is_file():
        ck = torch.load(last_path, map_location="cpu", weights_only=True)
        if ck["epochs"] != settings.epochs or ck["steps"] != steps:
            raise ValueError(f"{last_path}: saved for epochs={ck['epochs']}, steps={ck['steps']}; "
                             f"this round asks for epochs={settings.epochs}, steps={steps} "
                             "(delete it to restart the round)")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if averaged is not None:
            if ck.get("ema") is None:
                raise ValueError(f"{last_path}: saved without ema; this round asks for ema={settings.ema} "
                                 "(delete it to restart)")
            averaged.load_state_dict(ck["ema"])
        state = json.loads(ck["state"])
        state["best_key"] = -math.inf if state["best_key"] is None else state["best_key"]
        state["val_scores"] = ck["val_scores"].numpy() if ck.get("val_scores") is not None else None
        say(f"resuming round from {last_path} after epoch {state['epoch'] + 1}/{settings.epochs}")

    precision = resolve_precision(settings.precision, settings.device)
    if settings.precision == "auto" and precision == "bf16" and torch.device(settings.device).type == "cpu" and \
            state["epoch"] + 1 < settings.epochs:
        seconds = None
        if main:
            precision, seconds = faster_precision(model, loss_fn, _train_side(train_ds), settings.batch_size,
                                                  settings.device)
        precision, seconds = _broadcast((precision, seconds), world)
        say(f"precision auto: {precision} (a training step on this CPU: {seconds['fp32']:.2f} s in float32, "
            f"{seconds['bf16']:.2f} s in bf16)")
    use_bf16 = precision == "bf16"
    jlog = _JsonlLog(out_dir / TRAIN_LOG if main else None)
    workers = resolve_workers(settings.workers, settings.device)
    try:
        for epoch in range(state["epoch"] + 1, settings.epochs):
            t0 = time.time()
            train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            loader = DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate, **loader_workers(workers))
            net.train()
            losses, skipped = [], 0
            # dropout and every other draw from torch's global generator from (seed, epoch, rank) alone: a round
            # trains alike whatever ran before it in the process (e.g. fitting the statistics model or not)
            torch.manual_seed(int(np.random.default_rng([settings.seed, epoch, rank, 3]).integers(2 ** 62)))
            scale_rng = np.random.default_rng([settings.seed, epoch, rank])  # per epoch: resumable, reproducible
            amp_rng = np.random.default_rng([settings.seed, epoch, rank, 1])
            twin_rng = np.random.default_rng([settings.seed, epoch, rank, 2])
            detail_rng = np.random.default_rng([settings.seed, epoch, rank, 4])
            bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{settings.epochs}",
                       disable=not (settings.progress and main), leave=False)
            for k, batch in enumerate(bar):
                if k >= steps:
                    break
                skipped += batch["skipped"]
                if "image" not in batch:
                    continue
                image, mask, label = batch["image"], batch["mask"], batch["label"]
                factor = amplify_factor(settings.amplify, epoch * steps + k, settings.epochs * steps,
                                        settings.amplify_until)
                if settings.paired and factor != 1.0 and not batch["skipped"]:
                    # each pair draws its own strength in [1, factor], so real-scale fakes stay in every batch
                    u = torch.from_numpy(amp_rng.random(image.shape[0] // 2))
                    image = amplify_pairs(image, 1.0 + (factor - 1.0) * u, pix_lo, pix_hi)
                n = image.shape[0]
                n_twins = min(settings.twins, n // 2) if settings.twins and not batch["skipped"] else 0
                if n_twins:
                    twin_image, source = quality_twins(image, n_twins, twin_rng, train_ds.mean, train_ds.std)
                    image, mask = torch.cat([image, twin_image]), torch.cat([mask, mask[source]])
                if settings.batch_scale is not None:
                    image, mask = rescale_batch(image, mask, settings.batch_scale, scale_rng)
                if settings.detail_match and not batch["skipped"]:
                    image = torch.cat([match_detail_pairs(image[:n], settings.detail_match, detail_rng, pix_lo, pix_hi),
                                       image[n:]])
                with torch.autocast(torch.device(settings.device).type, dtype=torch.bfloat16, enabled=use_bf16):
                    out_all = net(channels_last(image.to(settings.device)))
                out_all = {k: v.float() if torch.is_tensor(v) else v for k, v in out_all.items()}
                # the twins (rows n:) enter only the consistency term
                out = {k: v[:n] if torch.is_tensor(v) and v.ndim and v.shape[0] == image.shape[0] else v
                       for k, v in out_all.items()}
                loss, parts = loss_fn(out, label.to(settings.device), mask[:n].to(settings.device),
                                      batch["mask_valid"].to(settings.device))
                if n_twins:
                    logit = out_all["logit"].reshape(-1)
                    twin_term = TWIN_LOSSES[settings.twin_loss](logit[n:], logit[source.to(settings.device)])
                    loss = loss + settings.twin_weight * twin_term
                    parts["twin"] = twin_term.detach()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if settings.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                opt.step()
                sched.step()
                if averaged is not None:
                    averaged.update(model)
                state["step"] += 1
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                jlog.write({"kind": "step", "epoch": epoch, "step": state["step"], "lr": sched.get_last_lr()[0],
                            **{k2: float(v) for k2, v in parts.items()}, "loss": losses[-1]})
            _barrier(world)

            rec = {"kind": "epoch", "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                   "train_skipped": skipped, "steps": len(losses)}
            if main:
                no_val = val_ds is None or not len(val_ds)
                scored = averaged.averaged() if averaged is not None else model  # the weights judged and kept
                if not no_val:
                    metrics, scores = evaluate(scored, val_ds, settings.val_batch_size, workers, settings.device,
                                               settings.progress, "validate")
                else:
                    metrics, scores = {"auc": math.nan, "warning": "no validation set"}, None
                rec.update({"val_auc": metrics.get("auc"), "val": metrics})
                key = _auc_key(metrics)
                improved = state["best_epoch"] < 0 or key > state["best_key"] or no_val
                if improved:
                    state.update(best_epoch=epoch, best_key=key, val_metrics=metrics, val_scores=scores)
                    save_checkpoint(best_path, scored, extra={**(extra or {}), "epoch": epoch, "val": metrics})
                rec.update({"best": improved, "time_s": round(time.time() - t0, 2)})
                state["history"].append(rec)
                state["epoch"] = epoch
                jlog.write(rec)
                vs = state["val_scores"]
                atomic_torch_save({
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "ema": averaged.state_dict() if averaged is not None else None,
                    "epochs": settings.epochs, "steps": steps,
                    "state": json.dumps({k: v for k, v in state.items() if k != "val_scores"} |
                                        {"best_key": None if state["best_key"] == -math.inf else state["best_key"]}),
                    "val_scores": torch.from_numpy(vs) if vs is not None else None,
                }, last_path)
                say(f"epoch {epoch + 1}/{settings.epochs}: train loss {rec['train_loss']:.4f}, "
                    f"val AUC {rec['val_auc']:.4f}"
                    f"{' (best)' if improved else ''}, {rec['time_s']:.0f} s")
            else:
                state["epoch"] = epoch
            _barrier(world)
    finally:
        jlog.close()

    summary = None
    if main:
        summary = {"best_epoch": state["best_epoch"], "best_val_auc": state["val_metrics"].get("auc"),
                   "val_metrics": state["val_metrics"], "history": state["history"],
                   "val_scores": state["val_scores"], "best_path": str(best_path), "precision": precision}
    summary = _broadcast(summary, world)
    _barrier(world)
    best = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(best)
    summary.update(world_size=world, wall_s=round(time.time() - t_start, 2))
    return summary
