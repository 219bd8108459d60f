import cv2
import numpy as np
import pytest

from synth import face
from synth.face import (
    FACE_OVAL,
    LEFT_EYE,
    LIPS,
    NOSE,
    RIGHT_EYE,
    affine_transform,
    crop_face,
    get_detector,
    similarity_transform,
    transform_points,
    warp_image,
)


@pytest.fixture(scope="module")
def result(astro):
    return get_detector().detect(astro)


def test_astronaut_landmarks(astro, result):
    assert result is not None
    lm = result.landmarks
    assert lm.shape == (468, 2) and lm.dtype == np.float32
    assert (lm >= 0).all() and (lm[:, 0] < 512).all() and (lm[:, 1] < 512).all()
    assert result.n_faces == 1 and not result.padded
    eyes_y = lm[np.concatenate([LEFT_EYE, RIGHT_EYE]), 1].mean()
    nose, mouth = lm[NOSE].mean(0), lm[LIPS].mean(0)
    assert eyes_y < nose[1] < mouth[1]
    # subject's right eye is on the image left for a frontal face; nose between the eyes
    re_x, le_x = lm[RIGHT_EYE, 0].mean(), lm[LEFT_EYE, 0].mean()
    assert re_x < nose[0] < le_x
    # the face of the astronaut is in the upper middle of the picture
    x0, y0, x1, y1 = result.box
    assert (x0, y0, x1, y1) == pytest.approx((*lm.min(0), *lm.max(0)))
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200


def test_no_face_returns_none():
    det = get_detector()
    assert det.detect(np.zeros((256, 256, 3), np.uint8)) is None
    assert det.detect(np.full((300, 200, 3), 180, np.uint8)) is None
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert det.detect(noise) is None


def test_detect_validates_input():
    with pytest.raises(ValueError, match="uint8"):
        get_detector().detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        get_detector().detect(np.zeros((64, 64), np.uint8))


def test_tight_crop_and_large_image(astro, result):
    det = get_detector()
    x0, y0, x1, y1 = (int(round(v)) for v in result.box)
    tight = np.ascontiguousarray(astro[y0 - 5:y1 + 5, x0 - 5:x1 + 5])
    r = det.detect(tight)
    assert r is not None
    assert np.abs(r.landmarks - (result.landmarks - [x0 - 5, y0 - 5])).mean() < 4
    # large images are downscaled for detection and the points mapped back
    big = cv2.resize(astro, (1536, 1536), interpolation=cv2.INTER_LINEAR)
    rb = det.detect(big)
    assert rb is not None
    expect = (result.landmarks + 0.5) * 3 - 0.5
    assert np.abs(rb.landmarks - expect).mean() < 3 * 1.5


def test_detector_context_manager(astro):
    with face.LandmarkDetector(max_num_faces=1, pad=0.0) as det:
        assert det.detect(astro) is not None
    with pytest.raises(ValueError, match="closed"):
        det.detect(astro)
    with pytest.raises(ValueError, match="pad"):
        face.LandmarkDetector(pad=-1)


def test_get_detector_is_cached():
    assert get_detector() is get_detector()


def test_groups_match_mediapipe_connections():
    from mediapipe.python.solutions import face_mesh_connections as c

    for name, edges in [("face_oval", c.FACEMESH_FACE_OVAL), ("left_eye", c.FACEMESH_LEFT_EYE),
                        ("right_eye", c.FACEMESH_RIGHT_EYE), ("left_brow", c.FACEMESH_LEFT_EYEBROW),
                        ("right_brow", c.FACEMESH_RIGHT_EYEBROW), ("nose", c.FACEMESH_NOSE), ("lips", c.FACEMESH_LIPS)]:
        assert set(face.GROUPS[name].tolist()) == {i for e in edges for i in e}
        # contours are walks along the connections
        for loop in face.CONTOURS[name]:
            for a, b in zip(loop[:-1], loop[1:]):
                assert (a, b) in edges or (b, a) in edges
    oval = FACE_OVAL.tolist()
    assert len(oval) == 36 and ((oval[-1], oval[0]) in c.FACEMESH_FACE_OVAL or (oval[0], oval[-1]) in c.FACEMESH_FACE_OVAL)


def _rot_scale_shift(angle_deg, scale, shift):
    t = np.radians(angle_deg)
    return np.array([[scale * np.cos(t), -scale * np.sin(t), shift[0]],
                     [scale * np.sin(t), scale * np.cos(t), shift[1]]])


