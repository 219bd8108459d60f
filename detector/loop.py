"""The augment-until loop: train ► validate ► evaluate ► stop? ► reweight recipe ► generate more.

Before round 1 (``statistics_n`` > 0): fit the statistics model (``statistics_model``) on fresh (real, fake) pairs
rendered in memory, validation identities left out (``RUN/statistics``).

Round r (directory ``RUN/round-XX``):

1. train ``epochs_per_round`` epochs on the current pool (identity-disjoint train/val split of all
   pool directories; the best epoch is picked by validation AUC, never by the evaluation set);
   with the statistics model, the round's detector is the score fusion of both, scaled on the
   validation split;
2. evaluate the round's detector on the evaluation set (overall, per generator);
3. append to ``RUN/metrics.jsonl``; write ``checkpoint.pt``, ``roc.png``, ``loss.png``,
   ``weights.json``, ``eval_scores.csv``;
4. stop when the condition holds; otherwise measure, per plan choice key, how many validation
   fakes the model misses, turn that into recipe weights and generate ``regen_n`` new samples
   into ``RUN/pool/round-(r+1)`` (``synth.generate.generate``, seed = base seed + round),
   add them to the pool and continue from the current weights.

``RUN/state.json`` (written atomically after every step) lets ``resume=True`` pick up an
interrupted run: completed rounds are kept, an interrupted round resumes from its ``last.pt``,
an interrupted generation resumes (generate is itself resumable). The run stores its paths absolute,
so it resumes from any working directory, and follows its own folder when that is moved
(:func:`rebased_state`).

The reweighting formula is :func:`detector.reweight.miss_rate_weights` (recorded in every ``weights.json``).
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from detector.condition import condition_holds, format_condition
from detector.data import FaceDataset
from detector.readers import (
    Sample,
    group_identities,
    identity_split,
    pair_indices,
    read_dataset,
    read_datasets,
    split_by_identities,
)
from detector.reweight import miss_rate_weights
from detector.settings import (
    LOOP_MODEL_KWARGS,
    RESUME_MUTABLE,
    LoopConfig,
    check_config,
    check_resume,
    member_seed,
    normalised_config,
    round_settings,
)
from synth.io import write_json_atomic

STATE = "state.json"
METRICS_LOG = "metrics.jsonl"
STATISTICS_DIR = "statistics"  # RUN/statistics: <statistics_model>.pt, report.json (and index/ when faces come from --src)
STATISTICS_SEED_OFFSET = 1_000_000  # the statistics pool's seed: run seed + this, apart from every round's seed


# the settings that name a file or folder (besides data_dirs, a list, and out_dir, the run itself)
_PATH_SETTINGS = ("eval_dir", "src", "index", "statistics_extra_index")


def _absolute(path: str | None, base: Path) -> str | None:
    """``path`` made absolute from ``base`` when relative (None stays None); not resolved through symlinks."""
    return None if path is None else os.path.normpath(os.path.join(base, path))


def _run_origin(stored_out: str, out: Path) -> Path:
    """The directory a run was started from, for the relative paths it stored (runs made before paths were
    stored absolute): ``out`` without the stored relative ``--out`` when it ends with it, else the current one."""
    parts = Path(os.path.normpath(stored_out)).parts
    if not Path(stored_out).is_absolute() and ".." not in parts and out.parts[-len(parts):] == parts:
        return Path(*out.parts[:-len(parts)])
    return Path.cwd()


def rebased_state(state: Mapping, out_dir: str | os.PathLike) -> dict:
    """A copy of a run's ``state.json`` contents with its paths as seen from here.

    Relative paths (stored by runs made before paths were stored absolute) are taken from the
    directory the run was started from; paths inside the run's folder as stored (``config.out_dir``)
    are moved to ``out_dir``, where the run is now. Its ``config.out_dir`` becomes ``out_dir``, absolute.
    """
    state = json.loads(json.dumps(state))
    cfg = state["config"]
    out = Path(os.path.abspath(out_dir))
    origin = _run_origin(cfg["out_dir"], out)
    stored_run = Path(_absolute(cfg["out_dir"], origin))

    def here(path):
        if path is None:
            return None
        p = Path(_absolute(path, origin))
        return str(out / p.relative_to(stored_run)) if p.is_relative_to(stored_run) else str(p)

    cfg["data_dirs"] = [here(d) for d in cfg["data_dirs"]]
    cfg.update({k: here(cfg[k]) for k in _PATH_SETTINGS if k in cfg})
    cfg["out_dir"] = str(out)
    state["pool"] = [here(d) for d in state["pool"]]
    for record in state["rounds"]:
        record["pool"] = [here(d) for d in record.get("pool", [])]
        if "checkpoint" in record:
            record["checkpoint"] = here(record["checkpoint"])
    if state.get("pending_regen"):
        state["pending_regen"]["dir"] = here(state["pending_regen"]["dir"])
    return state


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``RUN/metrics.jsonl``, one per finished round, in order.

    Raises
    ------
    ValueError
        The file is missing (naming it: ``run_dir`` is not a ``detector train`` run directory).
    """
    path = Path(run_dir) / METRICS_LOG
    if not path.is_file():
        raise ValueError(f"{path}: not found; expected a `detector train` run directory")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _regen_source(cfg: LoopConfig, pool: Sequence[str]) -> dict:
    """Face source for regeneration: --index, else --src (reusing an index the statistics step or a
    previous round built), else the index recorded in a data directory's run.json."""
    if cfg.index:
        return {"index": cfg.index}
    if cfg.src:
        for d in [str(Path(cfg.out_dir) / STATISTICS_DIR)] + list(pool[len(cfg.data_dirs):]):
            if (Path(d) / "index").is_dir():
                return {"index": str(Path(d) / "index")}
        return {"src": cfg.src}
    for d in cfg.data_dirs:
        run = Path(d) / "run.json"
        if run.is_file():
            idx = json.loads(run.read_text()).get("index")
            if idx:
                p = Path(idx) if Path(idx).is_absolute() else Path(d) / idx
                return {"index": str(p)}
    raise ValueError("regeneration and the statistics model need faces: pass --index PATH or --src DIR (none found "
                     f"in the data directories' run.json: {', '.join(cfg.data_dirs)}); without them, only "
                     "--max-rounds 1 --statistics-n 0 runs")


