"""synth.transforms: synth's ops as albumentations transforms.

What users rely on: each transform gives exactly what the synth op gives with the parameters
it drew; bad ranges fail at construction naming the parameter; a seeded A.Compose replays;
A.to_dict / A.from_dict round-trips to the same outputs; SelfBlend's mask covers every pixel
it changed.  Images are 128 px so the whole file runs in a few seconds.
"""
from __future__ import annotations

import json

import albumentations as A
import cv2
import numpy as np
import pytest
from skimage import data

from synth import blend, color, degrade, make_fake
from synth import transforms as T

SIDE = 128


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's head and shoulders at 128 x 128 (face about 40 px wide)."""
    return cv2.resize(data.astronaut()[:320, 80:400], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def landmarks(face) -> np.ndarray:
    from synth.face import get_detector

    found = get_detector().detect(face)
    assert found is not None
    return found.landmarks


@pytest.fixture(scope="module")
def other() -> np.ndarray:
    """A second image: colour reference and blend source."""
    return cv2.resize(data.chelsea(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def disc() -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    cv2.circle(mask, (64, 60), 30, 255, -1)
    return cv2.GaussianBlur(mask, (0, 0), 3)


def _run(transform, image, **extra):
    """Apply ``transform`` once (p=1), return (output dict, the parameters it drew)."""
    out = transform(image=image, **extra)
    return out, transform.get_applied_params()


# ------------------------------------------------------------------ output = the synth op
OP_CASES = {
    "dual_blur": (lambda: T.DualBlur(iterations=(1, 3), offset=(0.5, 2.0), p=1),
                  lambda img, o, p: degrade.dual_blur(img, iterations=p["iterations"], offset=p["offset"])),
    "bokeh_blur": (lambda: T.BokehBlur(radius=(1.0, 4.0), p=1),
                   lambda img, o, p: degrade.bokeh_blur(img, radius=p["radius"])),
    "tilt_shift_blur": (lambda: T.TiltShiftBlur(p=1),
                        lambda img, o, p: degrade.tilt_shift_blur(img, band_center=p["band_center"],
                                                                  band_width=p["band_width"],
                                                                  max_sigma=p["max_sigma"], angle=p["angle"])),
    "guided_smooth": (lambda: T.GuidedSmooth(radius=(1, 8), strength=(2.0, 30.0), p=1),
                      lambda img, o, p: degrade.guided_smooth(img, radius=p["radius"], strength=p["strength"])),
    "jpeg_ratio": (lambda: T.JpegRatio(ratio=(0.02, 0.1), p=1),
                   lambda img, o, p: degrade.jpeg_ratio(img, ratio=p["ratio"])),
    "poisson": (lambda: T.PoissonBlend(mode=("normal", "mixed"), domain=("mask", "box"), composite=True, p=1),
                lambda img, o, p: blend.poisson_blend(o["blend_source"], img, o["mask"], mode=p["mode"],
                                                      domain=p["domain"], composite=True)),
    "pyramid": (lambda: T.PyramidBlend(levels=(2, 5), p=1),
                lambda img, o, p: blend.pyramid_blend(o["blend_source"], img, o["mask"], levels=p["levels"])),
    "wavelet": (lambda: T.WaveletBlend(levels=(1, 4), wavelet=("haar", "db2"), p=1),
                lambda img, o, p: blend.wavelet_blend(o["blend_source"], img, o["mask"], levels=p["levels"],
                                                      wavelet=p["wavelet"])),
}
for _method in color.METHODS:
    OP_CASES[f"color_{_method}"] = (
        lambda m=_method: T.ColorTransfer(method=m, n_iter=(2, 6), p=1),
        lambda img, o, p: color.transfer(img, o["color_reference"], p["method"],
                                         **({"rng": np.random.default_rng(p["seed"]), "n_iter": p["n_iter"]}
                                            if p["method"] == "idt" else {})))
OP_CASES["color_masked"] = (
    lambda: T.ColorTransfer(method="reinhard", mask_key="mask", reference_mask_key="ref_mask", p=1),
    lambda img, o, p: color.reinhard_transfer(img, o["color_reference"], mask=o["mask"], ref_mask=o["ref_mask"]))


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_output_equals_the_synth_op_with_the_drawn_parameters(case, face, other, disc):
    make, direct = OP_CASES[case]
    transform = make()
    transform.set_random_seed(5)
    extra = {"color_reference": other, "blend_source": other, "mask": disc, "ref_mask": disc[::-1].copy()}
    for _ in range(3):  # several draws
        out, params = _run(transform, face, **extra)
        expected = direct(face, extra, params)
        assert out["image"].dtype == np.uint8 and out["image"].shape == face.shape
        np.testing.assert_array_equal(out["image"], expected)
        assert not np.array_equal(out["image"], face)  # the op did something
        assert out["mask"] is disc  # data the transform reads is passed on untouched


def test_drawn_parameters_stay_inside_the_ranges(face):
    t = T.TiltShiftBlur(band_center=(0.2, 0.4), band_width=0.25, max_sigma=(1.0, 2.0), angle=(-10, 10), p=1)
    d = T.DualBlur(iterations=(2, 3), offset=1.25, p=1)
    t.set_random_seed(0)
    d.set_random_seed(0)
    seen = set()
    for _ in range(20):
        p = _run(t, face)[1]
        assert 0.2 <= p["band_center"] <= 0.4 and p["band_width"] == 0.25
        assert 1.0 <= p["max_sigma"] <= 2.0 and -10 <= p["angle"] <= 10
        p = _run(d, face)[1]
        assert p["offset"] == 1.25
        seen.add(p["iterations"])
    assert seen == {2, 3}  # integer ranges are inclusive


def test_color_reference_sequence_draws_one(face, other):
    refs = [other, face[::-1].copy(), np.full_like(face, 90)]
    t = T.ColorTransfer(method="linear", p=1)
    t.set_random_seed(1)
    drawn = set()
    for _ in range(12):
        out, p = _run(t, face, color_reference=refs)
        drawn.add(p["reference_index"])
        np.testing.assert_array_equal(out["image"], color.linear_transfer(face, refs[p["reference_index"]]))
    assert drawn == {0, 1, 2}


def test_missing_data_key_is_a_clear_error(face):
    with pytest.raises(ValueError, match="color_reference"):
        T.ColorTransfer(p=1)(image=face)
    with pytest.raises(ValueError, match="blend_source"):
        T.PyramidBlend(p=1)(image=face, mask=np.zeros(face.shape[:2], np.uint8))


def test_float_images_are_refused_naming_the_image(face):
    with pytest.raises(ValueError, match="image: expected dtype uint8"):
        T.BokehBlur(p=1)(image=face.astype(np.float32) / 255)


# ------------------------------------------------------------------ validation
BAD = [
    (T.DualBlur, {"iterations": (0, 2)}, "iterations"),
    (T.DualBlur, {"iterations": 2.5}, "iterations"),
    (T.DualBlur, {"offset": (0.0, 1.0)}, "offset"),
    (T.BokehBlur, {"radius": (3.0, 1.0)}, "radius"),
    (T.BokehBlur, {"radius": 100.0}, "radius"),
    (T.TiltShiftBlur, {"band_center": (-0.1, 0.5)}, "band_center"),
    (T.TiltShiftBlur, {"band_width": 1.5}, "band_width"),
    (T.TiltShiftBlur, {"max_sigma": (1.0, 40.0)}, "max_sigma"),
    (T.TiltShiftBlur, {"angle": (float("nan"), 1.0)}, "angle"),
    (T.GuidedSmooth, {"radius": (0, 4)}, "radius"),
    (T.GuidedSmooth, {"radius": 2.5}, "radius"),
    (T.GuidedSmooth, {"strength": (0.0, 10.0)}, "strength"),
    (T.GuidedSmooth, {"strength": 300.0}, "strength"),
    (T.JpegRatio, {"ratio": (0.0, 0.1)}, "ratio"),
    (T.JpegRatio, {"ratio": 1.5}, "ratio"),
    (T.ColorTransfer, {"method": "lab"}, "method"),
    (T.ColorTransfer, {"method": ()}, "method"),
    (T.ColorTransfer, {"n_iter": (0, 3)}, "n_iter"),
    (T.PoissonBlend, {"mode": ("normal", "average")}, "mode"),
    (T.PoissonBlend, {"domain": "everywhere"}, "domain"),
    (T.PyramidBlend, {"levels": (0, 3)}, "levels"),
    (T.WaveletBlend, {"levels": (4, 2)}, "levels"),
    (T.WaveletBlend, {"wavelet": "morlet"}, "wavelet"),  # continuous, not discrete
    (T.SelfBlend, {"recipe": "no-such-recipe"}, "recipe"),
    (T.SelfBlend, {"size": 4}, "size"),
    (T.SelfBlend, {"landmarks": "guess"}, "landmarks"),
    (T.SelfBlend, {"retries": 0}, "retries"),
    (T.SelfBlend, {"on_failure": "ignore"}, "on_failure"),
    (T.DualBlur, {"p": 1.5}, "p"),
]


@pytest.mark.parametrize("cls, kwargs, name", BAD, ids=[f"{c.__name__}-{n}-{i}" for i, (c, _, n) in enumerate(BAD)])
def test_invalid_parameters_raise_value_error_naming_the_parameter(cls, kwargs, name):
    with pytest.raises(ValueError, match=rf"(?m)^{name}\b"):
        cls(**kwargs)


def test_valid_edges_are_accepted():
    T.DualBlur(iterations=8, offset=8.0)
    T.BokehBlur(radius=64.0)
    T.GuidedSmooth(radius=(1, 16), strength=255.0)
    T.JpegRatio(ratio=1.0)
    T.TiltShiftBlur(band_center=(0.0, 1.0), band_width=0.0, max_sigma=0.0, angle=(-180, 180))
    T.SelfBlend(size=None)


# ------------------------------------------------------------------ pipelines
def _pipeline(seed: int | None = None) -> A.Compose:
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        T.ColorTransfer(p=0.7),
        T.PoissonBlend(p=0.3),
        T.PyramidBlend(p=0.3),
        T.WaveletBlend(wavelet=("haar", "db2"), p=0.3),
        A.OneOf([T.DualBlur(p=1), T.BokehBlur(p=1), T.TiltShiftBlur(p=1), T.GuidedSmooth(p=1)], p=0.8),
        T.JpegRatio(p=0.5),
    ], seed=seed)


def _calls(pipe, face, other, disc, n=6):
    return [pipe(image=face, color_reference=other, blend_source=other, mask=disc)["image"] for _ in range(n)]


def test_same_seed_gives_identical_outputs_in_compose(face, other, disc):
    first = _calls(_pipeline(seed=11), face, other, disc)
    second = _calls(_pipeline(seed=11), face, other, disc)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in first}) > 1  # calls differ from each other
    other_seed = _calls(_pipeline(seed=12), face, other, disc)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other_seed))


