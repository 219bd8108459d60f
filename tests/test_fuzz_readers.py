"""Seeded fuzz test of the readers users feed files to (#18, last paragraph).

Random bytes, empty files, truncations and byte mutations of a valid PNG and JPEG, and mutated
manifest lines (CSV and JSONL): nothing crashes the run. The long-running readers (``synth`` indexing,
``detector eval``) skip and count every bad file, exactly the ones planted, and keep the good ones;
the manifest readers return samples or raise the documented ``ValueError`` naming the file (and the
line, for ``manifest.jsonl``).

A byte mutation of a valid image may still decode (a flipped JPEG coefficient is just noise): for
those the expected outcome is what :func:`synth.io.read_image` says about the file by itself.
"""
from __future__ import annotations

import json
import re
import struct
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

import synth.index as index_mod
from detector.data import (
    check_samples,
    image_size,
    pair_ids,
    read_image,
    read_manifest_csv,
    read_mask,
    read_synth_dir,
    write_toy_eval_dir,
    write_toy_synth_dir,
)
from synth.index import build_index, load_index
from synth.io import ImageReadError
from synth.io import read_image as synth_read_image

SEED = 20240518
SIDE = 64  # small images: decoding is cheap


# ------------------------------------------------------------------------------------ case makers

@pytest.fixture(scope="module")
def valid():
    """A valid PNG and JPEG (the astronaut at 64 x 64) as bytes."""
    img = cv2.resize(skdata.astronaut(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)[..., ::-1]
    return {"png": cv2.imencode(".png", img)[1].tobytes(),
            "jpg": cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()}


def _png_with_size(png: bytes, w: int, h: int) -> bytes:
    """``png`` with another width/height in IHDR (CRC fixed, so only the size lies)."""
    b = bytearray(png)
    b[16:24] = struct.pack(">II", w, h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def _flip(rng, b: bytes, lo: int = 0) -> bytes:
    """1-4 random bytes of ``b`` (at positions >= lo) replaced by random values."""
    b = bytearray(b)
    for _ in range(int(rng.integers(1, 5))):
        b[int(rng.integers(lo, len(b)))] = int(rng.integers(0, 256))
    return bytes(b)


def bad_images(rng, valid, n_random: int, n_trunc: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of files no image reader may accept: random bytes, empty, truncated (at least the
    last 16 bytes cut), a broken signature, a header claiming a decompression bomb's or a zero size."""
    cases = [(f"random{k}", rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes())
             for k in range(n_random)]
    cases += [("empty", b""), ("one_byte", b"\x89")]
    for fmt, b in valid.items():
        cases += [(f"trunc{k}_{fmt}", b[:int(rng.integers(0, len(b) - 16))]) for k in range(n_trunc)]
        cases.append((f"magic_{fmt}", bytes([b[0] ^ 0xFF]) + b[1:]))  # a broken signature
    cases += [("bomb_png", _png_with_size(valid["png"], 30000, 30000)),
              ("huge_png", _png_with_size(valid["png"], 2 ** 31 - 1, 1)),
              ("zero_png", _png_with_size(valid["png"], 0, SIDE))]
    return cases


def mutated_images(rng, valid, n: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of ``n`` valid files with random bytes replaced: some still decode."""
    fmts = sorted(valid)
    return [(f"mut{k}_{fmts[k % 2]}", _flip(rng, valid[fmts[k % 2]], lo=4)) for k in range(n)]


def _ext(name: str) -> str:
    return ".jpg" if name.endswith("_jpg") else ".png"


def _decodes(path: Path) -> bool:
    """The oracle: whether ``synth.io.read_image`` accepts the file (only ImageReadError may refuse it)."""
    try:
        img = synth_read_image(path)
    except ImageReadError:
        return False
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 32
    return True


# ------------------------------------------------------------------------------------ image readers

def test_image_readers_never_crash(tmp_path, valid):
    """detector.data.read_image / read_mask / image_size: None for a bad file, never an exception."""
    rng = np.random.default_rng([SEED, 1])
    cases = bad_images(rng, valid, n_random=60, n_trunc=40) + mutated_images(rng, valid, 120)
    assert len(cases) > 250
    n_bad = 0
    for k, (name, b) in enumerate(cases):
        path = tmp_path / f"{k:03d}_{name}{_ext(name)}"
        path.write_bytes(b)
        planted_bad = not name.startswith("mut")
        decodes = _decodes(path)
        assert not (planted_bad and decodes), f"{name}: a planted bad file decoded"
        img = read_image(str(path))
        assert (img is not None) == decodes, name
        if img is not None:
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name  # a mutated header may resize
        n_bad += img is None
        m = read_mask(str(path))  # OpenCV alone: lenient with truncated JPEGs, but never raises
        if m is not None:
            assert m.dtype == np.float32 and m.ndim == 2 and 0.0 <= m.min() <= m.max() <= 1.0, name
        hw = image_size(str(path))
        assert hw is None or (len(hw) == 2 and all(isinstance(v, int) for v in hw)), name
        if name in ("empty", "bomb_png", "huge_png", "zero_png") or name.startswith("magic"):
            assert hw is None, name  # a bomb header raised DecompressionBombError here (fixed)
    assert n_bad >= len(cases) - 120  # every planted bad file, and the mutations that do not decode


class _StubDetector:
    """Stands in for MediaPipe: every decodable image has a 'face' (the reader is what is tested)."""

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        return types.SimpleNamespace(box=[0.0, 0.0, float(w), float(h)], n_faces=1, padded=False,
                                     landmarks=np.zeros((index_mod.N_LANDMARKS, 2), np.float32))


def test_index_skips_and_counts_every_bad_file(tmp_path, valid, monkeypatch):
    stub = _StubDetector()
    monkeypatch.setattr(index_mod, "get_detector", lambda: stub)
    rng = np.random.default_rng([SEED, 2])
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    good = {"good_a.png": valid["png"], "sub/good_b.jpg": valid["jpg"]}
    cases = bad_images(rng, valid, n_random=16, n_trunc=10) + mutated_images(rng, valid, 30)
    for rel, b in good.items():
        (src / rel).write_bytes(b)
    expect = {rel: "ok" for rel in good}
    for k, (name, b) in enumerate(cases):
        rel = f"{'sub/' if k % 3 == 0 else ''}{k:03d}_{name}{_ext(name)}"
        (src / rel).write_bytes(b)
        expect[rel] = "ok" if name.startswith("mut") and _decodes(src / rel) else "unreadable"
    planted = sum(not name.startswith("mut") for name, _ in cases)
    n_bad = sum(s == "unreadable" for s in expect.values())
    assert planted < n_bad < len(expect) - len(good) and len(cases) > 70  # some mutations decode, some do not

    out = tmp_path / "idx"
    summary = build_index(src, out, workers=1, progress=False, chunk_size=16)
    assert summary["total"] == len(expect) == summary["processed"]
    assert (summary["ok"], summary["no_face"], summary["unreadable"]) == (len(expect) - n_bad, 0, n_bad)
    assert stub.calls == len(expect) - n_bad  # bad files are refused at decoding, before face detection
    ix = load_index(out)
    status = {r["relpath"]: r["status"] for r in ix.records}
    assert status == expect
    for r in ix.records:
        if r["status"] == "unreadable":
            assert isinstance(r["reason"], str) and r["reason"] and r["width"] is None and r["size"] is not None
        elif r["relpath"] in good:
            assert (r["width"], r["height"]) == (SIDE, SIDE)
    again = build_index(src, out, workers=1, progress=False)  # a rerun skips them the same way, once
    assert again["processed"] == 0 and again["unreadable"] == n_bad and stub.calls == len(expect) - n_bad


def test_eval_skips_and_names_every_planted_bad_file(tmp_path, valid, capsys):
    pytest.importorskip("timm")
    import torch

    from detector.checkpoint import save_checkpoint
    from detector.cli import main as detector_main
    from detector.models import create_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", create_model("timm_classifier", backbone="resnet10t").eval())
    data = write_toy_eval_dir(tmp_path / "ev", n=3, size=SIDE)  # 3 reals, 3 fakes with masks
    rows = (data / "manifest.csv").read_text().splitlines()
    good_mask = next(r.split(",")[2] for r in rows[1:] if r.split(",")[1] == "1")
    rng = np.random.default_rng([SEED, 3])
    cases = bad_images(rng, valid, n_random=6, n_trunc=3)
    (data / "bad").mkdir()
    planted = set()
    for k, (name, b) in enumerate(cases):
        rel = f"bad/{k:02d}_{name}{_ext(name)}"
        (data / rel).write_bytes(b)
        rows.append(f"{rel},{k % 2},{good_mask if k % 2 else ''},gen,b{k}")
        planted.add(str(data / rel))
    # fakes whose own image is fine but whose mask is bad: random, truncated PNG, empty, bomb header, wrong size
    good_fake = next(r.split(",")[0] for r in rows[1:] if r.split(",")[1] == "1")
    masks = [("random", rng.integers(0, 256, 500, dtype=np.uint8).tobytes()),
             ("trunc", valid["png"][:len(valid["png"]) // 2]), ("empty", b""),
             ("bomb", _png_with_size(valid["png"], 30000, 30000)),
             ("small", cv2.imencode(".png", np.zeros((32, 32), np.uint8))[1].tobytes())]
    for k, (name, b) in enumerate(masks):
        (data / "bad" / f"mask_{name}.png").write_bytes(b)
        (data / "bad" / f"fake_{name}.png").write_bytes((data / good_fake).read_bytes())
        rows.append(f"bad/fake_{name}.png,1,bad/mask_{name}.png,gen,m{k}")
        planted.add(str(data / "bad" / f"fake_{name}.png"))
    rows.append("bad/missing.png,0,,real,gone")
    planted.add(str(data / "bad" / "missing.png"))
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "metrics.json"
    assert detector_main(["eval", "--ckpt", str(ckpt), "--data", str(data), "--no-progress", "--workers", "0",
                          "--size", str(SIDE), "--batch-size", "8", "--out", str(out)]) == 0
    capsys.readouterr()
    record = json.loads(out.read_text())
    assert record["n_skipped"] == len(planted) == len(record["skipped"])
    assert {r["path"] for r in record["skipped"]} == planted
    assert all(isinstance(r["reason"], str) and r["reason"] for r in record["skipped"])
    assert (record["n_real"], record["n_fake"]) == (3, 3)  # the good reals and fakes are all scored


# ------------------------------------------------------------------------------------ manifest readers

_VALUES = [None, 0, -3, 1.5, True, "", "x", [], {}, [1, 2], {"a": 1}, "../../../etc/passwd", "a\x00b", 10 ** 30]


def _mutate_bytes(rng, line: bytes) -> bytes:
    """A byte-level mutation of one line (kept ending in a newline)."""
    body = line.rstrip(b"\n")
    kind = int(rng.integers(0, 6))
    if kind == 0:  # truncated
        body = body[:int(rng.integers(0, len(body)))]
    elif kind == 1:
        body = _flip(rng, body)
    elif kind == 2:  # a byte deleted
        p = int(rng.integers(0, len(body)))
        body = body[:p] + body[p + 1:]
    elif kind == 3:  # a byte inserted
        p = int(rng.integers(0, len(body) + 1))
        body = body[:p] + bytes([int(rng.integers(0, 256))]) + body[p:]
    elif kind == 4:
        body = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    else:
        body = b"\x00" * int(rng.integers(1, 5))
    return body + b"\n"


def _mutate_record(rng, line: bytes) -> bytes:
    """A structural mutation of one JSON line: a key dropped, a value (or a plan value) of the wrong
    type, or a line that is valid JSON but not an object."""
    rec = json.loads(line)
    kind = int(rng.integers(0, 4))
    value = _VALUES[int(rng.integers(len(_VALUES)))]
    if kind == 3:
        return json.dumps(value).encode() + b"\n"
    target = rec["plan"] if kind == 2 else rec
    if kind == 2 and rng.random() < 0.5:
        target = target[["mask", "blend"][int(rng.integers(2))]]
    key = sorted(target)[int(rng.integers(len(target)))]
    if kind == 0:
        del target[key]
    else:
        target[key] = value
    return json.dumps(rec).encode() + b"\n"


def test_read_synth_dir_fuzzed_lines(tmp_path):
    rng = np.random.default_rng([SEED, 4])
    out = write_toy_synth_dir(tmp_path / "s", n=4, size=32)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    outcomes = {"ok": 0, "error": 0}
    for case in range(150):
        j = int(rng.integers(len(lines)))
        bad = (_mutate_record if case % 2 else _mutate_bytes)(rng, lines[j])
        manifest.write_bytes(b"".join(lines[:j] + [bad] + lines[j + 1:]))
        first, last = j + 1, j + bad.count(b"\n")  # an inserted newline splits the mutated line
        try:
            samples = read_synth_dir(out)
        except ValueError as e:  # the documented error: names the manifest and the mutated line
            msg = str(e)
            assert any(msg.startswith(f"{manifest}:{n}: ") for n in range(first, last + 1)), (bad, msg)
            assert len(msg) < 400 and "\n" not in msg
            outcomes["error"] += 1
            continue
        assert all(isinstance(s.path, str) and s.label in (0, 1) and isinstance(s.meta["i"], int) for s in samples)
        assert all(isinstance(k, str) for s in samples for k in s.meta.get("keys", []))
        pair_ids(samples)  # what training does with the samples next
        outcomes["ok"] += 1
    assert outcomes["ok"] + outcomes["error"] == 150 and min(outcomes.values()) > 10, outcomes


def test_read_manifest_csv_fuzzed_lines(tmp_path):
    rng = np.random.default_rng([SEED, 5])
    data = write_toy_eval_dir(tmp_path / "e", n=3, size=32)
    path = data / "manifest.csv"
    lines = path.read_bytes().splitlines(keepends=True)
    extra = [b'path,label\n"' + b"x" * 200_000 + b"\n",  # an unclosed quote runs past csv's field limit
             b"\xef\xbb\xbf" + b"".join(lines), b"", b"\xff\xfe" + b"".join(lines), b"path,label\n\x00,1\n"]
    outcomes = {"ok": 0, "error": 0}
    for case in range(150 + len(extra)):
        if case < 150:
            j = int(rng.integers(len(lines)))  # the header too
            path.write_bytes(b"".join(lines[:j] + [_mutate_bytes(rng, lines[j])] + lines[j + 1:]))
        else:
            path.write_bytes(extra[case - 150])
        try:
            samples = read_manifest_csv(data)
        except ValueError as e:  # the documented error, naming the csv
            assert str(e).startswith(f"{path}"), str(e)
            outcomes["error"] += 1
            continue
        assert all(isinstance(s.path, str) and s.label in (0, 1) for s in samples)
        usable, skipped = check_samples(samples)  # what eval does next: a bad path is skipped, not a crash
        assert len(usable) + len(skipped) == len(samples)
        outcomes["ok"] += 1
    assert sum(outcomes.values()) == 150 + len(extra) and min(outcomes.values()) > 10, outcomes


def test_replay_of_fuzzed_manifest_lines(tmp_path, valid, monkeypatch):
    """``synth replay`` refuses a mutated line with a ValueError (exit 2 in the CLI), never a traceback."""
    from synth.cli import main as synth_main
    from synth.replay import replay

    monkeypatch.setattr(index_mod, "get_detector", _StubDetector)
    src = tmp_path / "src"
    src.mkdir()
    (src / "face.png").write_bytes(valid["png"])  # no toy plan names it
    build_index(src, tmp_path / "idx", workers=1, progress=False)
    out = write_toy_synth_dir(tmp_path / "run", n=3, size=32)
    (out / "run.json").write_text(json.dumps({"index": str(tmp_path / "idx")}))
    manifest = out / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    rng = np.random.default_rng([SEED, 6])
    for case in range(60):
        j = int(rng.integers(len(lines)))
        manifest.write_bytes(b"".join(lines[:j] + [(_mutate_record if case % 2 else _mutate_bytes)(rng, lines[j])]
                                      + lines[j + 1:]))
        with pytest.raises(ValueError, match=f"^{re.escape(str(out))}"):  # toy plans name faces the index lacks: never replayable
            replay(out, [j], dest=tmp_path / "dest")
    assert synth_main(["replay", str(out), "0", "--dest", str(tmp_path / "dest")]) == 2
