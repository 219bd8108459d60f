"""``detector`` command line: ``train`` (augment-until loop), ``eval``, ``predict``, ``fuse``.

Every command's options, output (eval's metrics and JSON, predict's table or JSON) and exit code
live here; the work is done by the library (:func:`detector.loop.run_loop`,
:func:`detector.train.evaluate`, :class:`detector.predict.Predictor`,
:func:`detector.fit_statistics.fuse_with_statistics`).

Exit codes: 0 ok / condition met; 1 ``train`` stopped at --max-rounds without meeting the
condition (``predict``: a fake was found); 2 usage or input error (message names the file/key);
130 interrupted (``train``: rerun with --resume).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from detector.checks import (
    CROP_SCALE_RANGE,
    check_batch_size,
    check_crop_scale,
    check_device,
    check_fraction,
    check_frames,
    check_size,
)
from detector.video import VIDEO_EXTS
from synth.exit_codes import EXIT_INTERRUPTED, EXIT_NOT_MET, EXIT_OK, EXIT_USAGE
from synth.io import IMAGE_EXTENSIONS, read_image
from synth.log import add_verbosity_arguments, cli_logging, verbosity

PREDICT_DESCRIPTION = "Score images and videos with a trained detector (``detector predict``)."

# train option -> LoopConfig field (options default to None: given ones override the --config file's
# and a resumed run's). --data, --eval, --model-kwargs, --loss-kwargs and --backbone are handled apart;
# every other LoopConfig field gets an option of its own name (_generic_options).
_TRAIN_OPTIONS = {
    "eval": "eval_dir", "model": "model_name", "augment_until": "condition", "max_rounds": "max_rounds",
    "regen_n": "regen_n", "epochs_per_round": "epochs_per_round", "recipe": "recipe", "index": "index", "src": "src",
    "regen_size": "regen_size", "mode": "mode", "patch": "patch", "size": "size", "batch_size": "batch_size",
    "workers": "workers", "gen_workers": "gen_workers", "lr": "lr", "lr_decay": "lr_decay", "ema": "ema",
    "batch_scale": "batch_scale", "weight_clip": "weight_clip", "seed": "seed", "val_fraction": "val_fraction",
    "max_steps_per_epoch": "max_steps_per_epoch", "device": "device", "pairing": "pairing",
    "quality_reals": "quality_reals",
}
_SPECIAL_FIELDS = {"data_dirs", "model_kwargs", "loss_kwargs", "out_dir"}


def _generic_options() -> list[str]:
    """LoopConfig fields without a hand-written option (e.g. amplify, weight_eps): --NAME each."""
    from detector.settings import LoopConfig

    covered = set(_TRAIN_OPTIONS.values()) | _SPECIAL_FIELDS
    return [f.name for f in dataclasses.fields(LoopConfig) if f.name not in covered]


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _scale_range(text: str) -> list[float]:
    from detector.train import check_batch_scale

    try:
        return list(check_batch_scale(text.split(",")))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 < LO <= HI <= 1, got {text!r}") from e


def workers_option(text: str) -> int | str:
    """``--workers``: "auto" or an int >= 0, as :func:`detector.train.resolve_workers` accepts."""
    from detector.train import resolve_workers

    try:
        value = text if text == "auto" else int(text)
        resolve_workers(value, "cpu")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an int >= 0, got {text!r}") from None
    return value


_WORKERS_HELP = "data loader processes (default auto: none on a CPU, where they would compete with the model, 2 on a GPU)"


def _weight_clip(text: str) -> list[float]:
    from detector.settings import check_weight_clip

    try:
        return list(check_weight_clip(text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 < LO <= 1 <= HI, got {text!r}") from None


def _setting_type(name: str):
    """argparse type of the generic option of LoopConfig field ``name`` (detector.config.parse_option)."""
    def parse(text: str):
        from detector.config import parse_option

        try:
            return parse_option(name, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", metavar="DIR",
                   help="training data: `synth generate` output, manifest.csv dir or real/+fake/ folders (repeatable)")
    p.add_argument("--eval", metavar="DIR", help="evaluation set (never trained or tuned on)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    p.add_argument("--config", metavar="YAML", help="training settings from a YAML file: LoopConfig field names as "
                   "keys (examples/train.yaml lists all); options given here override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (only --out is needed; "
                   "--config and options may change only what a resumed run may change)")
    p.add_argument("--model", help="model name (default freq_attention)")
    p.add_argument("--backbone", help="backbone (plainnet, plainnet_wide or a timm name), added to the model kwargs")
    p.add_argument("--model-kwargs", type=_json_dict, metavar="JSON", help='extra model kwargs, e.g. \'{"alpha": 0.33}\'; '
                   'freq_attention trains with {"head_pooled": false} unless given here')
    p.add_argument("--loss-kwargs", type=_json_dict, metavar="JSON", help="DetectorLoss kwargs, e.g. '{\"lambda_sim\": 1}'")
    p.add_argument("--augment-until", metavar="COND", help='stop condition on the eval metrics (default "auc>0.8")')
    p.add_argument("--max-rounds", type=int, help="rounds before giving up (default 3)")
    p.add_argument("--regen-n", type=int, help="samples generated per new round (default 2000)")
    p.add_argument("--epochs-per-round", type=int, help="epochs per round (default 3)")
    p.add_argument("--recipe", help="synth recipe for regeneration (default mixed)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--index", metavar="PATH", help="synth index of the faces to regenerate from")
    src.add_argument("--src", metavar="DIR", help="face images to regenerate from (indexed once)")
    p.add_argument("--regen-size", type=int, help="synth output size (default: as the --data run, else 256)")
    p.add_argument("--mode", choices=("full", "patch", "resize"),
                   help="training input: full: whole faces at native resolution (default); patch: native-resolution "
                        "crops; resize: whole face resized to --size")
    p.add_argument("--patch", type=int, help="patch side in px (mode patch, default 128)")
    p.add_argument("--size", type=int, help="training side in px: mode resize resizes every face to it, mode full only "
                                            "faces of another size (default 256)")
    p.add_argument("--batch-size", type=int, help="default 16")
    p.add_argument("--workers", type=workers_option, help=_WORKERS_HELP)
    p.add_argument("--gen-workers", type=int, help="generation processes (default 2)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--lr-decay", type=float, help="round r's cosine schedule peaks at lr * lr_decay^(r-1) (default 0.5; "
                                                  "1: every round restarts at --lr)")
    p.add_argument("--ema", type=float, help="keep an exponential moving average of the weights with this "
                                             "per-step decay, e.g. 0.99 (default 0: off)")
    p.add_argument("--batch-scale", type=_scale_range, metavar="LO,HI",
                   help="multi-scale training: each batch is downscaled to a side (multiple of 32) drawn from "
                        "[LO, HI] x its side (default 0.5,1; 1,1 = off)")
    p.add_argument("--weight-clip", type=_weight_clip, metavar="LO,HI",
                   help="range of the per-op sampling weights of regeneration, raised where validation fakes "
                        "were missed (default 0.5,3; 1,1 = regenerate with the recipe's own weights)")
    p.add_argument("--pairing", choices=("paired", "independent"),
                   help="paired: each batch holds whole (real, own fake) pairs with identical augmentation "
                        "(default); independent: reals and fakes drawn apart")
    p.add_argument("--quality-reals", type=int, metavar="N",
                   help="validation reals scored as is and globally blurred/sharpened/resampled/JPEG'd each "
                        "round (default 256; 0 = off)")
    p.add_argument("--seed", type=int, help="base seed (default 0)")
    p.add_argument("--val-fraction", type=float, help="validation share of the pool (default 0.1)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap on steps per epoch (default 120; 0 = a full pass over the pool)")
    p.add_argument("--device", help="torch device (default cpu)")
    from detector.config import field_defaults

    defaults = field_defaults()
    for name in _generic_options():
        p.add_argument(_option(name), type=_setting_type(name), metavar="VALUE",
                       help=f"LoopConfig.{name} (default {defaults.get(name)!r}; see examples/train.yaml)")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's); a run repeats bit for bit only with the same count "
                        "on the same kind of CPU, since the count changes the order of float sums")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_options(args: argparse.Namespace, base: dict) -> dict:
    """LoopConfig field -> (value, option) for every training option given on the command line."""
    given = {field: (getattr(args, dest), _option(dest)) for dest, field in
             [*_TRAIN_OPTIONS.items(), *((n, n) for n in _generic_options())] if getattr(args, dest) is not None}
    if args.data:
        given["data_dirs"] = (args.data, "--data")
    if args.model_kwargs is not None or args.backbone:
        kw = dict(args.model_kwargs if args.model_kwargs is not None else base.get("model_kwargs", {}))
        if args.backbone:
            kw["backbone"] = args.backbone
        given["model_kwargs"] = (kw, " ".join(o for o, v in (("--model-kwargs", args.model_kwargs),
                                                              ("--backbone", args.backbone)) if v is not None))
    if args.loss_kwargs is not None:
        given["loss_kwargs"] = (args.loss_kwargs, "--loss-kwargs")
    return given


def run_train(args: argparse.Namespace) -> int:
    import torch

    from detector.config import read_config, resolve_settings
    from detector.loop import STATE, rebased_state, run_loop
    from detector.settings import LEGACY_CONFIG

    if args.threads:
        torch.set_num_threads(args.threads)
    state_path = Path(args.out) / STATE
    stored = None
    legacy: dict = {}
    if args.resume and state_path.is_file():
        saved = rebased_state(json.loads(state_path.read_text()), args.out)["config"]
        saved.pop("out_dir", None)
        legacy = {k: "the stored run (saved before this setting existed)" for k in LEGACY_CONFIG if k not in saved}
        stored = {**LEGACY_CONFIG, **saved}
    # --backbone adds to the model kwargs of the layer below: the file's, else the stored run's
    from_file = read_config(args.config) if args.config else None
    settings, sources = resolve_settings(args.config, _train_options(args, {**(stored or {}), **(from_file or {})}),
                                         base=stored, resume_path=state_path if stored is not None else None,
                                         file_values=from_file)
    sources = {**legacy, **sources}
    for need, opt in (("data_dirs", "--data"), ("eval_dir", "--eval")):
        if need not in settings:
            raise ValueError(f"{opt} is required (unless --config sets {need} or --resume finds {state_path})")
    if settings.get("device") is not None:
        try:
            check_device(settings["device"])
        except ValueError as e:
            raise ValueError(f"{args.config}: {e}" if sources.get("device") == str(args.config) else str(e)) from None
    summary = run_loop(settings.pop("data_dirs"), settings.pop("eval_dir"), args.out, resume=args.resume,
                       progress=not (args.no_progress or args.quiet), sources=sources, **settings)
    return EXIT_OK if summary["condition_met"] else EXIT_NOT_MET


def _add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", help="detector checkpoint (.pt); default: the one shipped with the package")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset to evaluate (any supported layout, "
                   "including a DeepfakeBench dataset .json or a folder holding one)")
    p.add_argument("--root", metavar="DIR", help="DeepfakeBench JSON: folder its relative frame paths start from "
                                                 "(default: the folder the .json is in)")
    p.add_argument("--split", choices=("train", "val", "test", "all"),
                   help="DeepfakeBench JSON: split to evaluate (default test)")
    p.add_argument("--compression", choices=("raw", "c23", "c40"),
                   help="DeepfakeBench JSON of FaceForensics++: compression level (default c23)")
    p.add_argument("--labels", type=_json_dict, metavar="JSON",
                   help="DeepfakeBench JSON: label names -> 0 (real) / 1 (fake), as its label_dict, for names "
                        "that contain neither 'real' nor 'fake', e.g. '{\"blendface\": 1}'")
    p.add_argument("--out", metavar="JSON", help="write the metrics here (and a ROC plot next to it, *_roc.png)")
    p.add_argument("--size", type=int, help="resize every face to SIZE x SIZE (multiple of 32; default: the size "
                                            "recorded in the checkpoint by `detector train`, else native)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=workers_option, default="auto", help=_WORKERS_HELP)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def _json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _check_classes(data, samples, skipped: list[dict]) -> None:
    """Refuse an evaluation set with no scoreable real or no scoreable fake (metrics would be NaN)."""
    for label, name in ((0, "real"), (1, "fake")):
        if not any(s.label == label for s in samples):
            why = (f"; {len(skipped)} skipped, e.g. {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else "")
            raise ValueError(f"{data}: no {name} image to evaluate{why}")


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from detector.checkpoint import default_checkpoint, load_checkpoint
    from detector.data import FaceDataset
    from detector.metrics import format_metrics, video_scores
    from detector.plots import plot_roc, roc_curves
    from detector.readers import check_samples, load_problem, read_dataset
    from detector.train import evaluate, resolve_workers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = check_device(args.device)  # before the checkpoint: a bad device is not the checkpoint's fault
    json_options = {k: getattr(args, k) for k in ("root", "split", "compression", "labels")
                    if getattr(args, k) is not None}  # DeepfakeBench JSON only
    samples, skipped = check_samples(read_dataset(args.data, **json_options))  # missing files named, before any work
    _check_classes(args.data, samples, skipped)
    ckpt = args.ckpt or default_checkpoint()
    model, meta = load_checkpoint(ckpt, map_location=device)
    side = check_size(args.size) if args.size is not None else (meta.get("extra") or {}).get("size")
    ds = FaceDataset(samples, mode="full", norm=model.input_norm, full_size=side)
    metrics, scores = evaluate(model, ds, args.batch_size, resolve_workers(args.workers, device), device,
                               not (args.no_progress or args.quiet))
    unscored = [i for i in np.flatnonzero(~np.isfinite(scores)) if ds.load(i) is not None]
    if unscored:  # the image loaded, the model gave NaN or inf: no score at all, not a skipped file
        raise ValueError(f"{ckpt}: the model's fake probability is not finite for {len(unscored)} image(s), "
                         f"e.g. {samples[unscored[0]].path}: its weights or input_norm are broken")
    late = [{"path": samples[i].path, "reason": load_problem(samples[i])} for i in np.flatnonzero(~np.isfinite(scores))]
    skipped += late
    _check_classes(args.data, [s for s, ok in zip(samples, np.isfinite(scores)) if ok], skipped)
    metrics["n_skipped"] = len(skipped)
    print(format_metrics(metrics))
    if skipped:
        print(f"skipped {len(skipped)} image(s):")
        for rec in skipped[:10]:
            print(f"  {rec['path']}: {rec['reason']}")
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more" + (f" (all in {args.out})" if args.out else ""))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"ckpt": str(ckpt), "data": str(args.data), **json_options, **metrics, "skipped": skipped}
        out.write_text(json.dumps(_json_safe(record), indent=1, allow_nan=False))  # valid JSON: NaN -> null
        curves = roc_curves(samples, scores, metrics.get("per_generator") or {})
        if "video" in metrics:  # per-video mean frame scores, as metrics["video"]
            videos = [s.meta["video"] for s, k in zip(samples, np.isfinite(scores)) if k]
            _, video_labels, video_means = video_scores(*curves["all"], videos)
            curves["video-level"] = (video_labels, video_means)
        png = plot_roc(curves, out.with_name(out.stem + "_roc.png"), title=f"{Path(args.data).name}")
        print(f"wrote {out} and {png}")
    return EXIT_OK


# ------------------------------------------------------------------------------ predict

def _arg(convert, check):
    """argparse type: ``check(convert(text))``, its ValueError shown as a usage error."""
    def parse(text):
        try:
            return check(convert(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``detector predict`` options to ``parser``."""
    parser.add_argument("--ckpt", help="checkpoint file (.pt) of a trained detector; default: the one shipped with "
                                       "the package (README, 'Detector')")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, videos (" + " ".join(sorted(VIDEO_EXTS)) + ") or folders (searched recursively)")
    parser.add_argument("--crop-scale", type=_arg(float, check_crop_scale), default=1.3,
                        help="face crop side relative to the face, %s..%s (default 1.3; use the training value)" % CROP_SCALE_RANGE)
    parser.add_argument("--size", type=_arg(int, check_size),
                        help="face crop side in pixels fed to the model, multiple of 32 (default: the training size "
                             "recorded in the checkpoint, else 256)")
    parser.add_argument("--threshold", type=_arg(float, lambda v: check_fraction(v, "threshold")), default=0.5,
                        help="a face is fake when its probability exceeds this (default 0.5)")
    parser.add_argument("--frames", type=_arg(int, check_frames), default=16,
                        help="frames sampled evenly per video (default 16)")
    parser.add_argument("--video-threshold", type=_arg(float, lambda v: check_fraction(v, "video_threshold")), default=0.5,
                        help="a video is fake when the share of fake frames exceeds this (default 0.5)")
    parser.add_argument("--masks-out", type=Path, default=None, metavar="DIR",
                        help="write each face's predicted forgery mask (PNG on the face crop, 255 = forged) here")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto (default cpu)")
    parser.add_argument("--batch-size", type=_arg(int, check_batch_size), default=32,
                        help="faces per forward pass (default 32)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of records instead of a table")
    return parser