def test_seeded_compose_does_not_tie_our_transforms_to_albumentations_ones():
    """A.Compose(seed=s) seeds every child with s; ours derive their own stream, so a flip
    does not come with every DualBlur (nor with every self-blend)."""
    small = np.zeros((32, 32, 3), np.uint8)
    small[8:24, 8:16] = 200
    pipe = A.Compose([A.HorizontalFlip(p=0.5), T.DualBlur(p=0.5), T.BokehBlur(p=0.5)], seed=0,
                     save_applied_params=True)
    combos = {tuple(name for name, _ in pipe(image=small)["applied_transforms"]) for _ in range(64)}
    assert len(combos) == 8  # every subset of the three occurs


def test_to_dict_from_dict_round_trip_gives_identical_outputs(face, other, disc, landmarks):
    pipe = _pipeline()
    pipe.transforms.append(T.SelfBlend(recipe="self-blend", size=96, p=0.5))
    text = json.dumps(A.to_dict(pipe))  # plain JSON, as A.save writes it
    restored = A.from_dict(json.loads(text))
    assert json.loads(json.dumps(A.to_dict(restored))) == json.loads(text)
    names = [t.__class__.__name__ for t in restored.transforms]
    assert names[1:5] == ["ColorTransfer", "PoissonBlend", "PyramidBlend", "WaveletBlend"]
    assert isinstance(restored.transforms[-1], T.SelfBlend) and restored.transforms[-1].size == 96
    pipe.set_random_seed(3)
    restored.set_random_seed(3)
    for _ in range(5):
        a = pipe(image=face, color_reference=other, blend_source=other, mask=disc, landmarks=landmarks)
        b = restored(image=face, color_reference=other, blend_source=other, mask=disc, landmarks=landmarks)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])


