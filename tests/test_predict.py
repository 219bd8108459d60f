"""Tests for ``detector predict``: exit codes, per-file statuses, videos, masks, errors."""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from detector import predict as P
from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.models import create_model

torch.set_num_threads(1)

SIZE = 64  # face crop side: small to keep the tests fast


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("timm_classifier", backbone="resnet10t").eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model)


@pytest.fixture(scope="module")
def mask_ckpt(tmp_path_factory):
    """A tiny untrained model with a mask head."""
    torch.manual_seed(0)
    model = create_model("wavelet_dual_branch", levels=2, width=8, bilinear_dim=4, decoder_dim=8)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_mask.pt", model)


@pytest.fixture(scope="module")
def face():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def face_png(tmp_path_factory, face):
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory, face):
    """12 frames of the astronaut shifted 2 px per frame, MJPG in .avi."""
    path = tmp_path_factory.mktemp("vid") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (256, 256))
    small = cv2.resize(face, (256, 256), interpolation=cv2.INTER_AREA)
    for i in range(12):
        writer.write(cv2.cvtColor(np.roll(small, 2 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def run(capsys, *argv):
    code = P.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    return code, json.loads(out), err


# --------------------------------------------------------------------------- images

def test_face_image_verdict_follows_threshold(capsys, ckpt, face_png):
    code, recs, _ = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, "--threshold", 1.0, face_png)
    assert code == 0
    (rec,) = recs
    assert rec["path"] == str(face_png) and rec["kind"] == "image" and rec["status"] == "ok"
    assert rec["faces"] == 1 and rec["verdict"] == "real" and 0.0 < rec["prob"] < 1.0
    code, recs, _ = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, "--threshold", 0.0, face_png)
    assert code == 1 and recs[0]["verdict"] == "fake"


def test_prob_is_sigmoid_of_model_logit_on_normalised_crop(model, face):
    pred = P.Predictor(model, crop_scale=1.3, size=SIZE)
    res = pred.predict_image(face)
    (crop,) = [f.crop for f in pred.faces(face)]
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    mean = torch.tensor(model.input_norm["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.input_norm["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        ref = torch.sigmoid(model(x)["logit"]).item()
    assert res["prob"] == pytest.approx(ref, abs=1e-5)
    assert res["face_probs"] == [pytest.approx(ref, abs=1e-5)]
    x0, y0, x1, y1 = res["boxes"][0]
    assert 150 < x0 < x1 < 330 and 50 < y0 < y1 < 260  # the astronaut's face


def test_every_face_is_scored(model, face):
    two = np.concatenate([face, face[:, ::-1]], axis=1)  # the face mesh alone sees none here
    res = P.Predictor(model, size=SIZE).predict_image(two)
    assert res["faces"] == 2 and len(res["face_probs"]) == 2
    assert res["prob"] == max(res["face_probs"])
    xs = sorted(b[0] for b in res["boxes"])
    assert xs[0] < 512 < xs[1]


def test_folder_reports_each_file(capsys, tmp_path, ckpt, face):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    noise = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "b_noise.png"), noise)
    cv2.imwrite(str(folder / "sub" / "c_face.jpg"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an input")
    code, recs, _ = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, "--threshold", 1.0, folder)
    assert code == 0
    assert [r["path"] for r in recs] == [str(folder / "a_corrupt.png"), str(folder / "b_noise.png"),
                                         str(folder / "sub" / "c_face.jpg")]
    assert [r["status"] for r in recs] == ["unreadable", "no_face", "ok"]
    assert "a_corrupt.png" in recs[0]["reason"] and recs[0]["prob"] is None
    assert recs[1]["faces"] == 0 and recs[1]["verdict"] is None and recs[1]["reason"]
    assert recs[2]["verdict"] == "real"
    code, _, _ = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, "--threshold", 0.0, folder)
    assert code == 1

    code, out, _ = run(capsys, "--ckpt", ckpt, "--size", SIZE, "--threshold", 0.0, folder)
    lines = out.splitlines()
    assert lines[0].split() == ["path", "kind", "faces", "prob", "verdict", "note"]
    assert "unreadable" in lines[1] and "no_face" in lines[2] and "FAKE" in lines[3]
    assert lines[-1] == "3 inputs: 1 fake, 1 no_face, 1 unreadable"


def test_nothing_scored_is_an_error(capsys, tmp_path, ckpt):
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    code, recs, err = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, tmp_path / "bad.jpg", tmp_path / "missing.png")
    assert code == 2 and [r["status"] for r in recs] == ["unreadable", "unreadable"]
    assert "missing.png" in recs[1]["reason"] and "no input could be scored" in err
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "--ckpt", ckpt, tmp_path / "empty")
    assert code == 2 and "no image or video found" in err and out == ""


