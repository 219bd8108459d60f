"""``synth export`` (DeepfakeBench JSON, torchvision ImageFolder) and the DeepfakeBench JSON reader
of ``detector eval``: layout, links not copies, identity-disjoint splits, round trip, video-level
metrics, bad input. A 6-sample run of the embedded default face (64 px) and toy runs keep it fast."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.data import (
    Sample,
    group_identities,
    read_dataset,
    read_deepfakebench_json,
    read_synth_dir,
    write_toy_synth_dir,
)
from synth.cli import main as synth_main
from synth.export import export_run

SIZE = 64


def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its kind, size and mtime: to prove nothing was written there."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (p.is_symlink(), p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _key(s: Sample) -> tuple:
    return os.path.realpath(s.path), s.label, os.path.realpath(s.mask_path) if s.mask_path else None


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """6 samples of the default recipe on the embedded default face, sample 4 marked failed."""
    from synth.generate import generate

    out = tmp_path_factory.mktemp("export") / "run"
    generate(out, 6, size=SIZE, backend="serial", progress=False)
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    lines[4] = {"i": 4, "id": "000004", "status": "skipped", "reason_kind": "FaceNotFound", "reason": "planted",
                "file": "astronaut.png", "plan": lines[4]["plan"]}
    (out / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """24 toy samples over 8 identities, a third of them swaps (so the split has something to do)."""
    return write_toy_synth_dir(tmp_path_factory.mktemp("export") / "toy", n=24, size=SIZE, seed=3,
                               n_identities=8, swap_fraction=0.3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    pytest.importorskip("timm")
    import torch

    from detector.checkpoint import save_checkpoint
    from detector.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt",
                           create_model("timm_classifier", backbone="resnet10t").eval())


# ------------------------------------------------------------------------------ deepfakebench

def test_deepfakebench_layout_links_and_nothing_written_outside(run, tmp_path):
    before = _tree(run)
    out = tmp_path / "dfb"
    summary = export_run(run, out, "deepfakebench")
    assert _tree(run) == before  # the run is untouched
    data = json.loads((out / "faceforge.json").read_text())
    assert summary["json"] == str(out / "faceforge.json") and summary["n_failed"] == 1
    assert list(data) == ["faceforge"]
    groups = data["faceforge"]
    assert list(groups) == ["faceforge_real", "faceforge_fake"]
    ok = {json.loads(x)["i"]: json.loads(x) for x in (run / "manifest.jsonl").read_text().splitlines()}
    ok = {i: rec for i, rec in ok.items() if rec["status"] == "ok"}
    assert set(ok) == {0, 1, 2, 3, 5}
    for group, kind, label in (("faceforge_real", "real", 0), ("faceforge_fake", "fake", 1)):
        splits = groups[group]
        assert list(splits) == ["train", "val", "test"] and splits["val"] == splits["test"]
        videos = {**splits["train"], **splits["val"]}
        assert set(videos) == {f"{i:06d}" for i in ok}  # the failed sample 4 is not exported
        for vid, rec in videos.items():
            assert rec["label"] == group
            assert set(rec) == ({"label", "frames", "masks"} if label else {"label", "frames"})
            (frame,) = rec["frames"]
            assert not os.path.isabs(frame) and int(Path(frame).stem) == int(vid)  # DeepfakeBench sorts by int stem
            assert (out / frame).is_symlink() and (out / frame).samefile(run / ok[int(vid)][kind])
            if label:
                (mask,) = rec["masks"]
                assert mask == frame.replace("frames", "masks")  # how DeepfakeBench's loader finds masks
                assert (out / mask).is_symlink() and (out / mask).samefile(run / ok[int(vid)]["mask"])
    # links only: every file under OUT but the JSON is a symbolic link into the run
    files = [p for p in out.rglob("*") if not p.is_dir() or p.is_symlink()]
    assert {p.name for p in files if not p.is_symlink()} == {"faceforge.json"}
    assert all(Path(os.path.realpath(p)).is_relative_to(os.path.realpath(run)) for p in files if p.is_symlink())


def test_round_trip_export_then_read_back_gives_the_same_samples(toy, tmp_path):
    out = tmp_path / "dfb"
    summary = export_run(toy, out, "deepfakebench", name="toy", val_fraction=0.3, seed=1)
    assert summary["n_val"] > 0 and summary["n_train"] > 0
    kept = {_key(s) for s in read_synth_dir(toy)}
    back = read_deepfakebench_json(out / "toy.json", split="all")
    assert len(back) == summary["n_train"] + summary["n_val"] == len(kept) - summary["n_dropped"]
    assert {_key(s) for s in back} <= kept
    assert len({s.meta["video"] for s in back}) == len(back)  # one frame per video
    # the test split is the held-out part; read_dataset finds the JSON in its folder
    test = read_dataset(out)
    assert len(test) == summary["n_val"] and {s.label for s in test} == {0, 1}
    assert test == read_deepfakebench_json(out / "toy.json")
    assert all(s.mask_path for s in back if s.label == 1) and not any(s.mask_path for s in back if s.label == 0)
    assert {s.meta["generator"] for s in back} == {"real", "toy_fake"}


def test_eval_from_the_export_reports_video_level_metrics(toy, tmp_path, ckpt, capsys):
    from detector.cli import main as detector_main

    out = tmp_path / "dfb"
    export_run(toy, out, "deepfakebench", val_fraction=0.3, seed=1)
    metrics = tmp_path / "m.json"
    assert detector_main(["eval", "--ckpt", str(ckpt), "--data", str(out / "faceforge.json"), "--split", "all",
                          "--workers", "0", "--no-progress", "--out", str(metrics)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(metrics.read_text())
    assert record["split"] == "all" and record["n_skipped"] == 0
    assert record["video"]["n"] == record["n"] and np.isfinite(record["video"]["auc"])  # one frame per video
    assert "video-level" in printed and (tmp_path / "m_roc.png").is_file()


# ------------------------------------------------------------------------------ imagefolder

@pytest.mark.parametrize("link", ["symlink", "hard"])
def test_imagefolder_identity_disjoint_links(toy, tmp_path, link):
    out = tmp_path / "if"
    summary = export_run(toy, out, "imagefolder", val_fraction=0.3, seed=1, link=link)
    by_name = {}
    for s in read_synth_dir(toy):
        by_name[("fake" if s.label else "real", f"{s.meta['i']:06d}.png")] = s
    sides = {}
    for split in ("train", "val"):
        assert sorted(os.listdir(out / split)) == ["fake", "real"]
        files = sorted((out / split).rglob("*.png"))
        sides[split] = [by_name[(p.parent.name, p.name)] for p in files]
        for p in files:
            src = by_name[(p.parent.name, p.name)].path
            assert p.samefile(src)
            assert p.is_symlink() if link == "symlink" else (not p.is_symlink() and p.stat().st_nlink >= 2)
    assert (len(sides["train"]), len(sides["val"])) == (summary["n_train"], summary["n_val"])
    assert sides["val"] and not group_identities(sides["train"]) & group_identities(sides["val"])
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(out / "train"))
    assert ds.classes == ["fake", "real"] and len(ds) == summary["n_train"]


# ------------------------------------------------------------------------------ CLI and errors

def test_cli_exit_codes_and_refusals(run, tmp_path, capsys):
    out = tmp_path / "o"
    assert synth_main(["export", str(run), str(out), "--format", "imagefolder"]) == 0
    assert "wrote" in capsys.readouterr().out
    before = _tree(out)
    assert synth_main(["export", str(run), str(out), "--format", "deepfakebench"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and str(out) in err
    assert _tree(out) == before
    for args, message in ((["--val-fraction", "1.5"], "val_fraction"), (["--name", "my/set"], "name"),
                          (["--path-prefix", "./frames"], "path_prefix")):
        assert synth_main(["export", str(run), str(tmp_path / "x"), "--format", "deepfakebench", *args]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert synth_main(["export", str(tmp_path / "nope"), str(tmp_path / "y"), "--format", "deepfakebench"]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "y").exists()
    (tmp_path / "file").write_text("x")
    assert synth_main(["export", str(run), str(tmp_path / "file"), "--format", "deepfakebench"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_a_failed_export_leaves_out_as_it_was(run, tmp_path, monkeypatch):
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        os_symlink(src, dst)

    os_symlink = os.symlink
    monkeypatch.setattr(os, "symlink", failing)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        calls.clear()
        with pytest.raises(OSError):
            export_run(run, out, "deepfakebench")
        assert (out.exists(), list(out.iterdir()) if out.exists() else []) == (out.name == "empty", [])


def test_a_manifest_path_leading_out_of_the_run_is_refused(toy, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for sub in ("real", "fake", "mask"):
        os.symlink(toy / sub, bad / sub)
    lines = (toy / "manifest.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["real"] = "../../../../../../etc/hostname"
    (bad / "manifest.jsonl").write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match="sample 000000: image .* lies outside the run"):
        export_run(bad, tmp_path / "o", "imagefolder")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------- reading DeepfakeBench JSONs

def _frames(root: Path, rel: str, n: int, value: int) -> list[str]:
    out = []
    for k in range(n):
        p = root / rel / f"{k}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.full((SIZE, SIZE, 3), value + 7 * k, np.uint8))
        out.append(f"{rel}/{k}.png")
    return out


def _ffpp(root: Path) -> dict:
    """A FaceForensics++-shaped JSON (dataset -> label -> split -> compression -> video), Windows
    separators as DeepfakeBench's released JSONs have; 2 real and 2 fake videos of 3 frames."""
    def win(paths):
        return [p.replace("/", "\\") for p in paths]

    real = {v: {"label": "FF-real", "frames": win(_frames(root, f"ff/real/c23/frames/{v}", 3, 40))}
            for v in ("000", "001")}
    fake = {}
    for v in ("000_003", "001_002"):
        frames = _frames(root, f"ff/DF/c23/frames/{v}", 3, 120)
        masks = _frames(root, f"ff/DF/c23/masks/{v}", 2, 200)  # frame 2 has no mask on disk
        fake[v] = {"label": "FF-DF", "frames": win(frames), "masks": win(masks + [masks[0].replace("0.png", "2.png")])}
    c40 = {"999": {"label": "FF-real", "frames": ["elsewhere/1.png"]}}
    return {"FF-DF": {"FF-real": {"train": {"c23": {}, "c40": {}}, "val": {"c23": {}, "c40": {}},
                                  "test": {"c23": real, "c40": c40}},
                      "FF-DF": {"train": {"c23": {}, "c40": {}}, "val": {"c23": {}, "c40": {}},
                                "test": {"c23": fake, "c40": {}}}}}


