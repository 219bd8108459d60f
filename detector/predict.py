"""Score images and videos with a trained detector (``detector predict``).

Pipeline per image: find every face (mediapipe full-range face detection gives the
boxes, the face mesh of :mod:`synth.face` gives landmarks inside each box), crop it
with :func:`synth.face.crop_face` exactly as the training crops are made (square,
``crop_scale`` times the face, resized to ``size`` x ``size``), normalise with the
model's ``input_norm`` and read ``sigmoid(logit)`` as the probability that the face
is fake. The detector is fully convolutional, so ``size`` (a multiple of 32) is the
resolution the *whole* face is seen at: use the size the model was trained with.
An image is fake when its most suspicious face is (``prob > threshold``).

Videos are judged on ``frames`` frames sampled evenly over the clip: a video is fake
when the share of frames judged fake exceeds ``video_threshold``.

Library use::

    from detector.predict import Predictor
    p = Predictor("runs/x/best.pt", crop_scale=1.3, size=256)
    p.predict_image(image)          # image: uint8 HxWx3 RGB
    p.predict_video("clip.mp4", frames=16)
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from synth._checks import check_image, to_uint8
from synth.io import IMAGE_EXTENSIONS, read_image
from synth.log import add_verbosity_arguments, cli_logging, native_stderr_to_log, verbosity
from detector.train import channels_last

log = logging.getLogger(__name__)

IMAGE_EXTS = IMAGE_EXTENSIONS
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
CROP_SCALE_RANGE = (1.2, 2.0)

# Exit codes of ``detector predict``.
EXIT_REAL, EXIT_FAKE, EXIT_ERROR = 0, 1, 2

# Errors torch.load / load_checkpoint raise for a missing, truncated or foreign file.
_CHECKPOINT_ERRORS = (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError)


# ----------------------------------------------------------------------------- validation

def check_crop_scale(crop_scale: float) -> float:
    lo, hi = CROP_SCALE_RANGE
    if not lo <= float(crop_scale) <= hi:
        raise ValueError(f"crop_scale: must lie in [{lo}, {hi}], got {crop_scale}")
    return float(crop_scale)


def check_size(size: int) -> int:
    if int(size) != size or size < 32 or size % 32:
        raise ValueError(f"size: must be a positive multiple of 32 (the detector downsamples by 32), got {size}")
    return int(size)


def check_fraction(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: must lie in [0, 1], got {value}")
    return float(value)


def check_batch_size(batch_size: int) -> int:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {batch_size}")
    return int(batch_size)


def check_frames(frames: int) -> int:
    if int(frames) != frames or frames < 1:
        raise ValueError(f"frames: must be a positive integer, got {frames}")
    return int(frames)


# ----------------------------------------------------------------------------- faces

@dataclass
class FaceCrop:
    """One face: ``box`` (x0, y0, x1, y1) in image pixels, the aligned ``crop``
    (uint8 size x size x 3 RGB) and the 2x3 ``matrix`` mapping image to crop coordinates."""

    box: tuple[float, float, float, float]
    crop: np.ndarray
    matrix: np.ndarray


@functools.lru_cache(maxsize=None)
def _box_detector(min_confidence: float):
    """Per-process mediapipe full-range face detector (bundled in the wheel, no download).

    Built and run once on a blank image with MediaPipe's native start-up lines (XNNPACK,
    absl) sent to the log (:func:`synth.log.native_stderr_to_log`), not to the terminal."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # silence MediaPipe's C++ INFO logging
    with native_stderr_to_log(log):
        import mediapipe as mp

        detector = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                             min_detection_confidence=min_confidence)
        detector.process(np.zeros((64, 64, 3), np.uint8))  # the first inference prints the rest
    return detector


