import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

import synth.index as index_mod
from synth.index import build_index, load_index, scan_files

EXPECTED = {
    "a.jpg": "ok",
    "sub/b.png": "ok",
    "sub/deeper/gray.png": "ok",
    "rgba.png": "ok",
    "blank.png": "no_face",
    "corrupt.jpg": "unreadable",
    "fake.png": "unreadable",
    "tiny.bmp": "unreadable",
}


@pytest.fixture()
def src(tmp_path):
    astro = data.astronaut()
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    cv2.imwrite(str(root / "a.jpg"), astro[..., ::-1])
    cv2.imwrite(str(root / "sub" / "b.png"), astro[::2, ::2, ::-1].copy())
    cv2.imwrite(str(root / "sub" / "deeper" / "gray.png"), cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY))
    rgba = np.dstack([astro, np.full(astro.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    cv2.imwrite(str(root / "blank.png"), np.full((100, 120, 3), 90, np.uint8))
    ok, buf = cv2.imencode(".jpg", astro)
    (root / "corrupt.jpg").write_bytes(buf.tobytes()[: len(buf) // 3])
    (root / "fake.png").write_text("not an image")
    cv2.imwrite(str(root / "tiny.bmp"), np.zeros((10, 10, 3), np.uint8))
    (root / "notes.txt").write_text("hello")
    (root / "landmarks.csv").write_text("x,y\n")
    (root / ".hidden" / "c.jpg").write_bytes(buf.tobytes())
    (root / ".DS_Store").write_bytes(b"\0")
    return root


class CountingDetector:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def detect(self, image):
        self.calls += 1
        return self.inner.detect(image)


@pytest.fixture()
def counter(monkeypatch):
    c = CountingDetector(index_mod.get_detector())
    monkeypatch.setattr(index_mod, "get_detector", lambda: c)
    return c


def test_scan_files(src):
    images, others = scan_files(src)
    assert images == sorted(EXPECTED)
    assert others == ["landmarks.csv", "notes.txt"]


def test_build_statuses_and_load(src, tmp_path, counter):
    out = tmp_path / "idx"
    summary = build_index(src, out, workers=1, progress=False, chunk_size=3)
    assert summary["total"] == len(EXPECTED) and summary["processed"] == len(EXPECTED) and summary["reused"] == 0
    assert (summary["ok"], summary["no_face"], summary["unreadable"]) == (4, 1, 3)
    assert summary["non_image"] == 2 and summary["non_image_examples"] == ["landmarks.csv", "notes.txt"]
    assert counter.calls == 5  # only readable images reach the detector
    assert len(list(out.glob("part-*.npz"))) == 3  # 8 files in chunks of 3

    ix = load_index(out)
    assert len(ix) == len(EXPECTED)
    assert ix.root == src.resolve() and ix.meta["root"] == str(src.resolve())
    statuses = {r["relpath"]: r["status"] for r in ix.records}
    assert statuses == EXPECTED
    assert [r["relpath"] for r in ix.records] == sorted(EXPECTED)
    reasons = {r["relpath"]: r["reason"] for r in ix.records}
    assert "truncated" in reasons["corrupt.jpg"]
    assert "not a recognised image" in reasons["fake.png"]
    assert "too small" in reasons["tiny.bmp"]
    assert reasons["blank.png"] == "no face detected" and reasons["a.jpg"] is None
    assert ix.ok.dtype == bool and ix.ok.tolist() == [s == "ok" for s in statuses.values()]
    np.testing.assert_array_equal(ix.ok_indices(), np.flatnonzero(ix.ok))
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in ix.paths)
    assert ix.paths[ix.find("sub/deeper/gray.png")] == str(src.resolve() / "sub" / "deeper" / "gray.png")
    assert ix.landmarks.shape == (8, 468, 2) and ix.landmarks.dtype == np.float32
    assert np.isfinite(ix.landmarks[ix.ok]).all() and np.isnan(ix.landmarks[~ix.ok]).all()
    assert np.isfinite(ix.boxes[ix.ok]).all() and np.isnan(ix.boxes[~ix.ok]).all()
    i = ix.find("a.jpg")
    rec = ix.records[i]
    assert (rec["width"], rec["height"], rec["n_faces"]) == (512, 512, 1)
    np.testing.assert_allclose(rec["box"], [*ix.landmarks[i].min(0), *ix.landmarks[i].max(0)], atol=1e-2)
    # the half-size copy has half-size landmarks
    j = ix.find("sub/b.png")
    assert np.abs((ix.landmarks[j] + 0.5) * 2 - 0.5 - ix.landmarks[i]).mean() < 3
    json.dumps(ix.records)  # plain JSON records


def test_rerun_is_resumable(src, tmp_path, counter):
    out = tmp_path / "idx"
    build_index(src, out, workers=1, progress=False, chunk_size=3)
    parts = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.npz")}
    counter.calls = 0
    again = build_index(src, out, workers=1, progress=False)
    assert again["processed"] == 0 and again["reused"] == len(EXPECTED) and counter.calls == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.npz")} == parts

    # a new file and a changed file are (re)processed, nothing else
    cv2.imwrite(str(src / "sub" / "new.jpg"), data.astronaut()[..., ::-1])
    cv2.imwrite(str(src / "blank.png"), data.astronaut()[..., ::-1])
    os.utime(src / "blank.png", ns=(1, 1))  # make sure the mtime differs
    third = build_index(src, out, workers=1, progress=False)
    assert third["processed"] == 2 and counter.calls == 2
    ix = load_index(out)
    assert len(ix) == len(EXPECTED) + 1
    assert ix.records[ix.find("sub/new.jpg")]["status"] == "ok"
    assert ix.records[ix.find("blank.png")]["status"] == "ok"  # newer record wins


def test_killed_run_loses_only_missing_chunks(src, tmp_path, counter):
    out = tmp_path / "idx"
    build_index(src, out, workers=1, progress=False, chunk_size=3)
    last = sorted(out.glob("part-*.npz"))[-1]
    with np.load(last) as z:
        lost = len(json.loads(str(z["records"])))
    last.unlink()  # as if the job died before writing this chunk
    (out / ".part-00009.npz.123.tmp").write_bytes(b"half")  # stray temp file of a killed write
    counter.calls = 0
    s = build_index(src, out, workers=1, progress=False)
    assert s["processed"] == lost
    assert {r["relpath"]: r["status"] for r in load_index(out).records} == EXPECTED


def test_parallel_workers_match_serial(src, tmp_path):
    serial = tmp_path / "s"
    build_index(src, serial, workers=1, progress=False)
    par = tmp_path / "p"
    s = build_index(src, par, workers=2, progress=False, chunk_size=2)
    assert s["processed"] == len(EXPECTED)
    a, b = load_index(serial), load_index(par)
    assert [r["status"] for r in a.records] == [r["status"] for r in b.records]
    np.testing.assert_allclose(a.landmarks[a.ok], b.landmarks[b.ok], atol=1e-3)


def test_index_errors(src, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        build_index(tmp_path / "missing", tmp_path / "idx")
    with pytest.raises(ValueError, match="not an index"):
        load_index(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    out = tmp_path / "idx"
    build_index(other, out, workers=1, progress=False)
    with pytest.raises(ValueError, match="index of"):
        build_index(src, out, workers=1, progress=False)
    with pytest.raises(ValueError, match="workers"):
        build_index(src, tmp_path / "x", workers=0)


def test_index_inside_source_is_skipped(src, counter):
    out = src / "_index"
    build_index(src, out, workers=1, progress=False)
    s = build_index(src, out, workers=1, progress=False)
    assert s["total"] == len(EXPECTED) and s["non_image"] == 2  # meta.json / parts not scanned


def test_bad_symlinks_are_unreadable_once_and_skipped_on_every_rerun(src, tmp_path, counter):
    # #18 item 3: a dangling or self-looping *.jpg symlink broke every rerun (No such file / Errno 40)
    (src / "dangling.jpg").symlink_to(src / "nowhere.jpg")
    (src / "loop.jpg").symlink_to(src / "loop.jpg")
    out = tmp_path / "idx"
    first = build_index(src, out, workers=1, progress=False)
    assert first["unreadable"] == 3 + 2
    reasons = {r["relpath"]: r["reason"] for r in load_index(out).records}
    assert "broken symbolic link" in reasons["dangling.jpg"] and "No such file" in reasons["dangling.jpg"]
    assert "broken symbolic link" in reasons["loop.jpg"]
    calls = counter.calls
    for _ in range(2):
        again = build_index(src, out, workers=1, progress=False)
        assert again["processed"] == 0 and again["unreadable"] == first["unreadable"]
    assert counter.calls == calls
    (src / "dangling.jpg").unlink()  # the link is repaired: the file is indexed again
    (src / "dangling.jpg").symlink_to(src / "a.jpg")
    fixed = build_index(src, out, workers=1, progress=False)
    assert fixed["processed"] == 1 and fixed["ok"] == first["ok"] + 1