def collect_inputs(inputs) -> list[tuple[Path, str | None]]:
    """Expand INPUT arguments to (path, kind) with kind "image", "video" or None for a
    missing path. Folders are searched recursively in sorted order and only files with
    an image or video extension are taken; a file named explicitly is read as an image
    unless its extension marks a video."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                ext = f.suffix.lower()
                if f.is_file() and (ext in IMAGE_EXTENSIONS or ext in VIDEO_EXTS):
                    out.append((f, "video" if ext in VIDEO_EXTS else "image"))
        elif p.exists():
            out.append((p, "video" if p.suffix.lower() in VIDEO_EXTS else "image"))
        else:
            out.append((p, None))
    return out


def _record(path, kind, status, reason=None, **fields) -> dict:
    return {"path": str(path), "kind": kind, "status": status, "reason": reason,
            "faces": fields.pop("faces", 0), "prob": fields.pop("prob", None),
            "verdict": fields.pop("verdict", None), **fields}


class _MaskWriter:
    """Writes mask PNGs under one folder with unique, readable names."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._used = set()

    def write(self, source: Path, tag: str, mask: np.ndarray) -> str:
        base = f"{Path(source).stem}{tag}_mask"
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        out = self.folder / f"{name}.png"
        if not cv2.imwrite(str(out), mask):
            raise OSError(f"{out}: cannot write mask")
        return str(out)


