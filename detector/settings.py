"""The settings of a training run: :class:`LoopConfig`, their range checks, and what a resumed run may change.

``detector train`` builds a :class:`LoopConfig` from its options and ``--config`` file
(:mod:`detector.config`), :func:`check_config` validates it before any work starts, and
:func:`detector.loop.run_loop` stores it in ``RUN/state.json``. Each round trains with the
:class:`detector.train.TrainSettings` that :func:`round_settings` derives from it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping

from detector.condition import parse_condition

if TYPE_CHECKING:
    from detector.train import TrainSettings

__all__ = ["CNN_MEMBER_SEED_OFFSET", "FUSIONS", "LEGACY_CONFIG", "LOOP_MODEL_KWARGS", "PAIRINGS", "RESUME_MUTABLE",
           "LoopConfig", "check_config", "check_resume", "check_weight_clip", "member_seed", "normalised_config",
           "round_settings"]


@dataclass
class LoopConfig:
    """Everything that defines a run (stored in ``RUN/state.json``)."""

    data_dirs: list[str]
    eval_dir: str
    out_dir: str
    model_name: str = "freq_attention"
    model_kwargs: dict = field(default_factory=dict)
    condition: str = "auc>0.8"
    # 3 rounds x 3 epochs x 120 steps keep the default run within an hour on a 2-core CPU in float32,
    # and twice the steps did not transfer better (see BENCHMARKS.md, "Train → evaluate →
    # regenerate", session 12)
    max_rounds: int = 3
    regen_n: int = 2000
    epochs_per_round: int = 3
    recipe: str = "mixed"
    src: str | None = None
    index: str | None = None
    regen_size: int | None = None
    mode: str = "full"
    patch: int = 128
    size: int = 256
    batch_size: int = 16
    # DataLoader processes for training and scoring; "auto": none on a CPU, where they would compete with the
    # model for the cores (detector.train.resolve_workers; BENCHMARKS.md, "Train → evaluate → regenerate",
    # session 34), 2 on a GPU
    workers: int | Literal["auto"] = "auto"
    gen_workers: int = 2
    lr: float = 1e-3
    # round r peaks at lr * lr_decay ** (r - 1): later rounds refine the previous round's model on a
    # larger pool instead of being thrown back to the peak rate (see BENCHMARKS.md, "Train → evaluate →
    # regenerate", session 4, learning rate across rounds)
    lr_decay: float = 0.5
    ema: float = 0.0  # > 0: validate and keep an EMA of the weights (decay per step)
    # (lo, hi): each training batch is downscaled by a factor drawn in it (multi-scale traces); (1, 1) = off.
    # Fakes are often made at another resolution than the crop they are judged at: seeing the traces at
    # several scales transfers better across generators (see BENCHMARKS.md, "Detector design choices")
    batch_scale: tuple[float, float] | None = (0.5, 1.0)
    # "paired": every batch holds whole (real, own fake) pairs with identical augmentation, so the
    # forgery is the only difference inside a pair; "independent": reals and fakes drawn apart
    pairing: str = "paired"
    # validation reals scored as they are and globally processed each round (detector.quality)
    quality_reals: int = 256
    # the statistics model (detector.statistics): fitted once, before round 1, on this many (real,
    # fake) pairs rendered in memory from the face source with the run's recipe, its validation identities
    # left out; every round's checkpoint is then the score fusion of the CNN and it, so the run ends on
    # both (0 = the CNN alone). Measured: fused, every seed transferred better than the CNN alone (see
    # BENCHMARKS.md, "Train → evaluate → regenerate", sessions 13 and 14)
    statistics_n: int = 24000
    # "stats_conv" (a small conv net on 16 x 16 statistic maps with a mask head), "patch_stats" (an MLP on
    # 8 x 8 cells; with it, statistics_n 40000 and statistics_twins 0 were the defaults) or
    # "patch_stats_extended" (the MLP on 13 statistics: a better member alone, a worse fusion, session 21) or
    # "stats_conv_fine" (stats_conv on a 32 x 32 grid: alone, much less moved by global quality on studio photos,
    # a little less detection on our held-out sets; fits in about twice the time; session 27) or
    # "stats_conv_extended" (stats_conv on the 13 statistics: alone, better on our validation and held-out recipe,
    # but it scores JPEG-compressed reals as more fake; session 35).
    # Fused with the same CNNs, stats_conv beat the MLP on synth validation, the held-out recipe, our fakes on
    # studio faces (but for the old recipe's: -0.014 to +0.003) and global-quality blindness, in every seed and
    # round; it was chosen on those, not on the evaluation set (see BENCHMARKS.md, "Train → evaluate →
    # regenerate", sessions 18 and 23)
    statistics_model: str = "stats_conv"
    statistics_steps: int | None = None  # None: the model's default (detector.fit_statistics.STATISTICS_FITS)
    # probability that a statistics pair is also fitted under one global operation (blur, sharpen,
    # resampling, JPEG) applied to its real and fake alike, so that global quality carries no label
    statistics_twins: float = 0.5
    # faces of the photo domain the detector will be used on (a `synth index`), for the statistics model only:
    # statistics_extra_n more pairs are rendered from them (the run's validation identities left out) and added
    # to its fit. The CNN never sees them. Measured: 2,600 pairs from 20 studio portraits added to 12,000
    # UTKFace pairs made the statistics model, alone and fused, far less moved by global quality on 20 other
    # studio portraits and better at detecting fakes on them, with UTKFace validation level, in three seeds; at the
    # full budget (two seeds) too, but the held-out recipe and, read out, other generators' fakes fell: a trade-off,
    # so off by default (BENCHMARKS.md, "Train → evaluate → regenerate", sessions 29 and 30)
    statistics_extra_index: str | None = None
    statistics_extra_n: int = 0
    # how the CNN and the statistics model are weighted in each round's fusion, both on z-scored logits
    # measured on the validation split: "equal" (their mean) or "learnt" (a logistic regression on that
    # split's labels sets the two weights; detector.fit_statistics.set_fusion_weights)
    fusion: str = "equal"
    # each round's fused detector also scores the mirror image of a face and averages the two views
    # (detector.models.fusion.ScoreFusion ``mirror``); training is unchanged, scoring costs 1.7-1.8x as much.
    # On by default: on five checkpoints of three seeds every set we may use came out up or level (+0.000 to +0.012)
    # and moved the global-quality check by +0.004 / +0.005 on average (BENCHMARKS.md, "Train → evaluate →
    # regenerate", session 26)
    mirror: bool = True
    # forgery amplification curriculum (paired only): a fake's difference from its own real is scaled
    # by a factor drawn per pair in [1, a], a decaying from `amplify` to 1 at `amplify_until` x the
    # round's steps (detector.train.amplify_pairs); 1 = off. From scratch, real-scale traces alone
    # leave the label loss at chance for hundreds of steps, amplified ones are picked up at once
    amplify: float = 4.0
    amplify_until: float = 1.0
    # training forward pass: "fp32", "bf16" (autocast) or "auto" (bf16 where the device runs it natively
    # and, on a CPU, a timed step shows it faster): bf16 steps learn as well as float32 and are much cheaper
    # with AMX or on Zen 4, but slower on AVX512-BF16 without AMX (see BENCHMARKS.md, "Train → evaluate →
    # regenerate", sessions 12 and 38)
    precision: str = "auto"
    # quality twins (paired only, like amplify; ignored with pairing "independent"): the first `twins`
    # pairs of each batch are copied once more under one random global operation (blur, sharpen,
    # resampling, JPEG; detector.train.quality_twins) and their scores pulled to their originals' with
    # weight `twin_weight`. Off by default: 2 pairs made the CNN less dependent on global quality but
    # transferred worse to other generators' swaps in two of three seeds (see BENCHMARKS.md, "Train →
    # evaluate → regenerate", session 15)
    twins: int = 0
    twin_weight: float = 1.0
    # the twins' consistency term: "kl" on probabilities or "logit", the squared logit difference
    # (detector.train.TWIN_LOSSES)
    twin_loss: str = "kl"
    # detail matching (paired only): with this probability a pair has one side globally sharpened or
    # blurred until its fine-detail energy equals the other's (detector.train.match_detail_pairs), so
    # "more fine detail" -- which most of our fakes have over their own reals -- carries no label.
    # On by default: the fused detector came out less dependent on global quality with detection on
    # our held-out sets unchanged (three seeds; BENCHMARKS.md, "Train → evaluate → regenerate",
    # sessions 24-25)
    detail_match: float = 1.0
    # CNNs trained each round on the same pool and validation split, each from its own initial weights and
    # augmentation draws; the round's CNN is the mean of their logits (a `score_fusion` with unit scale, used
    # wherever one CNN would be). Training costs this many times as much. Why it is worth having, and why it is
    # not the default: BENCHMARKS.md, "Train → evaluate → regenerate", sessions 31-32
    cnn_members: int = 1
    seed: int = 0
    val_fraction: float = 0.1
    max_steps_per_epoch: int | None = 120
    device: str = "cpu"
    # lambda_sim 1 on the mean squared error: with the paper's 10 x Frobenius the similarity term
    # is most of the loss and swamps the label loss (see BENCHMARKS.md, "Train → evaluate →
    # regenerate", sessions 1 and 10)
    loss_kwargs: dict = field(default_factory=lambda: {"lambda_sim": 1.0, "sim_reduction": "mse"})
    weight_eps: float = 0.05
    weight_clip: tuple[float, float] = (0.5, 3.0)
    weight_min_count: int = 5


# Model kwargs the loop trains with unless --model-kwargs says otherwise, by model name. The
# freq_attention head reads only the patch relations, not the pooled features: a relation between
# two patches of one image does not move when the whole image is blurred or sharpened, a pooled
# feature does (the models' own defaults stay, so stored checkpoints keep loading).
LOOP_MODEL_KWARGS = {"freq_attention": {"head_pooled": False}}

# settings added after runs were stored: a stored config without them ran with these values
LEGACY_CONFIG = {"batch_scale": None, "pairing": "independent", "quality_reals": 0, "max_steps_per_epoch": None,
                 "amplify": 1.0, "amplify_until": 1.0, "precision": "fp32", "statistics_n": 0, "statistics_steps": 20000,
                 "statistics_model": "patch_stats", "statistics_twins": 0.0, "fusion": "equal",
                 "twins": 0, "twin_weight": 1.0, "twin_loss": "kl", "detail_match": 0.0,
                 "mirror": False, "statistics_extra_index": None, "statistics_extra_n": 0, "cnn_members": 1}
PAIRINGS = ("paired", "independent")
CNN_MEMBER_SEED_OFFSET = 100_000  # member k's seeds are k x this above member 0's (rounds step by 1000)
FUSIONS = ("equal", "learnt")

# settings a resumed run may change; everything else must match the stored run
RESUME_MUTABLE = {"condition", "max_rounds", "workers", "gen_workers", "device", "precision"}


def normalised_config(cfg: LoopConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def check_resume(stored: Mapping, new: Mapping, path: Path) -> None:
    for key in new:
        if key in RESUME_MUTABLE or key not in stored:
            continue
        if stored[key] != new[key]:
            raise ValueError(f"{path}: cannot resume with {key}={new[key]!r}; the run was started with "
                             f"{key}={stored[key]!r} (only {', '.join(sorted(RESUME_MUTABLE))} may change)")


def check_weight_clip(clip) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 < lo <= 1 <= hi`` as a tuple of floats; ValueError otherwise."""
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"weight_clip: expected (lo, hi), got {clip!r}") from None
    if not 0 < lo <= 1 <= hi:
        raise ValueError(f"weight_clip: expected (lo, hi) with 0 < lo <= 1 <= hi, got {clip!r}")
    return lo, hi