def test_masks_out(capsys, tmp_path, mask_ckpt, face_png, face):
    out_dir = tmp_path / "masks"
    code, recs, _ = run_json(capsys, "--ckpt", mask_ckpt, "--size", SIZE, "--threshold", 1.0,
                             "--masks-out", out_dir, face_png, face_png)
    assert code == 0
    paths = [r["masks"][0] for r in recs]
    assert paths == [str(out_dir / "astronaut_face0_mask.png"), str(out_dir / "astronaut_face0_mask_2.png")]
    mask = cv2.imread(paths[0], cv2.IMREAD_UNCHANGED)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
    # Reference: sigmoid of the model's mask logits on the normalised crop, in 0..255.
    model, _ = load_checkpoint(mask_ckpt)
    (crop,) = [f.crop for f in P.Predictor(model, size=SIZE).faces(face)]
    mean = torch.tensor(model.input_norm["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.input_norm["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        ref = torch.sigmoid(model(x)["mask"])[0, 0].numpy() * 255
    assert np.abs(mask.astype(float) - ref).max() <= 0.5 + 1e-3


# --------------------------------------------------------------------------- videos

def test_video_per_frame_scores(capsys, ckpt, video):
    code, (rec,), _ = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, "--frames", 5, "--threshold", 0.0, video)
    assert code == 1
    assert rec["kind"] == "video" and rec["status"] == "ok" and rec["verdict"] == "fake"
    assert rec["frames_sampled"] == 5 and rec["frames_used"] == 5 and rec["fake_share"] == 1.0
    assert [f["index"] for f in rec["frames"]] == [0, 3, 6, 8, 11]
    probs = [f["prob"] for f in rec["frames"]]
    assert rec["prob"] == rec["mean_prob"] == pytest.approx(np.mean(probs))
    assert all(f["faces"] == 1 and f["verdict"] == "fake" for f in rec["frames"])

    code, (rec,), _ = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, "--frames", 40, "--threshold", 1.0, video)
    assert code == 0 and rec["verdict"] == "real" and rec["fake_share"] == 0.0
    assert rec["frames_sampled"] == 12  # never more frames than the clip holds

    code, out, _ = run(capsys, "--ckpt", ckpt, "--size", SIZE, "--frames", 3, "--threshold", 1.0, video)
    assert "3/3 frames, 0% fake" in out.splitlines()[1]


def test_video_frames_without_seeking_match(video, monkeypatch):
    seek = P.sample_video_frames(video, 4)
    real_capture = cv2.VideoCapture

    class NoSeek:
        def __init__(self, path):
            self.cap = real_capture(path)

        def set(self, prop, value):
            return False

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", NoSeek)  # detector.video reads through cv2
    seq = P.sample_video_frames(video, 4)
    assert [i for i, _ in seq] == [i for i, _ in seek] == [0, 4, 7, 11]
    for (_, a), (_, b) in zip(seq, seek):
        assert a.shape == (256, 256, 3) and np.array_equal(a, b)


