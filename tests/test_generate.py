"""The generation job end to end: real index, recipes, render and writer, on the embedded
astronaut (and a tiny corpus of good and bad files). Small n and 64 px keep it fast; the
dask and kill-and-resume tests are marked ``slow``."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from synth import writer
from synth.generate import BACKENDS, generate
from synth.index import build_index, load_index
from synth.pool import FacePool
from synth.render import FaceCache, render

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


def read_png(path: Path) -> np.ndarray:
    """PNG -> RGB (or grey) array, failing loudly if the file is not a readable PNG."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def tree_bytes(out: Path) -> dict[str, bytes]:
    """All sample files of a run, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for kind in writer.KINDS for p in sorted((out / kind).rglob("*.png"))}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A serial run of the default recipe on the embedded default face (n=6, 64 px)."""
    out = tmp_path_factory.mktemp("gen") / "serial"
    generate(out, 6, size=SIZE, backend="serial", progress=False)
    return out


# ----------------------------------------------------------------------------- basics

def test_writer_paths_are_sharded_by_ten_thousand():
    assert writer.sample_paths(123) == {"real": "real/000/000123.png", "fake": "fake/000/000123.png",
                                        "mask": "mask/000/000123.png"}
    assert writer.sample_paths(123_456)["fake"] == "fake/012/123456.png"
    assert writer.sample_paths(1_234_567)["mask"] == "mask/123/1234567.png"
    with pytest.raises(ValueError, match="sample index"):
        writer.sample_id(-1)


def test_scan_manifest_cuts_a_partial_last_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    good = writer.dumps_line({"i": 0, "status": "ok"}) + writer.dumps_line(
        {"i": 1, "status": "skipped", "reason": "r", "reason_kind": "ImageReadError", "file": "a.png"})
    path.write_text(good + '{"i": 2, "sta')
    state = writer.scan_manifest(path)
    assert (state.next_i, state.n_ok, state.n_skipped, state.reasons) == (2, 1, 1, {"ImageReadError": 1})
    assert state.skipped == [{"i": 1, "file": "a.png", "reason": "r"}]
    assert path.read_text() == good
    assert writer.scan_manifest(tmp_path / "missing.jsonl").next_i == 0


def test_default_run_layout_manifest_and_report(base):
    assert (base / "default-src" / "astronaut.png").is_file()
    assert load_index(base / "index").ok.sum() == 1
    recs = lines(base)
    assert [r["i"] for r in recs] == list(range(6))
    assert [r["id"] for r in recs] == [f"{i:06d}" for i in range(6)]
    ok = [r for r in recs if r["status"] == "ok"]
    assert ok, "no sample rendered"
    for r in ok:
        assert r["real"] == f"real/000/{r['id']}.png" and r["label"] == 1
        real, fake, mask = (read_png(base / r[k]) for k in ("real", "fake", "mask"))
        assert real.shape == fake.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
        assert real.dtype == fake.dtype == mask.dtype == np.uint8
        assert not np.array_equal(real, fake)
        assert mask.max() >= 128
        plan = r["plan"]
        assert plan["index"] == r["i"] and plan["size"] == SIZE and plan["pairing"] == "self"
        assert r["target_id"] == r["source_id"] == "astronaut.png" == plan["target"]
    text = (base / "manifest.jsonl").read_text()
    assert str(base) not in text and "/tmp" not in text  # no absolute paths in lines

    report = json.loads((base / "report.json").read_text())
    assert report["n_requested"] == 6 and report["complete"] is True
    assert report["n_ok"] == len(ok) and report["n_ok"] + report["n_skipped"] == 6
    assert len(report["skipped"]) == report["n_skipped"] == sum(report["skip_reasons"].values())
    assert report["recipe"] == "mixed" and report["seed"] == 0 and report["size"] == SIZE
    assert set(report["versions"]) == {"python", "numpy", "cv2", "mediapipe", "synth"}
    run = json.loads((base / "run.json").read_text())
    assert run["index"] == "index" and run["src"] == "skimage:astronaut" and run["n"] == 6
    assert not list(base.rglob("*.tmp"))


