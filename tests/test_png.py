import io

import cv2
import numpy as np
import pytest
from PIL import Image

from synth.png import encode_png


@pytest.mark.parametrize("strategy", ["huffman", "rle"])
@pytest.mark.parametrize("shape", [(37, 53), (64, 48, 3), (16, 16, 4), (1, 1, 3)])
def test_png_round_trips_exactly_through_pil_and_opencv(shape, strategy):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(image, strategy=strategy)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.mode == {2: "L", 3: "RGB", 4: "RGBA"}[len(shape) if len(shape) == 2 else shape[2]]
        np.testing.assert_array_equal(np.asarray(im), image)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        decoded = decoded[..., [2, 1, 0, 3][: image.shape[2]]]  # OpenCV returns BGR(A)
    np.testing.assert_array_equal(decoded, image)


def test_png_compresses_a_smooth_face_image(astro):
    data = encode_png(astro)
    assert len(data) < 0.7 * astro.nbytes  # deflate + Up filter actually compress


def test_rle_codes_a_mask_smaller_and_exactly():
    yy, xx = np.mgrid[:128, :128]
    mask = cv2.GaussianBlur(((yy - 64) ** 2 + (xx - 64) ** 2 < 40 ** 2).astype(np.uint8) * 255, (0, 0), 3)
    rle, huffman = encode_png(mask, strategy="rle"), encode_png(mask)
    assert len(rle) < 0.8 * len(huffman)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(rle, np.uint8), cv2.IMREAD_UNCHANGED), mask)
    with pytest.raises(ValueError, match="strategy: expected one of"):
        encode_png(mask, strategy="lz4")


def test_png_accepts_non_contiguous_views(astro):
    view = astro[::2, ::2, ::-1]
    with Image.open(io.BytesIO(encode_png(view))) as im:
        np.testing.assert_array_equal(np.asarray(im), view)


@pytest.mark.parametrize("bad, msg", [(np.zeros((4, 4), np.float32), "uint8"),
                                      (np.zeros((4, 4, 2), np.uint8), "shape"),
                                      (np.zeros((0, 4), np.uint8), "empty")])
def test_png_rejects_bad_input(bad, msg):
    with pytest.raises(ValueError, match=msg):
        encode_png(bad)
