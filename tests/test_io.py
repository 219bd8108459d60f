import json
import os
import pickle
import stat

import cv2
import numpy as np
import pytest
from PIL import Image

from synth.io import (
    ImageReadError,
    atomic_write,
    read_image,
    write_image_atomic,
    write_json_atomic,
    write_png_atomic,
)


def _expect_error(path, fragment, **kw):
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kw)
    assert str(info.value).startswith(str(path)), str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    return info.value


def test_png_roundtrip_exact(tmp_path, astro):
    p = write_png_atomic(tmp_path / "a.png", astro)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (512, 512, 3)
    np.testing.assert_array_equal(out, astro)
    assert [f.name for f in tmp_path.iterdir()] == ["a.png"]  # no temp file left


def test_jpeg_roundtrip_close_and_params(tmp_path, astro):
    p = write_image_atomic(tmp_path / "a.jpg", astro, params=[cv2.IMWRITE_JPEG_QUALITY, 95])
    out = read_image(p)
    assert np.abs(out.astype(int) - astro).mean() < 3
    small = write_image_atomic(tmp_path / "b.jpg", astro, params=[cv2.IMWRITE_JPEG_QUALITY, 20])
    assert small.stat().st_size < p.stat().st_size


def test_write_overwrites_and_writes_gray_masks(tmp_path, astro):
    p = tmp_path / "m.png"
    write_png_atomic(p, astro)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 5:25] = 255
    write_png_atomic(p, mask, fsync=False)
    back = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, mask)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.png"]


def test_write_rejects_bad_input(tmp_path, astro):
    with pytest.raises(ValueError, match="image"):
        write_png_atomic(tmp_path / "x.png", astro.astype(np.float32))
    with pytest.raises(ValueError, match="no extension"):
        write_image_atomic(tmp_path / "noext", astro)
    with pytest.raises(ValueError, match="compression"):
        write_png_atomic(tmp_path / "x.png", astro, compression=12)
    assert list(tmp_path.iterdir()) == []


def test_grayscale_converted_to_rgb(tmp_path, astro):
    gray = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY)
    p = tmp_path / "g.png"
    cv2.imwrite(str(p), gray)
    out = read_image(p)
    assert out.shape == (512, 512, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_and_la_composited_on_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (200, 10, 30)
    rgba[:, :10, 3] = 0      # transparent -> white
    rgba[:, 10:20, 3] = 255  # opaque -> colour
    rgba[:, 20:, 3] = 128    # half -> mix
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[:, :10], 255)
    np.testing.assert_array_equal(out[:, 10:20], np.broadcast_to([200, 10, 30], (40, 10, 3)))
    expect = np.rint((np.array([200, 10, 30]) * 128 + 255 * 127) / 255)
    assert np.abs(out[0, 30].astype(int) - expect).max() <= 1
    la = np.zeros((40, 40, 2), np.uint8)
    la[..., 0] = 50
    la[:, 20:, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert out.shape == (40, 40, 3)
    np.testing.assert_array_equal(out[:, :20], 255)
    np.testing.assert_array_equal(out[:, 20:], 50)


def test_16bit_scaled_not_rejected(tmp_path):
    g16 = np.tile((np.arange(64, dtype=np.uint16) * 1028), (40, 1))
    g16[:, -1] = 65535
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (40, 64, 3)
    np.testing.assert_array_equal(out[0, :-1, 0], np.arange(63) * 4)  # 1028 * k / 257 = 4k
    assert out[0, -1, 0] == 255
    rgb16 = np.zeros((40, 40, 3), np.uint16)
    rgb16[..., 2] = 65535  # BGR order on disk: red channel
    rgb16[..., 0] = 257 * 7
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16)
    out = read_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out[0, 0], [255, 0, 7])


def test_palette_png(tmp_path):
    im = Image.new("P", (40, 40))
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.paste(1, (0, 0, 20, 40))
    im.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[5, 5], [10, 200, 30])
    np.testing.assert_array_equal(out[5, 30], [0, 0, 0])


def test_exif_orientation_applied(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    Image.fromarray(img).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape == (80, 40, 3)
    assert out[5, 20, 0] > 200 and out[75, 20, 0] < 60  # red ends up on top


def test_missing_directory_empty(tmp_path):
    _expect_error(tmp_path / "nope.jpg", "not found")
    _expect_error(tmp_path, "directory")
    (tmp_path / "empty.png").write_bytes(b"")
    _expect_error(tmp_path / "empty.png", "empty")


def test_non_image_and_corrupt(tmp_path, astro):
    (tmp_path / "notes.jpg").write_text("this is text, not a picture\n" * 10)
    _expect_error(tmp_path / "notes.jpg", "not a recognised image")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    _expect_error(tmp_path / "garbage.png", "corrupt")


def test_truncated_files(tmp_path, astro):
    for ext in (".jpg", ".png"):
        ok, buf = cv2.imencode(ext, astro)
        p = tmp_path / f"t{ext}"
        p.write_bytes(buf.tobytes()[: len(buf) // 2])
        _expect_error(p, "truncated")


def test_too_small(tmp_path):
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((16, 100, 3), np.uint8))
    _expect_error(tmp_path / "tiny.png", "too small")


def test_bomb_refused_from_header(tmp_path, astro, bomb_png):
    p = tmp_path / "bomb.png"
    p.write_bytes(bomb_png(60_000, 60_000))  # 3.6e9 pixels declared, ~100 bytes on disk
    _expect_error(p, "too large")
    q = tmp_path / "big.png"
    q.write_bytes(bomb_png(8000, 6000))  # 48 Mpx: below PIL's own guard, above ours
    _expect_error(q, "too large")
    write_png_atomic(tmp_path / "a.png", astro)
    _expect_error(tmp_path / "a.png", "max_pixels=1000", max_pixels=1000)


def test_error_pickles_for_worker_processes(tmp_path):
    err = ImageReadError(tmp_path / "x.jpg", "broken")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ImageReadError) and str(back) == str(err) and back.reason == "broken"


def test_atomic_write_creates_files_like_open_and_cleans_up_on_error(tmp_path):
    # run state, weights, config and checkpoints: readable like any file the user writes (umask
    # applies), never half-written, no temporary file left behind
    old = os.umask(0o022)
    try:
        p = write_json_atomic(tmp_path / "state.json", {"a": 1})
        assert json.loads(p.read_text()) == {"a": 1}
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        os.umask(0o077)
        q = write_json_atomic(tmp_path / "private.json", {})
        assert stat.S_IMODE(q.stat().st_mode) == 0o600
    finally:
        os.umask(old)

    def boom(fh):
        fh.write("partial")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(tmp_path / "state.json", boom)
    assert json.loads((tmp_path / "state.json").read_text()) == {"a": 1}  # the previous version stays
    assert sorted(f.name for f in tmp_path.iterdir()) == ["private.json", "state.json"]