def test_joblib_two_workers_matches_serial_bytes(base, tmp_path):
    out = tmp_path / "joblib"
    report = generate(out, 6, index=base / "index", size=SIZE, workers=2, backend="joblib", progress=False)
    assert report["n_ok"] + report["n_skipped"] == 6
    assert (out / "manifest.jsonl").read_bytes() == (base / "manifest.jsonl").read_bytes()
    assert tree_bytes(out) == tree_bytes(base)


def test_other_seed_gives_other_samples(base, tmp_path):
    out = tmp_path / "seed1"
    generate(out, 6, index=base / "index", size=SIZE, seed=1, backend="serial", progress=False)
    a, b = lines(base), lines(out)
    assert [r["plan"]["seed"] for r in a] != [r["plan"]["seed"] for r in b]
    assert tree_bytes(out) != tree_bytes(base)


def test_replay_from_manifest_is_byte_identical(base):
    pool = FacePool.from_index(load_index(base / "index"))
    faces = FaceCache(pool)
    for r in lines(base):
        if r["status"] != "ok":
            continue
        real, fake, mask = render(r["plan"], faces)
        for kind, img in zip(("real", "fake", "mask"), (real, fake, mask)):
            assert np.array_equal(read_png(base / r[kind]), img), (r["id"], kind)