def _face_boxes(image: np.ndarray, min_confidence: float) -> list[tuple[float, float, float, float]]:
    h, w = image.shape[:2]
    result = _box_detector(min_confidence).process(np.ascontiguousarray(image))
    boxes = []
    for det in result.detections or []:
        b = det.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
    return boxes


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def find_faces(image: np.ndarray, crop_scale: float = 1.3, size: int = 256,
               min_confidence: float = 0.5) -> list[FaceCrop]:
    """All faces of ``image`` (uint8 HxWx3 RGB), largest first, as aligned crops.

    The face detector proposes boxes (it finds small and several faces, where the
    face mesh alone only sees one large face); the mesh then places landmarks inside
    a region twice the box, which also rejects detector false alarms on textures.
    When the detector finds nothing the mesh gets the whole image.
    """
    from synth.face import crop_face, get_detector

    check_image(image)
    mesh = get_detector()
    found = []  # (landmarks in image coordinates, landmark box)
    boxes = _face_boxes(image, min_confidence)
    for box in boxes or [None]:
        lms = _landmarks_in(mesh, image, box)
        if lms is None:
            continue
        lbox = tuple(float(v) for v in (*lms.min(axis=0), *lms.max(axis=0)))
        # Two detector boxes on one face give the same landmarks: keep one.
        if any(_iou(lbox, other) > 0.5 for _, other in found):
            continue
        found.append((lms, lbox))
    found.sort(key=lambda f: -(f[1][2] - f[1][0]) * (f[1][3] - f[1][1]))
    faces = []
    for lms, lbox in found:
        crop, _, matrix = crop_face(image, lms, scale=crop_scale, size=size)
        faces.append(FaceCrop(box=lbox, crop=crop, matrix=np.asarray(matrix)))
    return faces


def _landmarks_in(mesh, image: np.ndarray, box) -> np.ndarray | None:
    """Landmarks (468, 2) of the face in detector ``box`` (None: whole image), or None.

    The mesh returns the largest face of what it is given, so it gets a region twice
    the box; when that lands on a bigger neighbour (its centre outside ``box``) the
    search is repeated on a region 1.25 x the box.
    """
    h, w = image.shape[:2]
    if box is None:
        res = mesh.detect(image)
        return None if res is None else np.asarray(res.landmarks, dtype=np.float64)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    for factor in (2.0, 1.25):
        half = factor * max(x1 - x0, y1 - y0) / 2
        rx0, ry0 = max(0, int(cx - half)), max(0, int(cy - half))
        rx1, ry1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        if rx1 - rx0 < 8 or ry1 - ry0 < 8:
            return None
        res = mesh.detect(np.ascontiguousarray(image[ry0:ry1, rx0:rx1]))
        if res is None:
            continue
        lms = np.asarray(res.landmarks, dtype=np.float64) + (rx0, ry0)
        mx, my = (lms.min(axis=0) + lms.max(axis=0)) / 2
        if x0 <= mx <= x1 and y0 <= my <= y1:
            return lms
    return None


# ----------------------------------------------------------------------------- video frames