def test_replay_compose_replays_exactly(face, landmarks):
    pipe = A.ReplayCompose([T.SelfBlend(size=96, p=1), T.DualBlur(p=1), T.JpegRatio(p=1)])
    pipe.set_random_seed(2)
    zeros = np.zeros(face.shape[:2], np.uint8)
    out = pipe(image=face, landmarks=landmarks, mask=zeros)
    again = A.ReplayCompose.replay(out["replay"], image=face, landmarks=landmarks, mask=zeros)
    np.testing.assert_array_equal(out["image"], again["image"])
    np.testing.assert_array_equal(out["mask"], again["mask"])


# ------------------------------------------------------------------ self-blend
@pytest.mark.parametrize("seed", range(6))
def test_self_blend_mask_is_nonzero_where_the_image_changed(seed, face, landmarks):
    pipe = A.Compose([T.SelfBlend(size=128, p=1)], seed=seed, save_applied_params=True)
    out = pipe(image=face, landmarks=landmarks, mask=np.zeros(face.shape[:2], np.uint8))
    fake, mask = out["image"], out["mask"]
    assert fake.shape == face.shape and fake.dtype == np.uint8
    assert mask.shape == face.shape[:2] and mask.dtype == np.uint8
    changed = (fake != face).any(axis=-1)
    assert changed.any() and mask.max() >= 128
    assert (mask[changed] > 0).all()
    # the mask stays on the face: nothing outside the landmarks' box grown by half its size
    x0, y0 = landmarks.min(0) - 0.5 * np.ptp(landmarks, 0)
    x1, y1 = landmarks.max(0) + 0.5 * np.ptp(landmarks, 0)
    ys, xs = np.nonzero(mask)
    assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
    # the recorded plan is the one self_blend renders for the drawn seed
    (name, params), = out["applied_transforms"]
    assert name == "SelfBlend" and params["plan"]["pairing"] == "self"