def _image_records(predictor, items, writer) -> list[dict]:
    """Records for image files, in order; readable ones are scored together."""
    from detector.predict import NonFiniteScore

    images, readable, records = [], [], [None] * len(items)
    for k, (path, _) in enumerate(items):
        try:
            images.append(read_image(path))
            readable.append(k)
        except ValueError as exc:  # ImageReadError names the file
            records[k] = _record(path, "image", "unreadable", str(exc))
    try:
        results = predictor.predict_images(images) if images else []
    except NonFiniteScore as exc:
        raise ValueError(f"{items[readable[exc.images[0]]][0]}: {exc}") from None
    for k, res in zip(readable, results):
        path = items[k][0]
        masks = res.pop("masks", None)
        if masks is not None and writer is not None:
            res["masks"] = [writer.write(path, f"_face{j}", m) for j, m in enumerate(masks)]
        status = res.pop("status")
        records[k] = _record(path, "image", status, None if status == "ok" else "no face found", **res)
    return records


def _video_record(predictor, path, frames, writer) -> dict:
    from detector.predict import NonFiniteScore

    try:
        res = predictor.predict_video(path, frames)
    except NonFiniteScore as exc:  # the model's fault, not the video's
        raise ValueError(f"{path}: {exc}") from None
    except ValueError as exc:
        return _record(path, "video", "unreadable", str(exc))
    masks = res.pop("masks", None)
    status = res.pop("status")
    if masks is not None and writer is not None:
        for fr, fmasks in zip(res["frames"], masks):
            fr["masks"] = [writer.write(path, f"_f{fr['index']:05d}_face{j}", m) for j, m in enumerate(fmasks)]
    return _record(path, "video", status, None if status == "ok" else "no face in any sampled frame", **res)