def _open_video(path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open as a video")
    return cap


def _count_frames(path) -> int:
    cap = _open_video(path)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def _evenly(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def sample_video_frames(path, frames: int = 16) -> list[tuple[int, np.ndarray]]:
    """``frames`` frames spread evenly over the video at ``path`` as (index, uint8 HxWx3 RGB).

    Seeks with ``CAP_PROP_POS_FRAMES``; when the container reports no frame count or a
    seek fails, reads the video sequentially instead. Raises ``ValueError`` naming the
    file when it cannot be opened or holds no frame.
    """
    check_frames(frames)
    cap = _open_video(path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = []
    if n > 0:
        for i in _evenly(n, frames):
            if not cap.set(cv2.CAP_PROP_POS_FRAMES, i):
                break
            ok, frame = cap.read()
            if not ok:
                break
            out.append((i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    cap.release()
    if n <= 0 or len(out) < min(frames, n):
        # Frame count missing or wrong, or seeking unsupported: decode in order.
        n = _count_frames(path)
        if n == 0:
            raise ValueError(f"{path}: video holds no readable frame")
        wanted = set(_evenly(n, frames))
        cap = _open_video(path)
        out = []
        for i in range(n):
            if not cap.grab():
                break
            if i in wanted:
                ok, frame = cap.retrieve()
                if ok:
                    out.append((i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
        cap.release()
        if not out:
            raise ValueError(f"{path}: video holds no readable frame")
    return out


# ----------------------------------------------------------------------------- predictor

class NonFiniteScore(ValueError):
    """The model scored a face NaN or infinite (broken weights or ``input_norm``), which is no
    verdict at all; ``images`` are the positions of the images (or frames) concerned."""

    def __init__(self, message: str, images: list[int]):
        super().__init__(message)
        self.images = images


def check_device(device) -> torch.device:
    """torch device from a name; "auto" picks CUDA when available. ``ValueError`` naming the
    device when it is not one (or CUDA is asked for and absent)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r}: not a torch device ({_first_line(exc)})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: requested but CUDA is not available")
    return dev


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Predictor:
    """Face-forgery scores for images and videos.

    Parameters
    ----------
    model : str | PathLike | torch.nn.Module
        Checkpoint path (loaded with :func:`detector.checkpoint.load_checkpoint`) or a
        model with an ``input_norm = {"mean": [3], "std": [3]}`` attribute (0..1 scale)
        whose forward returns ``{"logit": (B,), "mask": (B,1,h,w) logits or None, ...}``.
    crop_scale : float in [1.2, 2.0]
        Face crop side relative to the landmark face size (as in training).
    size : int, multiple of 32, optional
        Side of the square face crop fed to the model; default: the training size recorded
        in the checkpoint (``extra["size"]``, written by ``detector train``), else 256.
    device : str
        torch device, or ``"auto"`` (CUDA when available).
    threshold : float in [0, 1]
        A face/frame is fake when ``prob > threshold``.
    video_threshold : float in [0, 1]
        A video is fake when its share of fake frames exceeds this.
    batch_size : int
        Faces per forward pass.
    """

    def __init__(self, model, crop_scale: float = 1.3, size: int | None = None, device: str = "cpu",
                 threshold: float = 0.5, video_threshold: float = 0.5, batch_size: int = 32,
                 min_face_confidence: float = 0.5):
        self.crop_scale = check_crop_scale(crop_scale)
        self.threshold = check_fraction(threshold, "threshold")
        self.video_threshold = check_fraction(video_threshold, "video_threshold")
        self.min_face_confidence = check_fraction(min_face_confidence, "min_face_confidence")
        self.batch_size = check_batch_size(batch_size)
        self.device = check_device(device)
        self.meta = {}
        if isinstance(model, (str, os.PathLike)):
            from detector.checkpoint import load_checkpoint

            path = Path(model)
            try:
                model, self.meta = load_checkpoint(path)
            except _CHECKPOINT_ERRORS as exc:
                msg = str(exc)  # load_checkpoint names the file; errors from deeper down may not
                raise ValueError(msg if str(path) in msg else f"{path}: cannot load checkpoint ({msg})") from exc
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model: expected a checkpoint path or torch.nn.Module, got {type(model).__name__}")
        # the face side the model was trained at, when the checkpoint records it
        self.size = check_size(size if size is not None else (self.meta.get("extra") or {}).get("size") or 256)
        norm = getattr(model, "input_norm", None)
        if not norm or "mean" not in norm or "std" not in norm:
            raise ValueError("model: has no input_norm = {'mean': [..3], 'std': [..3]}")
        self.model = channels_last(model.to(self.device)).eval()
        self._mean = torch.as_tensor(norm["mean"], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.as_tensor(norm["std"], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    # -- model ---------------------------------------------------------------------------

    def faces(self, image: np.ndarray) -> list[FaceCrop]:
        """Aligned face crops of ``image`` (uint8 HxWx3 RGB), largest first."""
        return find_faces(image, self.crop_scale, self.size, self.min_face_confidence)

    @torch.inference_mode()
    def score_crops(self, crops: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Fake probabilities (float N,) of face crops (uint8 size x size x 3 RGB) and,
        when the model predicts masks, the masks (uint8 size x size, 0..255, 255 = forged)."""
        if not crops:
            return np.zeros(0, np.float32), None
        probs, masks = [], []
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack(crops[start:start + self.batch_size])
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            out = self.model(channels_last((x - self._mean) / self._std))
            probs.append(torch.sigmoid(out["logit"].float().reshape(-1)).cpu().numpy())
            mask = out.get("mask")
            if mask is None:
                masks = None
            elif masks is not None:
                mask = torch.sigmoid(mask.float())
                if mask.shape[-2:] != x.shape[-2:]:
                    mask = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
                masks.extend(to_uint8(mask[:, 0].cpu().numpy() * 255.0))
        return np.concatenate(probs), masks

    def _verdict(self, prob: float) -> str:
        return "fake" if prob > self.threshold else "real"

    # -- images --------------------------------------------------------------------------

    def predict_images(self, images: list[np.ndarray]) -> list[dict]:
        """:meth:`predict_image` for several images, with all their faces in shared batches.
        A face scored NaN or infinite raises :class:`NonFiniteScore`."""
        faces = [self.faces(image) for image in images]
        probs, masks = self.score_crops([f.crop for fs in faces for f in fs])
        bad = ~np.isfinite(probs)
        if bad.any():
            owner = np.repeat(np.arange(len(faces)), [len(fs) for fs in faces])
            raise NonFiniteScore(f"the model's fake probability is not finite ({probs[bad][0]}) for {int(bad.sum())} "
                                 f"of {len(probs)} face(s): its weights or input_norm are broken",
                                 sorted(set(owner[bad].tolist())))
        results, k = [], 0
        for fs in faces:
            n = len(fs)
            p = probs[k:k + n]
            res = {"status": "ok" if n else "no_face", "faces": n,
                   "prob": float(p.max()) if n else None,
                   "verdict": self._verdict(float(p.max())) if n else None,
                   "face_probs": [float(v) for v in p],
                   "boxes": [[round(v, 1) for v in f.box] for f in fs]}
            if masks is not None:
                res["masks"] = masks[k:k + n]
            results.append(res)
            k += n
        return results

    def predict_image(self, image: np.ndarray) -> dict:
        """Score one image (uint8 HxWx3 RGB).

        Returns ``{"status": "ok" | "no_face", "faces": n, "prob": max face probability
        or None, "verdict": "fake" | "real" | None, "face_probs": [n], "boxes": [n x 4]}``
        plus ``"masks"`` (n uint8 size x size crops' masks) when the model predicts masks.
        """
        return self.predict_images([image])[0]

    # -- videos --------------------------------------------------------------------------

    def predict_video(self, path, frames: int = 16) -> dict:
        """Score a video from ``frames`` evenly sampled frames.

        Each frame is scored like an image; frames without a face are left out. Returns
        ``{"status", "faces" (most in one frame), "frames_sampled", "frames_used",
        "fake_share" (share of used frames with prob > threshold), "mean_prob", "prob"
        (= mean_prob), "verdict" (fake when fake_share > video_threshold), "frames":
        [{"index", "faces", "prob", "verdict"}]}`` and, with a mask model, ``"masks"``
        (per frame, a list of face masks). Raises ``ValueError`` naming an unreadable file, and
        :class:`NonFiniteScore` when the model scores a face NaN or infinite.
        """
        sampled = sample_video_frames(path, frames)
        per_frame = self.predict_images([f for _, f in sampled])
        used = [r["prob"] for r in per_frame if r["status"] == "ok"]
        res = {"status": "ok" if used else "no_face",
               "faces": max(r["faces"] for r in per_frame),
               "frames_sampled": len(sampled), "frames_used": len(used),
               "fake_share": None, "mean_prob": None, "prob": None, "verdict": None,
               "frames": [{"index": i, "faces": r["faces"], "prob": r["prob"], "verdict": r["verdict"]}
                          for (i, _), r in zip(sampled, per_frame)]}
        if used:
            share = float(np.mean([p > self.threshold for p in used]))
            mean = float(np.mean(used))
            res.update(fake_share=share, mean_prob=mean, prob=mean,
                       verdict="fake" if share > self.video_threshold else "real")
        if any("masks" in r for r in per_frame):
            res["masks"] = [r.get("masks", []) for r in per_frame]
        return res


# ----------------------------------------------------------------------------- CLI

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
    parser.add_argument("--ckpt", required=True, help="checkpoint file (.pt) of a trained detector")
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
                if f.is_file() and (ext in IMAGE_EXTS or ext in VIDEO_EXTS):
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
        return EXIT_ERROR
    return EXIT_FAKE if any(r["verdict"] == "fake" for r in scored) else EXIT_REAL


def run_predict(args: argparse.Namespace) -> int:
    """Run ``detector predict``; returns the exit code (0 real, 1 fake found, 2 error)."""
    def fail(msg):
        print("detector predict: error: " + " ".join(str(msg).split()), file=sys.stderr)  # one line
        return EXIT_ERROR

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
    if code == EXIT_ERROR:
        print("detector predict: error: no input could be scored (see the table)", file=sys.stderr)
    return code


def main(argv=None) -> int:
    parser = add_predict_arguments(argparse.ArgumentParser(prog="detector predict", description=__doc__.split("\n\n")[0]))
    args = add_verbosity_arguments(parser).parse_args(argv)
    with cli_logging(verbosity(args)):
        return run_predict(args)


if __name__ == "__main__":
    sys.exit(main())
