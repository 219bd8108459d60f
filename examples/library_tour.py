"""A tour of the op library on the embedded default face (scikit-image's astronaut).

Run: .venv/bin/python examples/library_tour.py [--out tour.png]
Writes one PNG: the target, a degraded + colour-matched source, the landmark mask and
the four blends side by side.
"""
import argparse

import cv2
import numpy as np
from skimage import data

from synth.blend import BLENDS
from synth.color import transfer
from synth.degrade import gaussian_blur, gaussian_noise, jpeg_ratio
from synth.face import crop_face, get_detector
from synth.mask import build_mask, sample_mask_params
from synth.perturb import affine_shift, color_shift


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="tour.png")
    args = p.parse_args()

    face = get_detector().detect(data.astronaut())
    target, landmarks, _ = crop_face(data.astronaut(), face.landmarks, scale=1.3, size=256)

    # source = an altered copy of the target (a self-blend), degraded, then colour-matched
    rng = np.random.default_rng(0)
    source = affine_shift(color_shift(target, hue=6, brightness=0.05), scale=1.03, dx=0.01)
    source = jpeg_ratio(gaussian_noise(gaussian_blur(source, ksize=5), rng, sigma=3), ratio=0.08)
    source = transfer(source, target, "reinhard")

    params = sample_mask_params(rng, landmarks, feather=(4.0, 4.0))
    mask = build_mask(target.shape[:2], landmarks, "full", params)
    panels = [target, source, cv2.cvtColor(mask, cv2.COLOR_GRAY2RGB)]
    panels += [BLENDS[name](source, target, mask) for name in ("alpha", "poisson", "pyramid", "wavelet")]
    sheet = np.concatenate(panels, axis=1)
    cv2.imwrite(args.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}: target | source | mask | alpha | poisson | pyramid | wavelet")


if __name__ == "__main__":
    main()