def test_rerun_of_finished_run_does_nothing(base, capsys, caplog):
    before = {p: p.stat().st_mtime_ns for p in (base / "manifest.jsonl", base / "report.json")}
    with caplog.at_level(logging.INFO, logger="synth.generate"):
        report = generate(base, 6, size=SIZE, backend="serial", progress=False)
    assert caplog.messages == [f"{base}: all 6 samples done; nothing to do"]
    assert capsys.readouterr().out == ""  # the library logs, it does not print
    from synth.cli import main as synth_main

    assert synth_main(["generate", "--n", "6", "--size", str(SIZE), "--out", str(base), "--backend", "serial"]) == 0
    assert capsys.readouterr().out.endswith(f"\n{base}: all 6 samples done; nothing to do\n")  # the CLI shows it
    assert synth_main(["generate", "--n", "6", "--size", str(SIZE), "--out", str(base), "--backend", "serial", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert report == json.loads((base / "report.json").read_text())
    assert before == {p: p.stat().st_mtime_ns for p in before}


@pytest.mark.parametrize("change, key", [({"seed": 5}, "seed"), ({"size": 96}, "size"), ({"n": 7}, "n"),
                                          ({"recipe": "self-blend"}, "recipe"),
                                          ({"weights": {"blend=alpha": 2.0}}, "weights")])
def test_different_definition_in_same_out_is_refused(base, change, key):
    args = {"n": 6, "size": SIZE, "backend": "serial", "progress": False, **change}
    with pytest.raises(ValueError, match=rf"{base}.*different run: {key} was"):
        generate(base, **args)


def test_argument_errors(tmp_path, base):
    with pytest.raises(ValueError, match="backend: unknown 'threads'"):
        generate(tmp_path / "x", 2, backend="threads")
    with pytest.raises(ValueError, match="n: expected"):
        generate(tmp_path / "x", -1)
    with pytest.raises(ValueError, match="either src .* or index"):
        generate(tmp_path / "x", 2, src=tmp_path, index=base / "index", backend="serial")
    with pytest.raises(ValueError, match="scheduler"):
        generate(tmp_path / "y", 2, index=base / "index", size=SIZE, backend="dask", progress=False)
    assert set(BACKENDS) == {"serial", "joblib", "dask"}


@pytest.mark.parametrize("inside", ["run", ".", "a/b"])
def test_out_inside_src_is_refused_up_front(tmp_path, capsys, inside):
    # #18 item 4: a rerun indexed the run's own PNGs as faces, then refused on a changed index hash
    from synth.cli import main as synth_main

    src = tmp_path / "faces"
    src.mkdir()
    (src / "me.txt").write_text("mine")
    out = src / inside
    with pytest.raises(ValueError, match=r"--out .* (lies inside|is) --src .*use an --out outside"):
        generate(out, 2, src=src, size=SIZE, backend="serial", progress=False)
    argv = ["generate", "--n", "2", "--size", str(SIZE), "--src", str(src), "--out", str(out), "--quiet"]
    assert synth_main(argv) == 2
    assert "outside the source folder" in capsys.readouterr().err
    assert [p.name for p in src.iterdir()] == ["me.txt"]  # nothing written


def test_arguments_are_checked_before_any_work(base, tmp_path, capsys):
    # #18 item 9: --size 100000 was accepted and every sample "skipped"; replay abc, --weights errors
    from synth.cli import main as synth_main
    from synth.replay import replay

    gen = ["generate", "--n", "2", "--index", str(base / "index"), "--out", str(tmp_path / "o"), "--quiet",
           "--backend", "serial"]
    for bad in ("100000", "31", "abc"):
        with pytest.raises(SystemExit) as e:
            synth_main(gen + ["--size", bad])
        assert e.value.code == 2
        assert f"argument --size: expected an integer in [32, 4096] (output side in pixels), got '{bad}'" in \
            capsys.readouterr().err
    with pytest.raises(ValueError, match=r"size: expected an integer in \[32, 4096\], got 100000"):
        generate(tmp_path / "o", 2, index=base / "index", size=100_000, backend="serial", progress=False)
    with pytest.raises(SystemExit) as e:
        synth_main(["replay", str(base), "000001", "abc"])
    assert e.value.code == 2 and "argument id: expected a sample id (e.g. 000123) or index" in capsys.readouterr().err
    for bad in ("abc", "-1", -1, True, "1.5"):
        with pytest.raises(ValueError, match=r"id .*: expected a sample id"):
            replay(base, [bad], dest=tmp_path / "r")
    assert not (tmp_path / "r").exists()

    weights = tmp_path / "w.json"
    cases = [(None, "no such file"), ("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
             ('{"blend=poison": 2}', "'blend=poison' is not a choice of recipe 'mixed'; its blend choices: blend=alpha, "),
             ('{"blnd=poisson": 2}', "'blnd=poisson' is not a choice of recipe 'mixed'; keys are KIND=VALUE with KIND"),
             ('{"blend=poisson": -1}', "weights['blend=poisson']: expected a finite number >= 0")]
    for text, message in cases:
        if text is not None:
            weights.write_text(text)
        assert synth_main(gen + ["--size", str(SIZE), "--weights", str(weights)]) == 2
        err = capsys.readouterr().err
        assert f"synth generate: error: --weights {weights}: {message}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="weights: unknown key 'poisson'; expected KIND=VALUE"):
        generate(tmp_path / "o", 2, index=base / "index", size=SIZE, weights={"poisson": 2}, progress=False)
    weights.write_text('{"blend=poisson": 2, "occlusion=none": 1, "degrade=jpeg": 0.5}')
    from synth.generate import read_weights
    assert read_weights(weights, "mixed") == {"blend=poisson": 2.0, "degrade=jpeg": 0.5, "occlusion=none": 1.0}


def test_swap_only_recipe_needs_two_faces(base, tmp_path):
    spec = tmp_path / "swap-only.yaml"
    spec.write_text(f"extends: {REPO / 'recipes' / 'mixed.yaml'}\nname: swap-only\npairing: {{self: 0, swap: 1}}\n")
    with pytest.raises(ValueError, match=r"recipe 'swap-only' .*at least 2 usable faces.*index"):
        generate(tmp_path / "s", 2, recipe=spec, index=base / "index", size=SIZE, backend="serial", progress=False)


# ------------------------------------------------------------------ OUT that is not a run

@pytest.mark.parametrize("entry", ["manifest.jsonl", "report.json", "real/000/000000.png"])
def test_generate_refuses_a_non_empty_folder_that_is_not_a_run(base, tmp_path, capsys, entry):
    from synth.cli import main as synth_main

    out = tmp_path / "mine"
    (out / entry).parent.mkdir(parents=True, exist_ok=True)
    (out / entry).write_bytes(b"the user's own file")
    (out / "notes.txt").write_text("keep me")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    top = entry.split("/")[0]
    listed = re.escape(", ".join(sorted([top, "notes.txt"])))
    with pytest.raises(ValueError, match=rf"--out {out}: not empty and not a generate run .*holds {listed}\."):
        generate(out, 2, index=base / "index", size=SIZE, backend="serial", progress=False)
    argv = ["generate", "--n", "2", "--size", str(SIZE), "--index", str(base / "index"), "--out", str(out),
            "--backend", "serial", "--quiet"]
    assert synth_main(argv) == 2
    err = capsys.readouterr().err
    assert "not a generate run" in err and "--force" in err and len(err.strip().splitlines()) == 1
    # nothing written, nothing left behind (no .lock, no run.json)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == sorted({top, "notes.txt"})
    if entry.startswith("real/"):  # --force: generate into it all the same
        assert synth_main(argv + ["--force"]) == 0
        assert (out / "notes.txt").read_text() == "keep me" and (out / "run.json").is_file()
        assert lines(out) == lines(base)[:2]


def test_what_an_interrupted_first_run_leaves_is_not_a_user_folder(base, tmp_path):
    out = tmp_path / "killed"
    (out / "index").mkdir(parents=True)  # killed while indexing, before run.json
    (out / ".lock").write_text("")
    report = generate(out, 2, index=base / "index", size=SIZE, backend="serial", progress=False)
    assert report["complete"] and not (out / ".lock").exists()
    with pytest.raises(ValueError, match="not a directory"):
        generate(out / "run.json", 2, index=base / "index", size=SIZE, backend="serial", progress=False)


def test_a_refused_generate_leaves_nothing_behind(base, tmp_path):
    spec = tmp_path / "swap-only.yaml"
    spec.write_text(f"extends: {REPO / 'recipes' / 'mixed.yaml'}\nname: swap-only\npairing: {{self: 0, swap: 1}}\n")
    with pytest.raises(ValueError, match="at least 2 usable faces"):
        generate(tmp_path / "s", 2, recipe=spec, index=base / "index", size=SIZE, backend="serial", progress=False)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="scheduler"):  # refused after run.json and manifest.jsonl were made
        generate(tmp_path / "d", 2, index=base / "index", size=SIZE, backend="dask", progress=False)
    assert not (tmp_path / "d").exists()
    (tmp_path / "e").mkdir()
    with pytest.raises(ValueError, match="scheduler"):
        generate(tmp_path / "e", 2, index=base / "index", size=SIZE, backend="dask", progress=False)
    assert list((tmp_path / "e").iterdir()) == []
    run_json = (base / "run.json").read_bytes()
    with pytest.raises(ValueError, match="different run"):
        generate(base, 6, size=SIZE, seed=9, backend="serial", progress=False)
    assert (base / "run.json").read_bytes() == run_json and not (base / ".lock").exists()


# ---------------------------------------------------------------------------- resume

def test_resume_after_truncation_is_byte_identical(base, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("index", "default-src"))
    full = (base / "manifest.jsonl").read_bytes()
    keep = full.split(b"\n")[:2]
    # two whole lines, then half of the third (an append cut by a crash); files of later
    # samples are left damaged or missing, as a crash mid-chunk would leave them
    (out / "manifest.jsonl").write_bytes(b"\n".join(keep) + b"\n" + full.split(b"\n")[2][:40])
    for r in lines(base)[2:]:
        if r["status"] == "ok":
            (out / r["fake"]).write_bytes(b"garbage")
            (out / r["mask"]).unlink()
    (out / "report.json").unlink()
    # the copy has no index of its own: same definition = same index content (hash)
    report = generate(out, 6, index=base / "index", size=SIZE, backend="serial", progress=False)
    assert (out / "manifest.jsonl").read_bytes() == full
    assert tree_bytes(out) == tree_bytes(base)
    assert report["n_made_this_run"] == 4 and report["n_done"] == 6


def test_disk_full_stops_with_one_line_exit_3_and_resumes_byte_identical(base, tmp_path, capsys, monkeypatch):
    # #18 item 10: ENOSPC ended in two OSError tracebacks and no report.json
    import errno

    from synth.cli import main as synth_main

    real_write = writer.write_bytes_atomic
    calls = {"n": 0}

    def fills_up(path, data, fsync=True):
        if not str(path).endswith(".png"):  # run.json, report.json: room for them
            return real_write(path, data, fsync=fsync)
        calls["n"] += 1
        if calls["n"] > 3 * 3 + 1:  # samples 0-2 written, then the disk is full inside sample 3
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data, fsync=fsync)

    monkeypatch.setattr(writer, "write_bytes_atomic", fills_up)
    out = tmp_path / "full"
    argv = ["generate", "--n", "6", "--size", str(SIZE), "--index", str(base / "index"), "--out", str(out),
            "--backend", "serial", "--quiet"]
    assert synth_main(argv) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"synth generate: error: no space left on device writing .*/fake/000/000003.png: 2 of 6 samples "
                     r"done and kept; free some space and rerun the same command to continue", err), err
    assert "exit codes:" in synth_main.__globals__["build_parser"]().format_help()
    report = json.loads((out / "report.json").read_text())
    assert report["n_done"] == 2 and not report["complete"] and "no space left" in report["stopped"]
    assert (out / "manifest.jsonl").read_bytes() == b"".join(
        (base / "manifest.jsonl").read_bytes().splitlines(keepends=True)[:2])  # only finished chunks counted
    assert not list(out.rglob("*.tmp")) and (out / "run.json").is_file() and not (out / ".lock").exists()
    with pytest.raises(OSError) as e:  # the library raises the same, as an OSError with errno ENOSPC
        generate(out, 6, index=base / "index", size=SIZE, backend="serial", progress=False)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(writer, "write_bytes_atomic", real_write)  # space freed: the rerun continues
    assert synth_main(argv) == 0
    assert (out / "manifest.jsonl").read_bytes() == (base / "manifest.jsonl").read_bytes()
    assert tree_bytes(out) == tree_bytes(base)