def _regen_size(cfg: LoopConfig) -> int:
    if cfg.regen_size:
        return cfg.regen_size
    for d in cfg.data_dirs:
        run = Path(d) / "run.json"
        if run.is_file() and json.loads(run.read_text()).get("size"):
            return int(json.loads(run.read_text())["size"])
    return 256


def _default_generate(**kwargs):
    from synth.generate import generate

    return generate(**kwargs)


# ------------------------------------------------------------------------------------ reporting

def _fmt(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def rounds_table(rounds: Sequence[Mapping]) -> str:
    """Markdown table of completed rounds (eval metrics overall and per generator)."""
    gens = sorted({g for r in rounds for g in (r["eval"].get("per_generator") or {})})
    fused = any(r.get("val_fused") for r in rounds)  # the rounds' detectors are fusions with the statistics model
    head = ["round", "pool", "train", "val", "best epoch", "val AUC"] + (["fused val AUC"] if fused else []) + \
           ["eval AUC", "eval AP", "eval EER"] + [f"{g} AUC" for g in gens] + ["condition", "wall s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rounds:
        per = r["eval"].get("per_generator") or {}
        # several CNN members: each one's best epoch
        epochs = "/".join(str(m["best_epoch"] + 1) for m in r.get("cnn_members") or [r])
        cells = [str(r["round"]), str(len(r["pool"])), str(r["n_train"]), str(r["n_val"]), epochs,
                 _fmt(r["val"].get("auc"))] + ([_fmt((r.get("val_fused") or {}).get("auc"))] if fused else []) + \
                [_fmt(r["eval"].get("auc")), _fmt(r["eval"].get("ap")), _fmt(r["eval"].get("eer"))] + \
                [_fmt(per.get(g, {}).get("auc")) for g in gens] + \
                ["met" if r["condition_met"] else "not met", f"{r['wall_s']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _write_eval_scores(path: Path, samples: Sequence[Sample], scores: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "generator", "score"])
        for s, sc in zip(samples, scores):
            w.writerow([s.path, s.label, s.meta.get("generator", ""), "" if not np.isfinite(sc) else f"{sc:.6f}"])


# ------------------------------------------------------------------------------ statistics model

def _statistics_faces(cfg: LoopConfig, state: Mapping, faces, progress: bool):
    """The face source as a pool without the run's validation identities (no face of the
    statistics model's training may show up in the validation the fusion is calibrated on)."""
    from synth.index import build_index, load_index
    from synth.pool import as_pool

    if faces is None:
        source = _regen_source(cfg, state["pool"])
        if "src" in source:  # index it once; regeneration reuses it (_regen_source)
            build_index(source["src"], Path(cfg.out_dir) / STATISTICS_DIR / "index", workers=cfg.gen_workers,
                        progress=progress)
            source = {"index": str(Path(cfg.out_dir) / STATISTICS_DIR / "index")}
        faces = load_index(source["index"])
    return _without_identities(as_pool(faces), set(state["val_identities"]), "the face source")


def _without_identities(pool, identities: set, what: str):
    from synth.pool import FacePool

    keep = [k for k, key in enumerate(pool.keys) if key not in identities]
    if not keep:
        raise ValueError(f"statistics: every face of {what} is a validation identity of the run")
    return FacePool(keys=[pool.keys[k] for k in keep], landmarks=pool.landmarks[keep], loader=pool.loader,
                    root=pool.root)


def _statistics_extra(cfg: LoopConfig, state: Mapping) -> list:
    """``[(pool, statistics_extra_n)]`` from ``statistics_extra_index`` (validation identities left out), or []."""
    from synth.index import load_index
    from synth.pool import as_pool

    if not cfg.statistics_extra_n:
        return []
    pool = _without_identities(as_pool(load_index(cfg.statistics_extra_index)), set(state["val_identities"]),
                               f"statistics_extra_index {cfg.statistics_extra_index}")
    return [(pool, cfg.statistics_extra_n)]


def _statistics_model(cfg: LoopConfig, state: Mapping, say: Callable[[str], None], progress: bool, faces=None):
    """The run's statistics model, ``RUN/statistics/<statistics_model>.pt``, fitted on first call."""
    from detector.checkpoint import load_checkpoint, save_checkpoint
    from detector.fit_statistics import fit_statistics_online

    path = Path(cfg.out_dir) / STATISTICS_DIR / f"{cfg.statistics_model}.pt"
    if path.is_file():
        return load_checkpoint(path)[0].eval()
    pool = _statistics_faces(cfg, state, faces, progress)
    extra = _statistics_extra(cfg, state)
    seed = cfg.seed + STATISTICS_SEED_OFFSET
    also = "".join(f", and {n} from {len(p)} faces of {cfg.statistics_extra_index}" for p, n in extra)
    say(f"statistics model ({cfg.statistics_model}): rendering {cfg.statistics_n} (real, fake) pairs in memory from "
        f"{len(pool)} faces{also} (recipe {cfg.recipe}, seed {seed}; validation identities left out) and fitting it")
    model, report = fit_statistics_online(pool, cfg.statistics_n, model=cfg.statistics_model, recipe=cfg.recipe,
                                          size=_regen_size(cfg), seed=seed, steps=cfg.statistics_steps,
                                          twins=cfg.statistics_twins, workers=cfg.gen_workers, progress=progress,
                                          extra=extra)
    report = {**report, "n_faces_source": len(pool), "seed": seed,
              "n_faces_extra": [len(p) for p, _ in extra], "extra_index": cfg.statistics_extra_index}
    save_checkpoint(path, model, extra={"statistics": report})  # creates RUN/statistics
    write_json_atomic(path.parent / "report.json", report)
    say(f"statistics model: {report['n_faces']} faces ({report['n_skipped']} pairs skipped: no usable fake) in "
        f"{report['features_s']:.0f} s, fitted in {report['steps']} steps, {report['fit_s']:.0f} s (loss {report['fit_loss_first']:.3f} -> "
        f"{report['fit_loss_last']:.3f})")
    return model


def _fuse_round(cnn, stats, val: Sequence[Sample], cnn_val_scores, cfg: LoopConfig,
                score_side: int | None = None) -> tuple[object, dict]:
    """The round's detector: the fusion of ``cnn`` and ``stats``, its scale set on the validation
    split (no label used) and, with ``fusion: learnt``, its member weights fitted there (labels
    used; the validation AUC of the fusion is then in-sample for two weights), and validation AUCs
    of the statistics model and the fusion (with ``mirror``, of the fusion as it scores: both views
    of each face, ``score_side`` as the CNN's validation was scored)."""
    import torch

    from detector.fit_statistics import (
        extract_statistics,
        fuse_members,
        fused_as_scored,
        set_fusion_scale,
        set_fusion_weights,
        to_logits,
    )
    from detector.metrics import binary_metrics
    from detector.train import resolve_workers

    workers = resolve_workers(cfg.workers, cfg.device)
    features = extract_statistics(stats, val, workers=workers)
    with torch.no_grad():
        stats_logits = stats.classify(torch.from_numpy(features)).double().numpy()
    fusion = fuse_members(cnn, stats, mirror=cfg.mirror)
    members = np.stack([to_logits(np.asarray(cnn_val_scores)), stats_logits], 1)
    labels = np.array([s.label for s in val])
    set_fusion_scale(fusion, members)
    if cfg.fusion == "learnt":
        set_fusion_weights(fusion, members, labels)
    fused = fused_as_scored(fusion, val, members, full_size=score_side, workers=workers, device=cfg.device)

    def auc(scores):
        ok = np.isfinite(scores)
        return float(binary_metrics(labels[ok], scores[ok])["auc"]) if len(np.unique(labels[ok])) == 2 else math.nan

    return fusion, {"statistics_auc": auc(stats_logits), "auc": auc(fused),
                    "fusion_weights": [round(float(w), 4) for w in fusion.logit_weight]}


def _member_dir(rdir: Path, k: int) -> Path:
    """Where CNN member ``k`` of a round trains: the round's folder for the first (as with one CNN), ``cnn-K`` below it
    for the others (each with its own best checkpoint, ``last.pt`` and training log)."""
    return rdir if k == 0 else rdir / f"cnn-{k + 1}"


def _cnn_ensemble(cnns: Sequence, results: Sequence[Mapping], val: Sequence[Sample]) -> tuple[object, dict]:
    """The mean of the CNNs' logits as one model (a ``score_fusion`` with unit scale and equal weights, copies of their
    weights), and its validation result in ``train_round``'s form: scores and metrics of the mean logit on ``val``."""
    from detector.fit_statistics import to_logits
    from detector.models.fusion import fusion_of
    from detector.train import sample_metrics

    ensemble = fusion_of(cnns)
    logits = np.mean([to_logits(np.asarray(x["val_scores"], dtype=np.float64)) for x in results], 0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    metrics = sample_metrics(val, scores)
    return ensemble, {"best_epoch": results[0]["best_epoch"], "best_val_auc": metrics.get("auc"),
                      "val_metrics": metrics, "val_scores": scores}


# ------------------------------------------------------------------------------------ the loop

class _Logger:
    def __init__(self, path: Path, log: Callable[[str], None]):
        self.path, self.log = path, log

    def __call__(self, msg: str) -> None:
        self.log(msg)
        with self.path.open("a") as fh:
            fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")


def run_loop(data_dirs: Sequence[str | os.PathLike], eval_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
             resume: bool = False, generate_fn: Callable | None = None, log: Callable[[str], None] = print,
             progress: bool = True, sources: Mapping[str, str] | None = None, statistics_faces=None,
             **settings) -> dict:
    """Run (or resume) the augment-until loop; see the module docstring.

    ``settings`` are the :class:`LoopConfig` fields (model_name, model_kwargs, condition,
    max_rounds, regen_n, epochs_per_round, recipe, src, index, mode, patch, ...).
    ``generate_fn(out=, n=, recipe=, index= | src=, size=, seed=, workers=, weights=, progress=)``
    defaults to ``synth.generate.generate``. ``sources`` (setting -> where its value came from, e.g.
    a config file or an option) annotates ``RUN/config.yaml`` (:func:`detector.config.write_run_config`).
    ``statistics_faces`` (a ``synth.pool.FacePool`` or ``synth.index.Index``) replaces the face source
    of the statistics model's pairs (default: the regeneration source).

    Returns ``{"status": "condition_met" | "max_rounds", "condition_met": bool, "rounds": [...],
    "table": markdown, "out_dir": str}``. Bad settings or a conflicting resume -> ValueError.
    """
    known = {f.name for f in fields(LoopConfig)}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"run_loop: unknown setting(s) {sorted(unknown)}")
    # paths are stored absolute: the run resumes from any working directory (rebased_state)
    here = Path.cwd()
    out = Path(os.path.abspath(out_dir))
    settings = {k: _absolute(v, here) if k in _PATH_SETTINGS and isinstance(v, (str, os.PathLike)) else v
                for k, v in settings.items()}
    cfg = LoopConfig(data_dirs=[_absolute(str(d), here) for d in data_dirs], eval_dir=_absolute(str(eval_dir), here),
                     out_dir=str(out), **settings)
    cond = check_config(cfg)
    generate_fn = generate_fn or _default_generate
    state_path = out / STATE
    new_cfg = normalised_config(cfg)
    if resume:
        if not state_path.is_file():
            raise ValueError(f"{state_path}: nothing to resume (no state.json)")
        state = rebased_state(json.loads(state_path.read_text()), out)
        check_resume(state["config"], new_cfg, state_path)
        state["config"].update({k: new_cfg[k] for k in RESUME_MUTABLE})
        state.setdefault("config_sources", {k: "the stored run" for k in state["config"]}).update(
            {k: v for k, v in (sources or {}).items() if k in RESUME_MUTABLE or k not in state["config"]})
    else:
        if state_path.exists():
            raise ValueError(f"{out}: already holds a run (state.json); pass --resume or choose another --out")
        if not cfg.data_dirs:
            raise ValueError("data_dirs: need at least one training data directory")
        state = {"config": new_cfg, "config_sources": dict(sources or {}), "pool": list(cfg.data_dirs),
                 "rounds": [], "val_identities": None, "pending_regen": None, "status": "running"}
    say = _Logger(out / "loop.log", log)

    def save_state():
        write_json_atomic(state_path, state)

    last_met = state["rounds"] and condition_holds(cond, state["rounds"][-1]["eval"])
    if cfg.max_rounds > len(state["rounds"]) and (state["status"] == "max_rounds" or
                                                  (state["status"] == "condition_met" and not last_met)):
        # a finished run resumed with a larger --max-rounds, or with a condition its last round does not
        # meet: regenerate from the last round's weights
        last = state["rounds"][-1]
        state["status"] = "running"
        state["pending_regen"] = {"dir": str(out / "pool" / f"round-{last['round'] + 1:02d}"),
                                  "seed": cfg.seed + last["round"] + 1, "weights": last["weights"]}
    if state["status"] != "running":
        say(f"run already finished ({state['status']}) after {len(state['rounds'])} round(s)")
        return _summary(state, out)
    for d in state["pool"] + [cfg.eval_dir]:
        if not Path(d).exists():
            raise ValueError(f"{d}: dataset path does not exist")
    if cfg.max_rounds > 1 or (cfg.statistics_n and statistics_faces is None):
        _regen_source(cfg, state["pool"])  # fail early, before any training, when no face source exists
    if cfg.statistics_n and cfg.statistics_extra_n:
        from synth.index import load_index

        load_index(cfg.statistics_extra_index)  # likewise: a bad path is refused before any work
    if cfg.pairing == "paired" and not state["rounds"] and not len(pair_indices(read_datasets(state["pool"]))):
        # before state.json exists, so the same --out can be used again with --pairing independent
        raise ValueError(f"{', '.join(state['pool'])}: paired batches need synth fakes next to their own reals "
                         "(a `synth generate` output); this data has no (real, fake) pair: use "
                         "`--pairing independent`")
    out.mkdir(parents=True, exist_ok=True)  # only now: a run refused above leaves no folder behind
    save_state()
    from detector.config import write_run_config

    write_run_config(out, new_cfg, state["config_sources"])  # RUN/config.yaml: the resolved settings

    from detector.checkpoint import load_checkpoint, save_checkpoint
    from detector.losses import DetectorLoss
    from detector.models import create_model
    from detector.plots import plot_losses, plot_roc, plot_rounds, roc_curves
    from detector.train import evaluate, resolve_workers, train_round

    if state["rounds"]:
        model, _ = load_checkpoint(Path(state["rounds"][-1]["checkpoint"]), map_location=cfg.device)
        if cfg.statistics_n:  # the round's checkpoint is the fusion; training continues on its CNN
            model = model.members[0]
        cnns = list(model.members) if cfg.cnn_members > 1 else [model]  # several: their mean-logit score_fusion
        for m in cnns:
            m.train()
        say(f"resuming after round {len(state['rounds'])} from {state['rounds'][-1]['checkpoint']}")
    else:
        import torch

        cnns = []
        for k in range(cfg.cnn_members):
            with torch.random.fork_rng():  # each member's initial weights from the run's seed and its index alone
                torch.manual_seed(member_seed(cfg, k))
                cnns.append(create_model(cfg.model_name,
                                         **{**LOOP_MODEL_KWARGS.get(cfg.model_name, {}), **cfg.model_kwargs}))
    model = cnns[0]
    loss_fn = DetectorLoss(**cfg.loss_kwargs)
    eval_samples = read_dataset(cfg.eval_dir)
    # score faces at the side the model trains at (mode full/resize), so a pool generated at another
    # --size than the evaluation set's images still sees faces at one scale; patches: native whole faces
    score_side = None if cfg.mode == "patch" else cfg.size
    score_workers = resolve_workers(cfg.workers, cfg.device)
    eval_ds = FaceDataset(eval_samples, mode="full", norm=model.input_norm, full_size=score_side)
    say(f"condition: {format_condition(cond)}; eval set {cfg.eval_dir}: {len(eval_samples)} images")
    pool_side = _regen_size(cfg)
    if cfg.mode == "full" and cfg.size != pool_side:
        # legitimate (one scale everywhere), but resampling changes the high frequencies the traces live in
        say(f"note: mode full with size {cfg.size} but the pool's faces are {pool_side} px: every face "
            f"(training, validation, evaluation) is resized to {cfg.size}; pass --size {pool_side} to "
            "train at the pool's native resolution")

    def regenerate():
        pend = state["pending_regen"]
        say(f"generating {cfg.regen_n} samples into {pend['dir']} (seed {pend['seed']}, weights {pend['weights']})")
        generate_fn(out=pend["dir"], n=cfg.regen_n, recipe=cfg.recipe, size=_regen_size(cfg), seed=pend["seed"],
                    workers=cfg.gen_workers, weights=pend["weights"] or None, progress=progress,
                    **_regen_source(cfg, state["pool"]))
        state["pool"].append(pend["dir"])
        state["pending_regen"] = None
        save_state()

    if state["pending_regen"]:
        regenerate()
    stats = None

    while len(state["rounds"]) < cfg.max_rounds:
        r = len(state["rounds"]) + 1
        t0 = time.time()
        rdir = out / f"round-{r:02d}"
        pool = read_datasets(state["pool"])
        if state["val_identities"] is None:
            train, val = identity_split(pool, cfg.val_fraction, cfg.seed)
            state["val_identities"] = sorted(group_identities(val))
            dropped = len(pool) - len(train) - len(val)
            save_state()
        else:
            train, val, dropped = split_by_identities(pool, set(state["val_identities"]))
        say(f"round {r}/{cfg.max_rounds}: pool {len(pool)} images from {len(state['pool'])} dir(s); "
            f"train {len(train)}, val {len(val)}, dropped {dropped} (identity overlap)")
        if cfg.statistics_n and stats is None:
            stats = _statistics_model(cfg, state, say, progress, statistics_faces)
        paired = cfg.pairing == "paired"
        val_ds = FaceDataset(val, "full", norm=cnns[0].input_norm, full_size=score_side)
        results = []
        for k, cnn in enumerate(cnns):
            train_ds = FaceDataset(train, cfg.mode, patch=cfg.patch, size=cfg.size, augment=True, norm=cnn.input_norm,
                                   full_size=cfg.size if cfg.mode == "full" else None,
                                   seed=member_seed(cfg, k, r), paired_augment=paired)
            tell = say if len(cnns) == 1 else (lambda m, k=k: say(f"CNN {k + 1}/{len(cnns)}: {m}"))
            results.append(train_round(cnn, train_ds, val_ds, _member_dir(rdir, k),
                                       round_settings(cfg, r, paired, progress, member=k), loss_fn=loss_fn, log=tell,
                                       extra={"round": r, **({"member": k} if k else {})}))
        model, res = (cnns[0], results[0]) if len(cnns) == 1 else _cnn_ensemble(cnns, results, val)
        if len(cnns) > 1:
            say(f"round {r}: the mean of {len(cnns)} CNNs: val AUC {_fmt(res['best_val_auc'])} (members " +
                ", ".join(_fmt(x["best_val_auc"]) for x in results) + ")")
        detector, val_fused = model, None
        if stats is not None:
            detector, val_fused = _fuse_round(model, stats, val, res["val_scores"], cfg, score_side)
            say(f"round {r}: fused with the statistics model: val AUC {_fmt(val_fused['auc'])} (CNN "
                f"{_fmt(res['best_val_auc'])}, statistics {_fmt(val_fused['statistics_auc'])})")
        quality = None
        val_reals = [s for s in val if s.label == 0][:cfg.quality_reals]
        if val_reals:
            from detector.quality import quality_check

            quality = quality_check(detector, val_reals, full_size=score_side,
                                    workers=score_workers, device=cfg.device)
            say(f"round {r}: global-quality check on {quality['n']} validation reals (AUC processed vs as is, "
                "0.5 = blind): " + ", ".join(f"{k} {_fmt(v)}" for k, v in quality["auc"].items()))
        eval_metrics, eval_scores = evaluate(detector, eval_ds, 16, score_workers, cfg.device, progress, "evaluate")
        met = condition_holds(cond, eval_metrics)
        if eval_metrics["n_skipped"]:
            say(f"round {r}: warning: {eval_metrics['n_skipped']} unreadable evaluation image(s) left out")
        epochs = "/".join(str(x["best_epoch"] + 1) for x in results)  # several CNNs: each one's, as rounds_table
        say(f"round {r}: best epoch{'s' if len(results) > 1 else ''} {epochs} (val AUC {_fmt(res['best_val_auc'])}); "
            f"eval AUC {_fmt(eval_metrics.get('auc'))}" +
            "".join(f", {g} {_fmt(m.get('auc'))}" for g, m in (eval_metrics.get("per_generator") or {}).items()) +
            f"; condition {'met' if met else 'not met'}")

        # the CNN's misses steer regeneration: the regenerated fakes train the CNN, not the statistics model
        val_fake = [(s, sc) for s, sc in zip(val, res["val_scores"] if res["val_scores"] is not None else [])
                    if s.label == 1]
        weights = miss_rate_weights([s.meta.get("keys", []) for s, _ in val_fake], [sc for _, sc in val_fake],
                                    float(res["val_metrics"].get("eer_threshold", math.nan)), cfg.weight_eps,
                                    tuple(cfg.weight_clip), cfg.weight_min_count)
        weights["round"] = r
        write_json_atomic(rdir / "weights.json", weights)
        say(f"round {r}: val miss rate {_fmt(weights['overall_miss'])} at threshold {_fmt(weights['threshold'])}; "
            "weights " + ", ".join(f"{k}={v['weight']:.2f} (miss {v['miss']:.2f}, n {v['n']})"
                                   for k, v in weights["keys"].items()))

        save_checkpoint(rdir / "checkpoint.pt", detector,
                        extra={"round": r, "epoch": res["best_epoch"], "val": res["val_metrics"], "val_fused": val_fused,
                               "eval": eval_metrics, "mode": cfg.mode, "patch": cfg.patch, "size": score_side})
        _write_eval_scores(rdir / "eval_scores.csv", eval_samples, eval_scores)
        plot_roc(roc_curves(eval_samples, eval_scores, eval_metrics.get("per_generator") or {}), rdir / "roc.png",
                 title=f"round {r}: evaluation ROC")
        for k in range(len(cnns)):
            plot_losses(_member_dir(rdir, k) / "train_log.jsonl", _member_dir(rdir, k) / "loss.png",
                        title=f"round {r}: training" + (f", CNN {k + 1}" if len(cnns) > 1 else ""))

        record = {"round": r, "pool": list(state["pool"]), "n_train": len(train), "n_val": len(val),
                  "n_dropped": dropped, "best_epoch": res["best_epoch"], "val": res["val_metrics"],
                  **({"cnn_members": [{"best_epoch": x["best_epoch"], "val_auc": x["best_val_auc"]} for x in results]}
                     if len(cnns) > 1 else {}),
                  "val_fused": val_fused, "val_quality": quality,
                  "eval": eval_metrics, "condition": format_condition(cond), "condition_met": met,
                  "weights": weights["weights"], "checkpoint": str(rdir / "checkpoint.pt"),
                  "precision": results[0]["precision"], "wall_s": round(time.time() - t0, 1)}
        with (out / METRICS_LOG).open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        for k in range(len(cnns)):  # the round is complete; its resume states are no longer needed
            (_member_dir(rdir, k) / "last.pt").unlink(missing_ok=True)
        state["rounds"].append(record)
        if met:
            state["status"] = "condition_met"
        elif r >= cfg.max_rounds:
            state["status"] = "max_rounds"
        else:
            state["pending_regen"] = {"dir": str(out / "pool" / f"round-{r + 1:02d}"), "seed": cfg.seed + r + 1,
                                      "weights": weights["weights"]}
        save_state()
        plot_rounds(state["rounds"], out / "rounds.png")
        if state["status"] != "running":
            break
        regenerate()
    summary = _summary(state, out)
    say(("condition met" if summary["condition_met"] else f"condition not met after {len(state['rounds'])} round(s)")
        + f" ({format_condition(cond)})\n" + summary["table"])
    return summary


def _summary(state: Mapping, out: Path) -> dict:
    table = rounds_table(state["rounds"])
    (out / "summary.md").write_text(f"# augment-until run {out}\n\nstatus: {state['status']}; condition: "
                                    f"{state['config']['condition']}\n\n{table}\n")
    return {"status": state["status"], "condition_met": state["status"] == "condition_met",
            "rounds": list(state["rounds"]), "table": table, "out_dir": str(out)}
