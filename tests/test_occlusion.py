import json

import cv2
import numpy as np
import pytest
from skimage import data

from synth.occluders import OCCLUDERS, render_occluder, sample_occluder
from synth.occlusion import ESTIMATORS, SkinOcclusionEstimator, face_oval_mask, get_estimator


@pytest.fixture(scope="module")
def lm(astro_lm):
    """The astronaut's landmarks (``astro_lm`` from conftest) under the short name used here."""
    return astro_lm


@pytest.fixture(scope="module")
def donors():
    return [data.chelsea(), data.coffee()]


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_registry():
    assert {"none", "skin"} <= set(ESTIMATORS)
    assert isinstance(get_estimator(), SkinOcclusionEstimator)
    assert get_estimator("skin", threshold=20.0).threshold == 20.0
    with pytest.raises(ValueError, match="estimator"):
        get_estimator("segformer")
    with pytest.raises(ValueError, match="keep"):
        get_estimator("skin", keep=0.05)


@pytest.mark.parametrize("name", ["none", "skin"])
def test_estimator_output_contract(astro, lm, name):
    est = get_estimator(name)
    out = est(astro, lm)
    assert out.dtype == np.float32 and out.shape == astro.shape[:2]
    assert out.min() >= 0 and out.max() <= 1
    oval = face_oval_mask(astro.shape[:2], lm)
    assert (out[~oval] == 0).all()
    with pytest.raises(ValueError, match="landmarks"):
        est(astro, lm[:10])
    with pytest.raises(ValueError, match="uint8"):
        est(astro.astype(np.float32), lm)


def test_skin_estimator_clean_face_mostly_visible(astro, lm):
    out = get_estimator("skin")(astro, lm)
    oval = face_oval_mask(astro.shape[:2], lm)
    # the astronaut's hair covers part of the forehead inside the oval, nothing else does
    assert out[oval].mean() < 0.2
    assert (get_estimator("skin")(astro, lm) == out).all()  # deterministic


def test_skin_estimator_finds_coloured_bar(astro, lm):
    img = astro.copy()
    true = np.zeros(img.shape[:2], np.uint8)
    # a green bar across the cheeks and nose
    y = int(lm[:, 1].min() + 0.6 * np.ptp(lm[:, 1]))
    cv2.rectangle(true, (0, y - 10), (511, y + 10), 255, -1)
    img[true > 0] = (40, 170, 60)
    oval = face_oval_mask(img.shape[:2], lm)
    out = get_estimator("skin")(img, lm) > 0.5
    assert iou(out & oval, (true > 0) & oval) > 0.6


def test_skin_estimator_outside_image_is_safe(astro, lm):
    # face half outside the frame: no crash, output still in range
    out = get_estimator("skin")(astro, lm - [200, 0])
    assert out.shape == astro.shape[:2] and out.min() >= 0 and out.max() <= 1
    assert get_estimator("skin")(astro, lm + 2000).sum() == 0


@pytest.mark.parametrize("kind", sorted(OCCLUDERS))
def test_occluders_exact_masks(astro, lm, donors, kind):
    rng = np.random.default_rng(7)
    for _ in range(3):
        p = sample_occluder(rng, astro.shape[:2], lm, kinds=(kind,), n_donors=len(donors))
        assert p["kind"] == kind
        assert json.loads(json.dumps(p)) == p
        out, alpha = render_occluder(astro, p, donors)
        assert out.dtype == np.uint8 and out.shape == astro.shape
        assert alpha.dtype == np.uint8 and alpha.shape == astro.shape[:2]
        assert (alpha > 0).sum() > 100
        changed = (out != astro).any(-1)
        assert not (changed & (alpha == 0)).any()  # pixels change only under the mask
        assert changed[alpha == 255].mean() > 0.5
        # the occluder lands on the face
        assert ((alpha > 127) & face_oval_mask(astro.shape[:2], lm)).any()
        # replay from the recorded params
        out2, alpha2 = render_occluder(astro, json.loads(json.dumps(p)), donors)
        assert out.tobytes() == out2.tobytes() and alpha.tobytes() == alpha2.tobytes()


def test_sample_occluder_deterministic_and_kinds(astro, lm):
    a = sample_occluder(np.random.default_rng(1), astro.shape[:2], lm)
    b = sample_occluder(np.random.default_rng(1), astro.shape[:2], lm)
    assert a == b
    kinds = {sample_occluder(np.random.default_rng(s), astro.shape[:2], lm)["kind"] for s in range(40)}
    assert kinds == {"hand", "bar", "texture"}  # no donors: no patches by default
    kinds = {sample_occluder(np.random.default_rng(s), astro.shape[:2], lm, n_donors=2)["kind"] for s in range(40)}
    assert kinds == set(OCCLUDERS)


def test_occluder_errors(astro, lm):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kinds"):
        sample_occluder(rng, astro.shape[:2], lm, kinds=("scarf",))
    with pytest.raises(ValueError, match="donor"):
        sample_occluder(rng, astro.shape[:2], lm, kinds=("patch",))
    p = sample_occluder(rng, astro.shape[:2], lm, kinds=("patch",), n_donors=3)
    with pytest.raises(ValueError, match="donors"):
        render_occluder(astro, p)
    q = sample_occluder(rng, astro.shape[:2], lm, kinds=("bar",))
    with pytest.raises(ValueError, match="shape"):
        render_occluder(astro[:300], q)
    with pytest.raises(ValueError, match="kind"):
        render_occluder(astro, {"kind": "cloud"})
    with pytest.raises(ValueError, match="rng"):
        sample_occluder(None, astro.shape[:2], lm)