def _fmt_prob(p) -> str:
    return "-" if p is None else f"{p:.3f}"


def format_table(records: list[dict]) -> str:
    """Readable table: path, kind, faces, prob, verdict (or status) and a note."""
    rows = [("path", "kind", "faces", "prob", "verdict", "note")]
    for r in records:
        if r["status"] == "ok":
            verdict = r["verdict"].upper() if r["verdict"] == "fake" else r["verdict"]
            note = ""
            if r["kind"] == "video":
                note = f"{r['frames_used']}/{r['frames_sampled']} frames, {100 * r['fake_share']:.0f}% fake"
        else:
            verdict, note = r["status"], r["reason"] or ""
        faces = "-" if r["status"] == "unreadable" else str(r["faces"])
        rows.append((r["path"], r["kind"], faces, _fmt_prob(r["prob"]), verdict, note))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + ("  " + row[5] if row[5] else "") for row in rows]
    lines = [line.rstrip() for line in lines]
    counts = {}
    for r in records:
        key = r["verdict"] if r["status"] == "ok" else r["status"]
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return "\n".join(lines + [f"{len(records)} inputs: {summary}"])


def exit_code(records: list[dict]) -> int:
    """0 when every scored input is real, 1 when one is fake, 2 when none was scored."""
    scored = [r for r in records if r["status"] == "ok"]
    if not scored:
        return EXIT_USAGE
    return EXIT_NOT_MET if any(r["verdict"] == "fake" for r in scored) else EXIT_OK


