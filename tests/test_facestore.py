"""The run-wide face store: exact round trips, unreadable files treated as absent, shared
between face caches (processes), and byte-identical generation outputs with it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from synth import writer
from synth.facestore import FaceStore
from synth.generate import generate
from synth.index import load_index
from synth.png import encode_png
from synth.pool import FacePool
from synth.render import FaceCache, render

SIZE = 64


def _face(rng, size=SIZE):
    crop = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    lm = rng.uniform(0, size, (468, 2)).astype(np.float32)
    region = (rng.random((size, size)) > 0.5).astype(np.uint8) * 255
    return crop, lm, region


def test_face_round_trip_is_exact(tmp_path):
    store, rng = FaceStore(tmp_path / "s"), np.random.default_rng(0)
    assert store.load_face(7, SIZE, 1.3) is None
    crop, lm, region = _face(rng)
    store.save_face(7, SIZE, 1.3, crop, lm, region)
    got = store.load_face(7, SIZE, 1.3)
    for a, b in zip(got, (crop, lm, region)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # other size or crop scale: another entry
    assert store.load_face(7, SIZE, 1.5) is None and store.load_face(7, 2 * SIZE, 1.3) is None


def test_binary_occlusion_is_stored_as_bool_and_comes_back_float32(tmp_path):
    store, rng = FaceStore(tmp_path / "s"), np.random.default_rng(1)
    binary = (rng.random((SIZE, SIZE)) > 0.7).astype(np.float32)
    soft = rng.random((SIZE, SIZE)).astype(np.float32)
    store.save_occlusion(3, SIZE, 1.3, "skin", binary)
    store.save_occlusion(4, SIZE, 1.3, "skin", soft)
    for n, want in ((3, binary), (4, soft)):
        got = store.load_occlusion(n, SIZE, 1.3, "skin")
        assert got.dtype == np.float32 and np.array_equal(got, want)
    assert store.load_occlusion(3, SIZE, 1.3, "none") is None
    files = {p.name: p.stat().st_size for p in (tmp_path / "s").rglob("*.npy")}
    assert files["3.occ-skin.npy"] < files["4.occ-skin.npy"] / 3  # 1 byte per pixel, not 4


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_unreadable_entries_are_absent(tmp_path, damage):
    store, rng = FaceStore(tmp_path / "s"), np.random.default_rng(2)
    store.save_face(1, SIZE, 1.3, *_face(rng))
    store.save_png(1, SIZE, 1.3, encode_png(_face(rng)[0]))
    for path in (tmp_path / "s").rglob("1.*"):
        data = path.read_bytes()
        path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"x" * 100, "empty": b""}[damage])
    assert store.load_face(1, SIZE, 1.3) is None
    assert store.load_png(1, SIZE, 1.3) is None


def test_wrong_shape_in_store_is_absent(tmp_path):
    store, rng = FaceStore(tmp_path / "s"), np.random.default_rng(3)
    crop, lm, region = _face(rng, size=32)
    store.save_face(0, SIZE, 1.3, crop, lm, region)  # filed under SIZE but 32 px
    assert store.load_face(0, SIZE, 1.3) is None


def test_second_cache_reads_the_store_instead_of_the_image(tmp_path):
    from skimage import data

    from synth.face import get_detector

    image = data.astronaut()
    lm = get_detector().detect(image).landmarks
    loads = []

    def loader(key):
        loads.append(key)
        return image

    pool = FacePool(keys=["a"], landmarks=lm[None], loader=loader)
    store = FaceStore(tmp_path / "s")
    first = FaceCache(pool, store=store)
    face = first.face("a", SIZE, 1.3)
    occ = first.occlusion("a", SIZE, 1.3, "skin")
    png = first.crop_png("a", SIZE, 1.3)
    assert loads == ["a"]
    other = FaceCache(pool, store=store)  # as another worker process would
    again = other.face("a", SIZE, 1.3)
    assert loads == ["a"], "the second cache decoded the image again"
    assert np.array_equal(again.crop, face.crop) and np.array_equal(again.region, face.region)
    assert np.array_equal(again.landmarks, face.landmarks) and again.landmarks.dtype == np.float32
    assert np.array_equal(other.occlusion("a", SIZE, 1.3, "skin"), occ)
    assert other.crop_png("a", SIZE, 1.3) == png == encode_png(face.crop)
    plain = FaceCache(pool).face("a", SIZE, 1.3)  # no store: the same arrays
    assert np.array_equal(plain.crop, face.crop) and np.array_equal(plain.region, face.region)


def test_generation_with_the_store_writes_the_bytes_of_the_plain_path(tmp_path):
    """Every file must be encode_png of what render gives without a store, and the store is
    gone once the run is complete."""
    out = tmp_path / "run"
    report = generate(out, 8, size=SIZE, backend="serial", progress=False, face_store="on")  # 1 face
    assert report["complete"] and not (out / "cache").exists()
    faces = FaceCache(FacePool.from_index(load_index(out / "index")))
    checked, plain_reals = 0, 0
    for line in (out / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["status"] != "ok":
            continue
        for kind, img in zip(writer.KINDS, render(rec["plan"], faces)):
            assert (out / rec[kind]).read_bytes() == writer.encode_image(kind, img), (rec["id"], kind)
        checked += 1
        plain_reals += not rec["plan"]["post"]  # these reals were written from the stored PNG
    assert checked >= 6 and plain_reals >= 1


def test_auto_store_policy_and_bad_value(tmp_path, monkeypatch):
    """auto: on when every face is drawn FACE_STORE_MIN_USES times; off: never."""
    from synth import generate as gen

    made = []
    real = gen._face_store
    monkeypatch.setattr(gen, "_face_store", lambda out, h: made.append(out) or real(out, h))
    generate(tmp_path / "few", gen.FACE_STORE_MIN_USES - 1, size=SIZE, backend="serial", progress=False)
    assert made == []
    generate(tmp_path / "many", gen.FACE_STORE_MIN_USES, size=SIZE, backend="serial", progress=False)
    assert made == [tmp_path / "many"]
    generate(tmp_path / "off", 8, size=SIZE, backend="serial", progress=False, face_store="off")
    assert len(made) == 1
    with pytest.raises(ValueError, match="face_store: expected 'auto', 'on' or 'off', got 'yes'"):
        generate(tmp_path / "bad", 2, size=SIZE, backend="serial", progress=False, face_store="yes")


def test_face_record_with_extra_bytes_or_corrupt_header_is_absent(tmp_path):
    store, rng = FaceStore(tmp_path / "s"), np.random.default_rng(4)
    store.save_face(2, SIZE, 1.3, *_face(rng))
    (path,) = (tmp_path / "s").rglob("2.face.*")
    data = path.read_bytes()
    path.write_bytes(data + b"\0")  # longer than its header says
    assert store.load_face(2, SIZE, 1.3) is None
    path.write_bytes(data[:8] + (2**31).to_bytes(4, "little") + data[12:])  # absurd landmark count
    assert store.load_face(2, SIZE, 1.3) is None
    path.write_bytes(data)
    assert store.load_face(2, SIZE, 1.3) is not None