def test_self_blend_output_equals_the_library_call(face, landmarks):
    t = T.SelfBlend(recipe="self-blend", size=128, p=1)
    t.set_random_seed(4)
    for _ in range(3):
        out, params = _run(t, face, landmarks=landmarks, mask=np.zeros(face.shape[:2], np.uint8))
        fake, mask, plan = T.self_blend(face, landmarks, params["seed"], recipe="self-blend", size=128)
        np.testing.assert_array_equal(out["image"], fake)
        np.testing.assert_array_equal(out["mask"], mask)
        assert params["plan"] == plan
        if plan["index"] == 0:  # the first plan is make_fake's (the recipe without target_degrade/post)
            _, _, crop_mask, made = make_fake(face, recipe=T._pipeline_recipe("self-blend"), seed=params["seed"],
                                              size=128, target_landmarks=landmarks)
            assert made == plan and crop_mask.max() >= 128
            assert not plan["post"] and not plan["target_degrade"]


def test_self_blend_landmarks_from_keypoints_or_detection_match(face, landmarks):
    zeros = np.zeros(face.shape[:2], np.uint8)
    by_key = A.Compose([T.SelfBlend(size=96, p=1)], seed=9)(image=face, landmarks=landmarks, mask=zeros)
    by_kp = A.Compose([T.SelfBlend(size=96, landmarks="keypoints", p=1)], seed=9,
                      keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))(
        image=face, keypoints=landmarks, mask=zeros)
    detected = A.Compose([T.SelfBlend(size=96, p=1)], seed=9)(image=face, mask=zeros)
    np.testing.assert_array_equal(by_key["image"], by_kp["image"])
    np.testing.assert_array_equal(by_key["image"], detected["image"])
    np.testing.assert_array_equal(by_key["mask"], detected["mask"])
    assert len(by_kp["keypoints"]) == 468