def run_predict(args: argparse.Namespace) -> int:
    """Run ``detector predict``; returns the exit code (0 real, 1 fake found, 2 error)."""
    def fail(msg):
        print("detector predict: error: " + " ".join(str(msg).split()), file=sys.stderr)  # one line
        return EXIT_USAGE

    from detector.predict import Predictor

    try:
        predictor = Predictor(args.ckpt, crop_scale=args.crop_scale, size=args.size, device=args.device,
                              threshold=args.threshold, video_threshold=args.video_threshold,
                              batch_size=args.batch_size)
    except (OSError, ValueError, RuntimeError) as exc:
        return fail(str(exc))
    try:
        check_frames(args.frames)
    except ValueError as exc:
        return fail(str(exc))
    items = collect_inputs(args.inputs)
    if not any(kind for _, kind in items):
        return fail("no image or video found in " + ", ".join(map(str, args.inputs)))
    from tqdm import tqdm

    records = []
    chunk = []  # images are read and scored a few at a time so faces share batches

    def flush():
        records.extend(_image_records(predictor, chunk, writer))
        chunk.clear()

    # an unreadable input is a record; anything else that fails is an error (exit 2, not 1 = "fake")
    try:
        writer = _MaskWriter(args.masks_out) if args.masks_out is not None else None
        for path, kind in tqdm(items, desc="predict", unit="file", file=sys.stderr,
                               disable=True if getattr(args, "quiet", False) else None, leave=False):
            if kind is None:
                flush()
                records.append(_record(path, "image", "unreadable", f"{path}: no such file or directory"))
            elif kind == "video":
                flush()
                records.append(_video_record(predictor, path, args.frames, writer))
            else:
                chunk.append((path, kind))
                if len(chunk) >= 16:
                    flush()
        flush()
    except (OSError, ValueError, RuntimeError) as exc:  # e.g. --masks-out not writable, the model fails on the crops
        return fail(exc)

    if args.json:
        sys.stdout.write(json.dumps(records, indent=2, allow_nan=False) + "\n")  # valid JSON: no bare NaN
    else:
        print(format_table(records))
    code = exit_code(records)
    if code == EXIT_USAGE:
        print("detector predict: error: no input could be scored (see the table)", file=sys.stderr)
    return code