def test_reader_ffpp_layout_compression_root_masks(tmp_path):
    root = tmp_path / "rgb"
    data = _ffpp(root)
    jdir = tmp_path / "dataset_json"
    jdir.mkdir()
    (jdir / "FF-DF.json").write_text(json.dumps(data))
    s = read_deepfakebench_json(jdir / "FF-DF.json", root=root)
    assert len(s) == 12 and [x.label for x in s] == [0] * 6 + [1] * 6
    assert all(os.path.isfile(x.path) for x in s)
    assert {x.meta["video"] for x in s} == {"FF-DF/FF-real/000", "FF-DF/FF-real/001",
                                            "FF-DF/FF-DF/000_003", "FF-DF/FF-DF/001_002"}
    assert {x.meta["generator"] for x in s} == {"real", "FF-DF"}
    fakes = [x for x in s if x.label == 1]
    assert [x.mask_path is not None for x in fakes] == [True, True, False] * 2  # matched by name; absent dropped
    assert all(Path(x.mask_path).name == Path(x.path).name for x in fakes if x.mask_path)
    c40 = read_deepfakebench_json(jdir / "FF-DF.json", root=root, compression="c40")
    assert [x.path for x in c40] == [str(root / "elsewhere/1.png")]
    # no --root: relative to the JSON's folder, as given (a symlink to it in the data root works)
    os.symlink(jdir / "FF-DF.json", root / "FF-DF.json")
    assert read_dataset(root / "FF-DF.json") == s
    assert read_dataset(jdir, root=root) == s  # a folder holding one JSON
    with pytest.raises(ValueError, match="apply to a DeepfakeBench .json only"):
        read_dataset(write_toy_synth_dir(tmp_path / "toy", n=2, size=SIZE), split="test")