def test_manifest_out_of_order_is_an_error(base, tmp_path):
    out = tmp_path / "bad"
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("index", "default-src"))
    recs = (base / "manifest.jsonl").read_text().splitlines(keepends=True)
    (out / "manifest.jsonl").write_text(recs[1] + recs[0])
    with pytest.raises(ValueError, match=r"manifest.jsonl:1: .*expected sample 0, found 1"):
        writer.scan_manifest(out / "manifest.jsonl")


# ------------------------------------------------------------------- replay of tampered lines

def _tampered_run(base: Path, tmp_path: Path, change) -> Path:
    """A copy of ``base`` (in ``tmp_path/run``) whose first ok manifest line is ``change(record)``."""
    out = tmp_path / "run"
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("replay"))
    recs = lines(out)
    k = next(n for n, r in enumerate(recs) if r["status"] == "ok")
    recs[k] = change(dict(recs[k]))
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return out


def _first_ok(base: Path) -> tuple[int, dict]:
    return next((n, r) for n, r in enumerate(lines(base), 1) if r["status"] == "ok")


@pytest.mark.parametrize("field, value", [("id", "../../escaped"), ("id", "{abs}/escaped"), ("id", "000099"),
                                          ("id", None), ("real", "../../escaped.png"), ("real", "{abs}/escaped.png"),
                                          ("mask", "real/../../escaped.png")])