def predict_main(argv=None) -> int:
    """``detector predict`` on its own (``python -m detector.predict``)."""
    parser = add_predict_arguments(argparse.ArgumentParser(prog="detector predict", description=PREDICT_DESCRIPTION))
    args = add_verbosity_arguments(parser).parse_args(argv)
    with cli_logging(verbosity(args)):
        return run_predict(args)


def _add_fuse_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="trained detector checkpoint (.pt), e.g. a detector train round's")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="labelled faces to fit the statistics model on (synth generate outputs or any supported "
                        "layout); tens of thousands help, e.g. a 40,000-sample mixed run")
    p.add_argument("--out", required=True, metavar="PT", help="fused checkpoint to write (usable by eval and predict)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps of the statistics MLP (batch 256; default: the loop's, 20,000)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="identity-disjoint validation share of --data")
    p.add_argument("--calibration", type=int, default=400,
                   help="validation reals and as many fakes that set the fusion's scale")
    p.add_argument("--mirror", default="true", metavar="{true,false}",
                   help="the fused detector also scores each face mirrored left-right and averages both views, as "
                        "detector train's (default true; 1.7-1.8x the scoring cost)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=workers_option, default="auto", help=_WORKERS_HELP)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def run_fuse(args: argparse.Namespace) -> int:
    import torch

    from detector.checkpoint import load_checkpoint, save_checkpoint
    from detector.fit_statistics import PATCH_STATS_STEPS, fuse_with_statistics
    from detector.readers import check_samples, read_datasets
    from detector.train import resolve_workers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = check_device(args.device)
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction: expected a value in (0, 1), got {args.val_fraction}")
    steps = PATCH_STATS_STEPS if args.steps is None else args.steps
    for name, value in (("steps", steps), ("calibration", args.calibration)):
        if value < 1:
            raise ValueError(f"--{name}: expected >= 1, got {value}")
    mirror = {"true": True, "false": False}.get(str(args.mirror).lower())
    if mirror is None:
        raise ValueError(f"--mirror: expected true or false, got {args.mirror!r}")
    out = Path(args.out)
    if out.suffix != ".pt":
        raise ValueError(f"--out: expected a .pt file name, got {args.out}")
    samples, skipped = check_samples(read_datasets(args.data))
    for label, name in ((0, "real"), (1, "fake")):
        if not any(s.label == label for s in samples):
            raise ValueError(f"{' '.join(args.data)}: no {name} image to fit on")
    cnn, meta = load_checkpoint(args.ckpt, map_location=device)
    fusion, report = fuse_with_statistics(cnn, samples, val_fraction=args.val_fraction, steps=steps,
                                          calibration=args.calibration, seed=args.seed,
                                          workers=resolve_workers(args.workers, device),
                                          device=device, progress=not (args.no_progress or args.quiet), mirror=mirror)
    extra = {**(meta.get("extra") or {}), "fused_from": str(args.ckpt), "statistics_data": [str(d) for d in args.data],
             "fuse_report": report}
    save_checkpoint(out, fusion, extra)
    cal = report["calibration_auc"]
    print(f"statistics model: fitted on {report['n_train']} faces, validation AUC {report['statistics_val_auc']:.3f} "
          f"({report['n_val']} faces)" + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    print(f"calibration ({report['n_calibration']} validation faces) AUC: "
          + ", ".join(f"{k} {v:.3f}" for k, v in cal.items()))
    print(f"wrote {out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detector", description="Face-forgery detector: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = [add_verbosity_arguments(argparse.ArgumentParser(add_help=False))]  # -v / -q on every command
    p = sub.add_parser("train", help="train with the augment-until loop", parents=common,
                       description="Train round by round on synth data; after each round evaluate on --eval, stop "
                                   "when --augment-until holds, else generate more fakes aimed at the misses.")
    _add_train_arguments(p)
    p.set_defaults(func=run_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset", parents=common)
    _add_eval_arguments(p)
    p.set_defaults(func=run_eval)
    p = sub.add_parser("predict", help="score faces in images / videos", parents=common)
    add_predict_arguments(p)
    p.set_defaults(func=run_predict)
    p = sub.add_parser("fuse", help="add the patch-statistics model to a trained detector", parents=common,
                       description="Fit the patch-statistics model (colour, sharpness and noise of face regions "
                                   "relative to the rest) on --data and write a checkpoint that averages its "
                                   "standardised score with --ckpt's.")
    _add_fuse_arguments(p)
    p.set_defaults(func=run_fuse)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_logging(verbosity(args)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"detector {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = "; rerun with --resume to continue" if args.command == "train" else ""
        print(f"detector {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