def test_eval_of_a_multi_frame_json_averages_frames_per_video(tmp_path, ckpt, capsys):
    from detector.cli import main as detector_main

    root = tmp_path / "rgb"
    (tmp_path / "FF-DF.json").write_text(json.dumps(_ffpp(root)))
    out = tmp_path / "m.json"
    assert detector_main(["eval", "--ckpt", str(ckpt), "--data", str(tmp_path / "FF-DF.json"), "--root", str(root),
                          "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    record = json.loads(out.read_text())
    assert (record["n_real"], record["n_fake"]) == (6, 6)
    assert (record["video"]["n_real"], record["video"]["n_fake"]) == (2, 2)
    assert set(record["per_generator"]) == {"FF-DF"} and record["root"] == str(root)


def _write_json(tmp_path, data) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("data, message", [
    ("{not json", r"bad.json: not a JSON file"),
    ([1, 2], r"bad.json: expected a JSON object"),
    ({"D": []}, r"bad.json: \['D'\] must be an object"),
    ({"D": {"D_real": {"train": {}}}}, r"bad.json: \['D'\]\['D_real'\]: missing key 'test'"),
    ({"D": {"D_real": {"test": {"v": {"frames": ["a.png"]}}}}}, r"\['D'\]\['D_real'\]\['test'\]\['v'\]: missing key 'label'"),
    ({"D": {"D_real": {"test": {"v": {"label": "D_real"}}}}}, r"\['test'\]\['v'\]: missing key 'frames'"),
    ({"D": {"D_real": {"test": {"v": {"label": "D_real", "frames": "a.png"}}}}}, r"\['frames'\] must be a list of paths"),
    ({"D": {"D_x": {"test": {"v": {"label": "D_x", "frames": ["a.png"]}}}}}, r"\['label'\]: label 'D_x' is neither real nor fake"),
    ({"D": {"D_real": {"test": {"c40": {}, "raw": {}}}}}, r"\['test'\]: several compression levels"),
    ({"D": {"D_real": {"test": {"label": "D_real", "frames": ["a.png"]}}}}, r"\['test'\] is a single video record"),
    ({"D": {"D_real": {"test": {}}}}, r"bad.json: no frame in split 'test'"),
])
def test_reader_errors_name_the_file_and_key(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        read_deepfakebench_json(_write_json(tmp_path, data))


def test_reader_labels_override_and_synth_side_files_are_not_datasets(tmp_path):
    data = {"D": {"D_x": {"test": {"v": {"label": "D_x", "frames": ["a.png"]}}},
                  "D_real": {"test": {"w": {"label": "D_real", "frames": ["b.png"]}}}}}
    s = read_dataset(_write_json(tmp_path, data), labels={"D_x": 1})
    assert [(Path(x.path).name, x.label, x.meta["generator"]) for x in s] == [("a.png", 1, "D_x"), ("b.png", 0, "real")]
    run = tmp_path / "interrupted"  # a synth run folder before its first manifest line: not a DeepfakeBench set
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="unknown dataset layout"):
        read_dataset(run)


def test_reader_folder_with_several_jsons_and_missing_frames(tmp_path, ckpt, capsys):
    from detector.cli import main as detector_main

    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(ValueError, match=r"expected one DeepfakeBench .json in the folder, found 2 \(a.json, b.json\)"):
        read_dataset(tmp_path)
    # a frame that is not on disk is skipped, named and counted by eval, like the other readers
    d = tmp_path / "set"
    data = {"S": {"S_real": {"test": {"r": {"label": "S_real", "frames": _frames(d, "r", 2, 30) + ["r/gone.png"]}}},
                  "S_fake": {"test": {"f": {"label": "S_fake", "frames": _frames(d, "f", 2, 200)}}}}}
    (d / "S.json").write_text(json.dumps(data))
    out = tmp_path / "m.json"
    assert detector_main(["eval", "--ckpt", str(ckpt), "--data", str(d), "--workers", "0", "--no-progress",
                          "--out", str(out)]) == 0
    assert "r/gone.png: image file not found" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["n_skipped"] == 1 and record["skipped"][0]["path"] == str(d / "r/gone.png")
    assert (record["video"]["n_real"], record["video"]["n_fake"]) == (1, 1)


def test_train_loop_evaluates_on_a_deepfakebench_json(toy, tmp_path):
    """`detector train --eval X.json`: the loop reads the JSON (split test, paths from its folder) and
    records video-level metrics beside the frame-level ones."""
    from detector.loop import run_loop

    ev = tmp_path / "ev"
    export_run(write_toy_synth_dir(tmp_path / "evrun", n=12, size=SIZE, seed=9, n_identities=12), ev,
               "deepfakebench", val_fraction=0.5, seed=2)
    tiny = {"backbone": "test_resnet", "embed_dim": 16, "decoder_dim": 8, "head_hidden": 16}
    summary = run_loop([toy], ev / "faceforge.json", tmp_path / "run", condition="auc>1", max_rounds=1,
                       model_name="freq_attention", model_kwargs=tiny, patch=32, batch_size=8, workers=0,
                       epochs_per_round=1, max_steps_per_epoch=2, quality_reals=0, val_fraction=0.3, statistics_n=0,
                       progress=False,
                       log=lambda m: None)
    assert summary["status"] == "max_rounds"
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["eval"]["video"]["n"] == line["eval"]["n"] > 0


def test_synth_does_not_import_the_detector():
    # layering: the generator (and its export) must work where only synth is wanted
    import subprocess
    import sys

    code = ("import sys, synth, synth.export, synth.samples, synth.generate; "
            "bad = sorted(m for m in sys.modules if m == 'detector' or m.startswith('detector.')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