def test_self_blend_after_a_flip_follows_the_keypoints(face, landmarks):
    pipe = A.Compose([A.HorizontalFlip(p=1), T.SelfBlend(size=96, p=1)], seed=0,
                     keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    out = pipe(image=face, keypoints=landmarks, mask=np.zeros(face.shape[:2], np.uint8))
    flipped = np.ascontiguousarray(face[:, ::-1])
    changed = (out["image"] != flipped).any(-1)
    assert changed.any() and (out["mask"][changed] > 0).all()
    # the mask sits on the flipped face: its centre is near the flipped landmarks' centre
    ys, xs = np.nonzero(out["mask"])
    assert abs(xs.mean() - (SIDE - 1 - landmarks[:, 0].mean())) < 10


def test_self_blend_not_applied_leaves_image_and_mask(face, landmarks):
    mask = np.zeros(face.shape[:2], np.uint8)
    out = A.Compose([T.SelfBlend(p=0)], seed=0)(image=face, landmarks=landmarks, mask=mask)
    np.testing.assert_array_equal(out["image"], face)
    assert not out["mask"].any()


def test_self_blend_without_a_face(face):
    blank = np.full_like(face, 128)
    out = T.SelfBlend(p=1, on_failure="skip")(image=blank, mask=np.full(face.shape[:2], 7, np.uint8))
    np.testing.assert_array_equal(out["image"], blank)
    assert out["mask"].shape == face.shape[:2] and not out["mask"].any()  # labelled real
    with pytest.raises(ValueError, match="no face found"):
        T.SelfBlend(p=1)(image=blank)
    with pytest.raises(ValueError, match="keypoints"):
        T.SelfBlend(landmarks="keypoints", p=1)(image=face, keypoints=np.zeros((5, 2), np.float32))


def test_self_blend_native_resolution(face, landmarks):
    fake, mask, plan = T.self_blend(face, landmarks, seed=1, size=None)
    side = round(plan["crop_scale"] * np.ptp(landmarks, 0).max())
    assert plan["size"] == side
    changed = (fake != face).any(-1)
    assert changed.any() and (mask[changed] > 0).all()


# ------------------------------------------------------------------ documented differences
def test_documented_relations_to_albumentations(face):
    from albumentations.augmentations.blur import functional as fblur
    from albumentations.augmentations.pixel import functional as fpixel

    swapped = np.ascontiguousarray(face[..., ::-1])
    a_jpeg = fpixel.image_compression(face, 60, ".jpg")
    assert not np.array_equal(a_jpeg, degrade.jpeg(face, 60))
    np.testing.assert_array_equal(a_jpeg, degrade.jpeg(swapped, 60)[..., ::-1])
    np.testing.assert_array_equal(fblur.box_blur(face, 5), degrade.mean_blur(face, 5))
    np.testing.assert_array_equal(fpixel.downscale(face, 0.5, cv2.INTER_LINEAR, cv2.INTER_LINEAR),
                                  degrade.downup(face, 0.5, "linear"))
    a_gauss = A.GaussianBlur(blur_limit=(5, 5), sigma_limit=(1.2, 1.2), p=1)(image=face)["image"]
    assert np.abs(a_gauss.astype(int) - degrade.gaussian_blur(face, 5, 1.2)).max() <= 1


# ------------------------------------------------------------------ the example
def test_example_runs_and_replays(tmp_path, load_script):
    example = load_script("examples/albumentations_pipeline.py")
    args = ["--n", "6", "--side", "96", "--seed", "0", "--out", str(tmp_path / "sheet.png"),
            "--save", str(tmp_path / "pipe.json")]
    first = example.main(args)
    again = example.main(args)
    assert (tmp_path / "sheet.png").stat().st_size > 0
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        blended = any(name == "SelfBlend" for name, _ in a["applied_transforms"])
        assert blended == bool(a["mask"].any())  # the label is the mask
    assert {bool(a["mask"].any()) for a in first} == {True, False}
    restored = A.load(str(tmp_path / "pipe.json"), data_format="json")
    assert [t.__class__.__name__ for t in restored.transforms] == [
        t.__class__.__name__ for t in example.build_pipeline().transforms]
