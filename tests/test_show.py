"""Contact sheet of a (tiny, real) generation run."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from synth.generate import generate
from synth.show import contact_sheet, plan_caption, write_contact_sheet


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("show") / "run"
    generate(out, 5, size=64, backend="serial", progress=False)
    return out


def _ok_count(run) -> int:
    return sum(json.loads(line)["status"] == "ok" for line in (run / "manifest.jsonl").read_text().splitlines())


def test_sheet_geometry_and_content(run):
    k = _ok_count(run)
    assert k >= 2
    sheet = contact_sheet(run, n=4, cols=2, tile=48)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    pad, cell_w = 6, 3 * 48 + 4
    cols = min(2, min(4, k))
    assert sheet.shape[1] == pad + cols * (cell_w + pad)
    # first cell: the real image of the first chosen sample sits at the top-left, resized
    first = min(json.loads(line)["i"] for line in (run / "manifest.jsonl").read_text().splitlines()
                if json.loads(line)["status"] == "ok")
    real = cv2.cvtColor(cv2.imread(str(run / f"real/000/{first:06d}.png")), cv2.COLOR_BGR2RGB)
    expected = cv2.resize(real, (48, 48), interpolation=cv2.INTER_AREA)
    # with k <= 4 every ok sample is shown, in sample order
    if k <= 4:
        assert np.array_equal(sheet[pad:pad + 48, pad:pad + 48], expected)
    # the mask tile is grey (equal channels) and the caption area holds text pixels
    mask_tile = sheet[pad:pad + 48, pad + 2 * 50:pad + 2 * 50 + 48]
    assert np.array_equal(mask_tile[..., 0], mask_tile[..., 1])
    caption = sheet[pad + 48:pad + 48 + 20, pad:pad + cell_w]
    assert (caption > 150).any()


def test_sheet_is_deterministic_per_seed(run):
    assert np.array_equal(contact_sheet(run, n=2, seed=3), contact_sheet(run, n=2, seed=3))


def test_write_contact_sheet_png(run, tmp_path):
    path = write_contact_sheet(run, n=3, path=tmp_path / "sheet.png")
    assert path == tmp_path / "sheet.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path))
    assert img.shape == contact_sheet(run, n=3).shape
    assert write_contact_sheet(run, n=2) == run / "sheet.png"


def test_caption_names_the_main_choices():
    plan = {"pairing": "swap", "mask": {"region": "lower", "occlusion": "skin"}, "blend": {"op": "poisson"},
            "color": {"op": "reinhard"}, "perturb": [], "source_degrade": [{"op": "gaussian_blur"}],
            "post": [{"op": "jpeg"}]}
    assert plan_caption(plan) == ["swap | lower | poisson | occ:skin", "reinhard | gaussian_blur", "post: jpeg"]


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="no manifest.jsonl"):
        contact_sheet(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"i": 0, "id": "000000", "status": "skipped"}) + "\n")
    with pytest.raises(ValueError, match="no ok samples"):
        contact_sheet(tmp_path)


@pytest.mark.parametrize("path", ["{abs}", "../outside.png", "fake/../../outside.png"])
def test_images_outside_the_run_are_refused(run, tmp_path, path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    outside = tmp_path / "outside.png"
    cv2.imwrite(str(outside), np.full((64, 64, 3), 255, np.uint8))
    recs = [json.loads(line) for line in (copy / "manifest.jsonl").read_text().splitlines()]
    k = next(n for n, r in enumerate(recs) if r["status"] == "ok")
    recs[k]["real"] = path.format(abs=outside)
    (copy / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(ValueError, match=rf"manifest.jsonl:{k + 1}: 'real' must be a path inside the run"):
        contact_sheet(copy, n=24)