def test_replay_refuses_ids_and_paths_outside_the_run(base, tmp_path, capsys, field, value):
    from synth.cli import main as synth_main
    from synth.replay import replay

    outside = tmp_path / "outside"
    outside.mkdir()
    cv2.imwrite(str(outside / "escaped.png"), np.zeros((SIZE, SIZE, 3), np.uint8))
    value = value.format(abs=outside) if isinstance(value, str) else value
    out = _tampered_run(base, tmp_path, lambda r: {**r, field: value})
    lineno, rec = _first_ok(base)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=rf"manifest.jsonl:{lineno}: '{field}' must be"):
        replay(out, [rec["i"]])
    assert synth_main(["replay", str(out), rec["id"]]) == 2
    err = capsys.readouterr().err
    assert f"manifest.jsonl:{lineno}: '{field}' must be" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere


@pytest.mark.parametrize("run_json, message", [
    ({"recipe": "mixed"}, "no 'index' (the path of the run's index); pass --index"),
    ({"index": 3}, "no 'index'"), ([1], "no 'index'"), ("{", "corrupt"),
])
def test_replay_of_a_run_json_without_index_is_a_clear_error(base, tmp_path, capsys, run_json, message):
    # #18: run.json without "index" gave a KeyError
    from synth.cli import main as synth_main

    out = tmp_path / "run"
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("index", "default-src"))
    (out / "run.json").write_text(run_json if isinstance(run_json, str) else json.dumps(run_json))
    assert synth_main(["replay", str(out), "000000"]) == 2
    err = capsys.readouterr().err
    assert f"synth replay: error: {out / 'run.json'}: {message}" in err and len(err.strip().splitlines()) == 1
    assert synth_main(["replay", str(out), "000000", "--index", str(base / "index"), "--dest", str(tmp_path / "r")]) == 0


