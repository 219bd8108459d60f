"""synth's ops inside an albumentations pipeline: self-blended fakes with their masks, then
blur and JPEG by compression ratio, next to albumentations' own transforms.

Run: .venv/bin/python examples/albumentations_pipeline.py [--n 8] [--seed 0] [--out sheet.png]
     [--save pipeline.json]
Uses the embedded default face (scikit-image's astronaut, landmarks detected once), prints
each sample's label and the ops drawn, writes a contact sheet (input | output | mask per row)
and, with ``--save``, the pipeline as JSON (``A.load`` reads it back once ``synth.transforms``
is imported).  Importable: the test suite calls :func:`build_pipeline` and :func:`main`.
"""
from __future__ import annotations

import argparse
import random

import albumentations as A
import cv2
import numpy as np

from synth.transforms import BokehBlur, DualBlur, JpegRatio, SelfBlend, TiltShiftBlur


def build_pipeline(seed: int | None = None, size: int = 256) -> A.Compose:
    """Half the samples become self-blended fakes; then global blur and compression.

    Parameters
    ----------
    seed : int, optional
        Seed of the pipeline's random state (None: a fresh one): with a seed every run
        draws the same samples.
    size : int
        Face-crop side the self-blend recipe renders at.

    Returns
    -------
    albumentations.Compose
        Call it as ``pipe(image=uint8 HxWx3 RGB, keypoints=(468, 2) landmarks,
        mask=uint8 HxW zeros)``; ``out["mask"]`` is the fake's mask (all zero for a real).
    """
    pipe = A.Compose([
        A.HorizontalFlip(p=0.5),                       # moves the image, the landmarks and the mask
        SelfBlend(recipe="self-blend", size=size, p=0.5),
        A.OneOf([DualBlur(iterations=(1, 2)), BokehBlur(radius=(1.0, 2.5)), TiltShiftBlur(),
                 A.GaussianBlur(sigma_limit=(0.3, 1.2))], p=0.4),
        A.OneOf([JpegRatio(ratio=(0.03, 0.15)), A.ImageCompression(quality_range=(50, 95))], p=0.5),
    ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), save_applied_params=True)
    if seed is not None:
        # One stream shared by every transform.  A.Compose(seed=...) would give each child its own
        # copy of the same stream (albumentations 2.0), so the flip and both OneOf blocks would be
        # applied together or not at all.
        pipe.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipe


def default_face(side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's head and shoulders at ``side`` px and its 468 landmarks (float32 (468, 2))."""
    from skimage import data

    from synth.face import get_detector

    image = cv2.resize(data.astronaut()[:320, 80:400], (side, side), interpolation=cv2.INTER_AREA)
    found = get_detector().detect(image)
    if found is None:
        raise ValueError("no face found in the default image")
    return image, found.landmarks


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the pipeline ``--n`` times on the default face; returns the output dicts."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--side", type=int, default=256, help="image side in pixels")
    p.add_argument("--out", default="albumentations-sheet.png", help="contact sheet PNG")
    p.add_argument("--save", help="also write the pipeline as JSON here")
    args = p.parse_args(argv)

    image, landmarks = default_face(args.side)
    pipe = build_pipeline(seed=args.seed, size=args.side)
    outputs, rows = [], []
    for i in range(args.n):
        out = pipe(image=image, keypoints=landmarks, mask=np.zeros(image.shape[:2], np.uint8))
        label = "fake" if out["mask"].any() else "real"
        ops = ", ".join(name for name, _ in out["applied_transforms"]) or "-"
        print(f"sample {i}: {label:4s}  {ops}")
        outputs.append(out)
        rows.append(np.concatenate([image, out["image"], cv2.cvtColor(out["mask"], cv2.COLOR_GRAY2RGB)], axis=1))
    cv2.imwrite(args.out, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
    if args.save:
        A.save(pipe, args.save, data_format="json")
        print(f"wrote {args.save}")
    return outputs


if __name__ == "__main__":
    main()