def check_config(cfg: LoopConfig) -> list[tuple[str, str, float]]:
    """The range checks of a run's settings (``run_loop`` and ``detector train --config`` run these);
    returns the parsed condition. ``ValueError`` naming the setting."""
    cond = parse_condition(cfg.condition)
    for key in ("max_rounds", "epochs_per_round", "regen_n"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: expected >= 1, got {getattr(cfg, key)}")
    if isinstance(cfg.cnn_members, bool) or not isinstance(cfg.cnn_members, int) or cfg.cnn_members < 1:
        raise ValueError(f"cnn_members: expected an int >= 1, got {cfg.cnn_members!r}")
    if not 0 < cfg.lr_decay <= 1:
        raise ValueError(f"lr_decay: expected lr_decay in (0, 1], got {cfg.lr_decay}")
    check_weight_clip(cfg.weight_clip)
    if cfg.pairing not in PAIRINGS:
        raise ValueError(f"pairing: expected one of {list(PAIRINGS)}, got {cfg.pairing!r}")
    # the training settings (lr, batch_size, batch_scale, amplify, precision, twins, ema, ...) are checked
    # where they are defined, by TrainSettings, before any round starts
    round_settings(cfg, 1, cfg.pairing == "paired", progress=False)
    if cfg.quality_reals < 0:
        raise ValueError(f"quality_reals: expected >= 0, got {cfg.quality_reals}")
    if cfg.statistics_n < 0 or (cfg.statistics_steps is not None and cfg.statistics_steps < 1):
        raise ValueError(f"statistics_n, statistics_steps: expected >= 0 and >= 1, got {cfg.statistics_n}, "
                         f"{cfg.statistics_steps}")
    from detector.fit_statistics import STATISTICS_FITS

    if cfg.statistics_extra_n < 0:
        raise ValueError(f"statistics_extra_n: expected >= 0, got {cfg.statistics_extra_n}")
    if cfg.statistics_extra_n and not cfg.statistics_n:
        raise ValueError("statistics_extra_n: the extra faces are for the statistics model, which statistics_n 0 turns off")
    if bool(cfg.statistics_extra_index) != bool(cfg.statistics_extra_n):
        raise ValueError("statistics_extra_index, statistics_extra_n: give both (the faces, and how many pairs to render "
                         f"from them) or neither; got {cfg.statistics_extra_index!r}, {cfg.statistics_extra_n}")
    if not 0.0 <= cfg.statistics_twins <= 1.0:
        raise ValueError(f"statistics_twins: expected a probability in [0, 1], got {cfg.statistics_twins}")
    if not isinstance(cfg.mirror, bool):
        raise ValueError(f"mirror: expected true or false, got {cfg.mirror!r}")
    if cfg.fusion not in FUSIONS:
        raise ValueError(f"fusion: expected one of {list(FUSIONS)}, got {cfg.fusion!r}")
    if cfg.statistics_model not in STATISTICS_FITS:
        raise ValueError(f"statistics_model: expected one of {list(STATISTICS_FITS)}, got {cfg.statistics_model!r}")
    if cfg.index and cfg.src:
        raise ValueError(f"index, src: give one face source for regeneration, not both ({cfg.index!r}, {cfg.src!r})")
    return cond


def member_seed(cfg: LoopConfig, member: int, r: int = 0) -> int:
    """Seed of CNN ``member`` (0-based) in round ``r`` (0: its initial weights): apart for every member and round;
    member 0's is the seed a run with one CNN has always used."""
    return cfg.seed + 1000 * r + CNN_MEMBER_SEED_OFFSET * member


def round_settings(cfg: LoopConfig, r: int, paired: bool, progress: bool, member: int = 0) -> TrainSettings:
    """Round ``r``'s :class:`detector.train.TrainSettings` for CNN ``member``: the peak rate decays by ``lr_decay``
    per round, each round and member draws from its own seed, and quality twins need paired batches (off without them)."""
    from detector.train import TrainSettings

    return TrainSettings(epochs=cfg.epochs_per_round, lr=cfg.lr * cfg.lr_decay ** (r - 1), batch_size=cfg.batch_size,
                         workers=cfg.workers, device=cfg.device, seed=member_seed(cfg, member, r), progress=progress,
                         max_steps_per_epoch=cfg.max_steps_per_epoch, best_name="checkpoint.pt", ema=cfg.ema,
                         batch_scale=cfg.batch_scale, paired=paired, amplify=cfg.amplify,
                         amplify_until=cfg.amplify_until, precision=cfg.precision,
                         twins=cfg.twins if paired else 0, twin_weight=cfg.twin_weight,
                         twin_loss=cfg.twin_loss, detail_match=cfg.detail_match if paired else 0.0)
