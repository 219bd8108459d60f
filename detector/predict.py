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

Face finding lives in :mod:`detector.faces`, video sampling in :mod:`detector.video`, the
argument checks in :mod:`detector.checks` and the command (options, table, exit codes) in
:mod:`detector.cli`; their names stay importable from here.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from detector.checks import check_batch_size, check_crop_scale, check_device, check_fraction, check_size
from detector.faces import FaceCrop, find_faces
from detector.train import channels_last
from detector.video import VIDEO_EXTS, sample_video_frames  # noqa: F401
from synth._checks import to_uint8

# Errors torch.load / load_checkpoint raise for a missing, truncated or foreign file.
_CHECKPOINT_ERRORS = (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError)


class NonFiniteScore(ValueError):
    """The model scored a face NaN or infinite (broken weights or ``input_norm``), which is no
    verdict at all; ``images`` are the positions of the images (or frames) concerned."""

    def __init__(self, message: str, images: list[int]):
        super().__init__(message)
        self.images = images


class Predictor:
    """Face-forgery scores for images and videos.

    Parameters
    ----------
    model : str | PathLike | torch.nn.Module, optional
        Checkpoint path (loaded with :func:`detector.checkpoint.load_checkpoint`; default: the
        checkpoint shipped with the package, :func:`detector.checkpoint.default_checkpoint`) or a
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

    def __init__(self, model=None, crop_scale: float = 1.3, size: int | None = None, device: str = "cpu",
                 threshold: float = 0.5, video_threshold: float = 0.5, batch_size: int = 32,
                 min_face_confidence: float = 0.5):
        self.crop_scale = check_crop_scale(crop_scale)
        self.threshold = check_fraction(threshold, "threshold")
        self.video_threshold = check_fraction(video_threshold, "video_threshold")
        self.min_face_confidence = check_fraction(min_face_confidence, "min_face_confidence")
        self.batch_size = check_batch_size(batch_size)
        self.device = check_device(device)
        self.meta = {}
        if model is None:
            from detector.checkpoint import default_checkpoint

            model = default_checkpoint()
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


# The command's names, importable from here as before (detector.cli imports this module lazily).
_CLI_NAMES = frozenset({"main", "add_predict_arguments", "run_predict", "collect_inputs", "format_table",
                        "exit_code"})


def __getattr__(name):
    if name in _CLI_NAMES:
        from detector import cli

        return cli.predict_main if name == "main" else getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from detector.cli import predict_main

    sys.exit(predict_main())