@pytest.mark.parametrize("change, message", [
    (lambda r: {k: v for k, v in r.items() if k != "i"}, r"'i' must be a sample index"),
    (lambda r: {**r, "i": "0"}, r"'i' must be a sample index"),
    (lambda r: {k: v for k, v in r.items() if k != "plan"}, r"no 'plan' object"),
    (lambda r: {**r, "plan": {**r["plan"], "target": "../../etc/passwd"}}, r"face '../../etc/passwd' is not in the index"),
    (lambda r: {**r, "real": "run.json"}, r"run.json is not a readable image"),
    (lambda r: {**r, "plan": {k: v for k, v in r["plan"].items() if k != "mask"}},
     r"manifest.jsonl:\d+: plan of sample \d+: missing key 'mask'"),
])
def test_replay_of_a_tampered_line_is_a_clear_error(base, tmp_path, capsys, change, message):
    from synth.cli import main as synth_main

    out = _tampered_run(base, tmp_path, change)
    lineno, rec = _first_ok(base)
    assert synth_main(["replay", str(out), rec["id"]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"manifest.jsonl:{lineno}: " in err and re.search(message, err), err
    assert not (out / "replay").exists()


def test_replay_refuses_a_line_that_is_not_an_object(base, tmp_path):
    from synth.replay import replay

    out = _tampered_run(base, tmp_path, lambda r: r)
    with open(out / "manifest.jsonl", "a") as f:
        f.write("[1, 2]\n")
    with pytest.raises(ValueError, match=rf"manifest.jsonl:{len(lines(base)) + 1}: not a JSON object"):
        replay(out, [0])


_CHILD = """
import sys
from synth.generate import generate
generate(sys.argv[1], int(sys.argv[2]), index=sys.argv[3], size={size}, workers=2, backend="joblib", progress=False)
"""


def _start_child(out: Path, n: int, index: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD.format(size=SIZE), str(out), str(n), str(index)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_lines(out: Path, proc: subprocess.Popen, k: int, timeout: float = 60) -> int:
    manifest = out / "manifest.jsonl"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if manifest.exists():
            count = manifest.read_bytes().count(b"\n")
            if count >= k:
                return count
        if proc.poll() is not None:
            pytest.fail(f"child ended before writing {k} lines: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    pytest.fail(f"no {k} manifest lines within {timeout} s")


@pytest.mark.slow
def test_kill_9_then_resume_equals_clean_run(base, tmp_path, caplog):
    n = 48
    clean = tmp_path / "clean"
    generate(clean, n, index=base / "index", size=SIZE, backend="serial", progress=False)

    out = tmp_path / "killed"
    proc = _start_child(out, n, base / "index")
    done = _wait_for_lines(out, proc, 6)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-run
    proc.wait()
    assert done < n, "the run finished before it could be killed"
    assert (out / "cache").is_dir()  # 1 face x 48 samples: the face store, kept for the resume
    report = generate(out, n, index=base / "index", size=SIZE, workers=2, backend="joblib", progress=False)
    assert report["n_done"] == n and report["n_made_this_run"] < n
    assert not (out / "cache").exists()  # complete: the store is gone
    assert (out / "manifest.jsonl").read_bytes() == (clean / "manifest.jsonl").read_bytes()
    assert tree_bytes(out) == tree_bytes(clean)
    assert not list(out.rglob("*.tmp"))
    with caplog.at_level(logging.INFO, logger="synth.generate"):
        generate(out, n, index=base / "index", size=SIZE, workers=2, backend="joblib", progress=False)
    assert "nothing to do" in caplog.text


@pytest.mark.slow
def test_sigint_keeps_manifest_consistent(base, tmp_path):
    n = 400
    out = tmp_path / "sigint"
    proc = _start_child(out, n, base / "index")
    _wait_for_lines(out, proc, 1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted: " in err and "rerun the same command to continue" in err
    done = int(re.findall(r"interrupted: (\d+) done", err)[-1])  # the Interrupted exception's message
    recs = lines(out)
    assert 0 < done == len(recs) < n and [r["i"] for r in recs] == list(range(done))
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and report["n_done"] == done


# --------------------------------------------------------------------- bad input corpus

@pytest.fixture(scope="module")
def corpus(tmp_path_factory, bomb_png):
    """Good faces (astronaut, its mirror image, grey, RGBA and 16-bit variants) and bad files."""
    from skimage import data

    src = tmp_path_factory.mktemp("corpus") / "src"
    src.mkdir()
    face = cv2.resize(data.astronaut()[:320, 80:400], (256, 256), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(src / "good_a.png"), bgr)
    cv2.imwrite(str(src / "good_b.jpg"), bgr[:, ::-1])
    cv2.imwrite(str(src / "gray.png"), cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(src / "rgba.png"), np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]))
    cv2.imwrite(str(src / "deep16.png"), bgr.astype(np.uint16) * 257)
    good_png = (src / "good_a.png").read_bytes()
    (src / "truncated.png").write_bytes(good_png[: len(good_png) // 3])
    (src / "corrupt.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (src / "notes.txt").write_text("not an image")
    cv2.imwrite(str(src / "tiny.png"), bgr[:16, :16])
    (src / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    cv2.imwrite(str(src / "faceless.png"), np.full((128, 128, 3), 90, np.uint8))
    idx = src.parent / "index"
    build_index(src, idx, workers=1, progress=False)
    return src, idx


def test_bad_inputs_are_indexed_out_and_generation_skips_unreadable_sources(corpus, tmp_path):
    src, idx = corpus
    status = {r["relpath"]: r["status"] for r in load_index(idx).records}
    assert "notes.txt" not in status
    for name in ("truncated.png", "corrupt.jpg", "tiny.png", "bomb.png"):
        assert status[name] == "unreadable", name
    assert status["faceless.png"] == "no_face"
    good = {"good_a.png", "good_b.jpg", "gray.png", "rgba.png", "deep16.png"}
    assert {k for k, s in status.items() if s == "ok"} == good

    # a source that was fine when indexed becomes unreadable before generation
    work = tmp_path / "src"
    shutil.copytree(src, work)
    idx2 = tmp_path / "index"
    build_index(work, idx2, workers=1, progress=False)
    (work / "gray.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    n = 20
    out = tmp_path / "out"
    report = generate(out, n, index=idx2, size=SIZE, backend="serial", progress=False)
    recs = lines(out)
    assert [r["i"] for r in recs] == list(range(n))
    uses_gray = {r["i"] for r in recs if "gray.png" in (r["plan"]["target"], r["plan"]["source"])}
    assert uses_gray, "no sample drew the broken face; pick another n"
    unreadable = {r["i"] for r in recs if r["status"] == "skipped" and r["reason_kind"] == "ImageReadError"}
    assert unreadable == uses_gray
    for r in recs:
        if r["status"] == "skipped":
            assert r["reason"] and r["file"] and str(work) not in r["reason"]
    assert report["skip_reasons"].get("ImageReadError") == len(uses_gray)
    assert report["n_ok"] + report["n_skipped"] == n == report["n_done"]
    assert {s["i"] for s in report["skipped"]} >= uses_gray
    assert all(s["file"] == "gray.png" for s in report["skipped"] if s["i"] in uses_gray and s["i"] in unreadable)
    assert any(r["plan"]["pairing"] == "swap" for r in recs)  # two+ faces: the mixed recipe swaps too


def test_files_left_out_at_index_time_are_in_the_report(corpus, tmp_path):
    # #18 item 11: files skipped at index time were missing from report.json
    src, idx = corpus
    report = generate(tmp_path / "out", 2, index=idx, size=SIZE, backend="serial", progress=False)
    left_out = {r["file"]: r for r in report["index_skipped"]}
    assert set(left_out) == {"truncated.png", "corrupt.jpg", "tiny.png", "bomb.png", "faceless.png"}
    assert left_out["faceless.png"]["status"] == "no_face" and left_out["bomb.png"]["status"] == "unreadable"
    assert all(r["reason"] for r in left_out.values())
    assert report["n_index_skipped"] == 5 and report["index_skip_reasons"] == {"no_face": 1, "unreadable": 4}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["index_skipped"] == report["index_skipped"]


def test_generate_src_with_a_dangling_symlink_reruns(corpus, tmp_path):
    # #18 item 3 through generate --src: every call re-indexes the source, and the rerun failed on the link
    src = tmp_path / "faces"
    src.mkdir()
    shutil.copy(corpus[0] / "good_a.png", src / "good_a.png")
    (src / "gone.jpg").symlink_to(src / "nowhere.jpg")
    out = tmp_path / "out"
    for _ in range(2):
        report = generate(out, 2, src=src, size=SIZE, backend="serial", progress=False)
        assert report["complete"] and [r["file"] for r in report["index_skipped"]] == ["gone.jpg"]
        assert "broken symbolic link" in report["index_skipped"][0]["reason"]


# ------------------------------------------------------------------------------- dask

@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_manifest(base, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        out = tmp_path / "dask"
        report = generate(out, 6, index=base / "index", size=SIZE, backend="dask",
                          scheduler=cluster.scheduler_address, progress=False)
    assert report["n_done"] == 6 and report["backend"] == "dask"
    assert (out / "manifest.jsonl").read_bytes() == (base / "manifest.jsonl").read_bytes()
    assert tree_bytes(out) == tree_bytes(base)