def test_unreadable_video_is_reported(capsys, tmp_path, ckpt, face_png):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    code, recs, _ = run_json(capsys, "--ckpt", ckpt, "--size", SIZE, "--threshold", 1.0, bad, face_png)
    assert code == 0
    assert recs[0]["kind"] == "video" and recs[0]["status"] == "unreadable" and "broken.mp4" in recs[0]["reason"]
    with pytest.raises(ValueError, match="broken.mp4"):
        P.sample_video_frames(bad, 4)


# --------------------------------------------------------------------------- errors

def test_bad_checkpoint_names_the_file(capsys, tmp_path, face_png):
    missing = tmp_path / "nope.pt"
    code, out, err = run(capsys, "--ckpt", missing, face_png)
    assert code == 2 and str(missing) in err and out == ""
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    code, out, err = run(capsys, "--ckpt", junk, face_png)
    assert code == 2 and str(junk) in err


@pytest.mark.parametrize("args, msg", [
    (["--crop-scale", "1.1"], "crop_scale"),
    (["--crop-scale", "2.5"], "crop_scale"),
    (["--size", "100"], "multiple of 32"),
    (["--threshold", "1.5"], "threshold"),
    (["--frames", "0"], "frames"),
    (["--batch-size", "0"], "batch_size"),
])
def test_bad_arguments(capsys, face_png, args, msg):
    with pytest.raises(SystemExit) as exc:
        P.main(["--ckpt", "x.pt", *args, str(face_png)])
    assert exc.value.code == 2 and msg in capsys.readouterr().err


def test_predictor_validates(model):
    with pytest.raises(ValueError, match="crop_scale"):
        P.Predictor(model, crop_scale=1.0)
    with pytest.raises(ValueError, match="size"):
        P.Predictor(model, size=50)
    with pytest.raises(ValueError, match="device"):
        P.Predictor(model, device="nonsense")
    with pytest.raises(ValueError, match="model"):
        P.Predictor(object())
    with pytest.raises(ValueError, match="image"):
        P.Predictor(model, size=SIZE).predict_image(np.zeros((64, 64), np.uint8))


def test_add_predict_arguments_defaults():
    args = P.add_predict_arguments(argparse.ArgumentParser()).parse_args(["--ckpt", "c.pt", "a.png"])
    assert (args.crop_scale, args.size, args.threshold, args.frames, args.video_threshold) == (1.3, None, 0.5, 16, 0.5)
    assert args.masks_out is None and args.json is False and args.inputs == ["a.png"]


def test_detector_cli_runs_predict(capsys, ckpt, face_png):
    from detector.cli import main as detector_main

    assert detector_main(["predict", "--ckpt", str(ckpt), "--size", str(SIZE), "--threshold", "1.0", str(face_png)]) == 0
    assert "astronaut.png" in capsys.readouterr().out


# ------------------------------------------------------------------ broken checkpoints: exit 2

def _variant(ckpt, path, **fields):
    """A copy of checkpoint ``ckpt`` with ``fields`` replaced, saved at ``path``."""
    payload = torch.load(ckpt, weights_only=True)
    payload.update(fields)
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def broken_ckpts(tmp_path_factory, ckpt, mask_ckpt):
    folder = tmp_path_factory.mktemp("broken")
    good = torch.load(ckpt, weights_only=True)
    other = torch.load(mask_ckpt, weights_only=True)["state_dict"]
    reshaped = {k: (v[:, :256] if k == "net.fc.weight" else v) for k, v in good["state_dict"].items()}
    cases = {
        "version_str": ({"version": "2"}, "'version' must be an integer"),
        "version_none": ({"version": None}, "'version' must be an integer"),
        "unknown_kwarg": ({"model_kwargs": {**good["model_kwargs"], "nonsense": 1}}, "cannot build model 'timm_classifier'"),
        "unknown_backbone": ({"model_kwargs": {"backbone": "no_such_net"}}, "cannot build model 'timm_classifier'"),
        "kwargs_list": ({"model_kwargs": [1, 2]}, "'model_kwargs' must be a dict"),
        "other_model": ({"state_dict": other}, "weights do not fit model 'timm_classifier'"),
        "reshaped": ({"state_dict": reshaped}, "1 of another shape, e.g. 'net.fc.weight'"),
        "extra_list": ({"extra": [1]}, "'extra' must be a dict"),
    }
    return {name: (_variant(ckpt, folder / f"{name}.pt", **fields), msg) for name, (fields, msg) in cases.items()}