def test_similarity_transform_recovers_known_map(result):
    src = result.landmarks
    m_true = _rot_scale_shift(23.0, 1.7, (-40.0, 12.5))
    dst = transform_points(src, m_true)
    m = similarity_transform(src, dst)
    assert m.shape == (2, 3) and m.dtype == np.float64
    np.testing.assert_allclose(m, m_true, atol=1e-4)
    assert np.abs(transform_points(src, m) - dst).max() < 0.5
    # noisy targets: still the least-squares answer, close to the truth
    noisy = dst + np.random.default_rng(0).normal(0, 1.0, dst.shape)
    np.testing.assert_allclose(similarity_transform(src, noisy), m_true, atol=0.05 * np.abs(m_true).max())


def test_similarity_transform_never_reflects():
    src = np.array([[0, 0], [3, 0], [0, 1], [1, 2], [4, 3]], float)
    m = similarity_transform(src, src * [-1, 1])
    a = m[:, :2]
    assert a[0, 0] == pytest.approx(a[1, 1]) and a[0, 1] == pytest.approx(-a[1, 0])  # rotation x scale
    assert np.linalg.det(a) >= 0


def test_affine_transform_recovers_known_map(result):
    src = result.landmarks
    m_true = np.array([[1.2, 0.3, 5.0], [-0.1, 0.8, -7.0]])
    m = affine_transform(src, transform_points(src, m_true))
    np.testing.assert_allclose(m, m_true, atol=1e-4)


def test_transform_errors():
    with pytest.raises(ValueError, match="same shape"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="identical"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="collinear"):
        affine_transform(np.array([[0, 0], [1, 1], [2, 2]], float), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="matrix"):
        transform_points(np.zeros((3, 2)), np.eye(3))


def test_warp_image_moves_content_like_points():
    img = np.zeros((100, 120, 3), np.uint8)
    cv2.circle(img, (30, 40), 4, (255, 255, 255), -1)
    m = _rot_scale_shift(30.0, 1.5, (20.0, -5.0))
    out = warp_image(img, m, (160, 140))
    assert out.shape == (140, 160, 3)
    ys, xs = np.nonzero(out[..., 0] > 127)
    expect = transform_points(np.array([[30.0, 40.0]]), m)[0]
    assert abs(xs.mean() - expect[0]) < 0.5 and abs(ys.mean() - expect[1]) < 0.5


def test_crop_face_consistent(astro, result):
    lm = result.landmarks
    for scale, size in [(1.3, 256), (2.0, 128), (1.5, 64)]:
        crop, lm_c, m = crop_face(astro, lm, scale=scale, size=size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        assert lm_c.dtype == np.float32
        np.testing.assert_allclose(transform_points(lm, m), lm_c, atol=1e-4)
        # centred, with the face occupying 1/scale of the side
        box = np.concatenate([lm_c.min(0), lm_c.max(0)])
        assert abs((box[0] + box[2]) / 2 - (size - 1) / 2) < 1 and abs((box[1] + box[3]) / 2 - (size - 1) / 2) < 1
        assert max(box[2] - box[0], box[3] - box[1]) == pytest.approx(size / scale, rel=0.01)


def test_crop_face_pixels_follow_matrix(astro, result):
    # the anti-aliased (downscaling) path and a direct warp agree on a smooth image
    smooth = cv2.GaussianBlur(astro, (0, 0), 4)
    crop, _, m = crop_face(smooth, result.landmarks, scale=1.5, size=64)
    direct = cv2.warpAffine(smooth, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(crop.astype(int) - direct).mean() < 2.5
    # the detector finds the landmarks where crop_face says they are
    crop, lm_c, _ = crop_face(astro, result.landmarks, scale=1.6, size=256)
    r = get_detector().detect(crop)
    assert np.abs(r.landmarks - lm_c).mean() < 3


def test_crop_face_outside_image(astro, result):
    shifted = result.landmarks - result.landmarks.min(0) - 20  # face partly off the top-left corner
    for border in ("replicate", "constant", "reflect"):
        crop, lm_c, m = crop_face(astro, shifted, scale=2.0, size=128, border=border)
        assert crop.shape == (128, 128, 3)
        np.testing.assert_allclose(transform_points(shifted, m), lm_c, atol=1e-4)
    crop, _, _ = crop_face(astro, shifted, scale=2.0, size=128, border="constant")
    assert (crop[:10, :10] == 0).all()


def test_crop_face_validation(astro, result):
    with pytest.raises(ValueError, match="scale"):
        crop_face(astro, result.landmarks, scale=0.5)
    with pytest.raises(ValueError, match="scale"):
        crop_face(astro, result.landmarks, scale=3.5)
    with pytest.raises(ValueError, match="landmarks"):
        crop_face(astro, result.landmarks[:10])
    with pytest.raises(ValueError, match="NaN"):
        crop_face(astro, np.full((468, 2), np.nan))
    with pytest.raises(ValueError, match="border"):
        crop_face(astro, result.landmarks, border="wrap")