@pytest.mark.parametrize("name", ["version_str", "version_none", "unknown_kwarg", "unknown_backbone", "kwargs_list",
                                  "other_model", "reshaped", "extra_list"])
def test_broken_checkpoint_is_exit_2_with_one_line(capsys, tmp_path, broken_ckpts, face_png, name):
    from detector.cli import main as detector_main

    path, msg = broken_ckpts[name]
    with pytest.raises(ValueError, match=rf"^{path}: .*{msg}"):
        load_checkpoint(path)
    code, out, err = run(capsys, "--ckpt", path, "--size", SIZE, face_png)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and str(path) in err and msg in err, err
    data = tmp_path / "data"
    for sub in ("real", "fake"):
        (data / sub).mkdir(parents=True)
        (data / sub / "a.png").write_bytes(face_png.read_bytes())
    assert detector_main(["eval", "--ckpt", str(path), "--data", str(data), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and msg in err, err


def test_an_error_after_loading_is_exit_2(capsys, tmp_path, ckpt, face_png):
    blocked = tmp_path / "masks"
    blocked.write_text("a file, not a folder")
    code, out, err = run(capsys, "--ckpt", ckpt, "--size", SIZE, "--masks-out", blocked, face_png)
    assert code == 2 and err.count("\n") == 1 and str(blocked) in err


# ------------------------------------------------------------------ non-finite scores are errors

def test_zero_std_input_norm_is_refused(capsys, tmp_path, ckpt, face_png):
    path = _variant(ckpt, tmp_path / "std0.pt", input_norm={"mean": [0.5] * 3, "std": [0.0] * 3})
    with pytest.raises(ValueError, match=rf"^{path}: 'input_norm' must be"):
        load_checkpoint(path)
    code, out, err = run(capsys, "--ckpt", path, "--size", SIZE, "--json", face_png)
    assert code == 2 and out == "" and err.count("\n") == 1 and str(path) in err and "input_norm" in err


def test_nan_score_is_an_error_naming_the_input(capsys, tmp_path, ckpt, model, face, face_png, video):
    import copy

    state = torch.load(ckpt, weights_only=True)["state_dict"]
    path = _variant(ckpt, tmp_path / "nan.pt", state_dict={**state, "net.fc.bias": torch.full_like(state["net.fc.bias"],
                                                                                                   float("nan"))})
    for argv, name in (([face_png], face_png), ([video, "--frames", 2], video)):
        code, out, err = run(capsys, "--ckpt", path, "--size", SIZE, "--json", *argv)
        assert code == 2 and out == "", out  # no verdict, no JSON with a bare NaN
        assert err.count("\n") == 1 and f"{name}: the model's fake probability is not finite (nan)" in err, err
    broken = copy.deepcopy(model)
    broken.input_norm = {"mean": [0.5] * 3, "std": [0.0] * 3}
    with pytest.raises(P.NonFiniteScore, match="not finite"):
        P.Predictor(broken, size=SIZE).predict_image(face)



def test_a_bad_device_is_reported_as_the_device_not_the_checkpoint(capsys, tmp_path, ckpt, face_png):
    # #18 item 9: `detector eval --device nonsense` said the checkpoint was not readable
    from detector.cli import main as detector_main

    data = tmp_path / "data"
    for sub in ("real", "fake"):
        (data / sub).mkdir(parents=True)
        (data / sub / "a.png").write_bytes(face_png.read_bytes())
    for argv in (["eval", "--ckpt", str(ckpt), "--data", str(data), "--no-progress", "--device", "nonsense"],
                 ["predict", "--ckpt", str(ckpt), str(face_png), "--device", "nonsense"]):
        assert detector_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--device 'nonsense': not a torch device" in err and str(ckpt) not in err, err
    with pytest.raises(ValueError, match="--device 'nonsense'"):
        P.check_device("nonsense")
    assert P.check_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------ detector eval on bad sets

def _strict_json(text):
    def refuse(name):
        raise AssertionError(f"bare {name} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_eval_on_nothing_is_an_error_naming_the_set(capsys, tmp_path, ckpt):
    # #18 item 7: a header-only manifest.csv, or one whose files are all missing, exited 0 with NaN metrics
    from detector.cli import main as detector_main

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.csv").write_text("path,label,mask\n")
    assert detector_main(["eval", "--ckpt", str(ckpt), "--data", str(empty), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{empty}: no real image to evaluate" in err, err
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "manifest.csv").write_text("path,label,mask\nr.png,0,\nf.png,1,m.png\n")
    assert detector_main(["eval", "--ckpt", str(ckpt), "--data", str(gone), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no real image to evaluate; 2 skipped, e.g. {gone / 'r.png'}: image file not found" in err


def test_eval_names_every_skipped_file_and_writes_strict_json(capsys, tmp_path, ckpt):
    # #18 item 7: a fake whose mask is missing or outside the dataset was dropped silently
    from detector.cli import main as detector_main
    from detector.data import write_toy_eval_dir

    data = write_toy_eval_dir(tmp_path / "ev", n=4, size=64)
    rows = (data / "manifest.csv").read_text().splitlines()
    fakes = [k for k, row in enumerate(rows) if ",1," in row]
    (tmp_path / "outside.png").write_bytes((data / rows[fakes[1]].split(",")[2]).read_bytes())
    missing_mask = data / rows[fakes[0]].split(",")[2]
    missing_mask.unlink()
    cells = rows[fakes[1]].split(",")
    cells[2] = "../outside.png"
    rows[fakes[1]] = ",".join(cells)
    (data / "truncated.png").write_bytes((data / rows[fakes[2]].split(",")[0]).read_bytes()[:200])
    rows.append("truncated.png,0,,real,t")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "metrics.json"
    assert detector_main(["eval", "--ckpt", str(ckpt), "--data", str(data), "--no-progress", "--size", str(SIZE),
                          "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = _strict_json(out.read_text())
    reasons = {r["path"]: r["reason"] for r in record["skipped"]}
    assert record["n_skipped"] == 3 == len(reasons)
    assert reasons[str(data / rows[fakes[0]].split(",")[0])] == f"mask {missing_mask} not found"
    assert "lies outside the dataset" in reasons[str(data / cells[0])]
    assert reasons[str(data / "truncated.png")] == "image does not decode (corrupt or truncated)"
    assert "skipped 3 image(s):" in printed and all(f"{p}: {r}" in printed for p, r in reasons.items())


def test_eval_nan_score_is_an_error_and_json_has_no_nan(capsys, tmp_path, ckpt):
    from detector.cli import _json_safe
    from detector.cli import main as detector_main
    from detector.data import write_toy_eval_dir

    data = write_toy_eval_dir(tmp_path / "ev", n=2, size=64)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    nan = _variant(ckpt, tmp_path / "nan.pt", state_dict={**state, "net.fc.bias": torch.full_like(state["net.fc.bias"],
                                                                                                  float("nan"))})
    assert detector_main(["eval", "--ckpt", str(nan), "--data", str(data), "--no-progress", "--size", str(SIZE),
                          "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{nan}: the model's fake probability is not finite for 4 image(s)" in err, err
    assert not (tmp_path / "m.json").exists()
    assert _json_safe({"auc": float("nan"), "x": [1.0, float("inf")], "n": 3}) == {"auc": None, "x": [1.0, None], "n": 3}
