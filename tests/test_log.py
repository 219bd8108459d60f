"""Logging: the library logs instead of printing, the CLIs configure it (-v / -q), and
MediaPipe's native start-up lines (XNNPACK, absl) never reach the terminal, also from workers."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from synth.log import NATIVE_NOISE, cli_logging, native_stderr_to_log

REPO = Path(__file__).resolve().parent.parent
NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
         "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
         "W0000 00:00:1796394683.860930   25330 inference_feedback_manager.cc:114] Feedback manager requires a model")


def test_native_stderr_goes_to_the_log(capfd, caplog):
    log = logging.getLogger("synth.test")
    with caplog.at_level(logging.DEBUG, logger="synth.test"), native_stderr_to_log(log):
        for line in NOISE + ("E0000 00:00:17.1 1 graph.cc:1] a real error",):
            os.write(2, (line + "\n").encode())  # as native code writes: below sys.stderr
    assert capfd.readouterr().err == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == (
        [(logging.DEBUG, line) for line in NOISE] + [(logging.WARNING, "E0000 00:00:17.1 1 graph.cc:1] a real error")])
    assert all(NATIVE_NOISE.match(line) for line in NOISE)


def test_cli_logging_levels_streams_and_restore(capsys):
    log = logging.getLogger("synth.test")
    before = logging.getLogger("synth").level
    for verbosity, shown_out, shown_err in ((-1, "", "careful\n"), (0, "done\n", "careful\n"),
                                            (1, "", "DEBUG synth.test: detail\nWARNING synth.test: careful\n")):
        with cli_logging(verbosity):
            log.debug("detail")
            log.info("done")
            log.warning("careful")
        out = capsys.readouterr()
        if verbosity == 1:
            assert out.out == "INFO synth.test: done\n" and out.err == shown_err
        else:
            assert (out.out, out.err) == (shown_out, shown_err)
    assert logging.getLogger("synth").level == before and not logging.getLogger("synth").handlers


@pytest.mark.slow
def test_synth_index_with_two_workers_prints_no_mediapipe_lines(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    a = data.astronaut()
    for name, img in (("a.png", a), ("b.png", np.ascontiguousarray(a[:, ::-1]))):
        cv2.imwrite(str(faces / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    proc = subprocess.run([sys.executable, "-m", "synth.cli", "index", str(faces), "--out", str(tmp_path / "idx"),
                           "--workers", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 ok" in proc.stdout
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert not [line for line in lines if not line.startswith("index:")], proc.stderr  # progress bars only


def test_detector_start_up_lines_are_written_before_the_constructor_returns():
    # MediaPipe opens its models on graph threads after FaceMesh() returns; on a busy machine
    # their lines came after the constructor's catch had ended (a CI flake). A pause after the
    # constructor stands in for a slow machine: nothing may reach descriptor 2 during it.
    script = ("import os, time\n"
              "from synth.face import LandmarkDetector\n"
              "d = LandmarkDetector()\n"
              "time.sleep(1.0)\n"
              "os.write(1, b'built')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and proc.stdout == "built", proc.stderr[-2000:]
    assert proc.stderr == ""


def test_mediapipe_output_to_log_sets_glog_level_unless_the_user_did(monkeypatch):
    from synth.log import mediapipe_output_to_log

    log = logging.getLogger("synth.test")
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    with mediapipe_output_to_log(log):
        assert os.environ["GLOG_minloglevel"] == "2"
    monkeypatch.setenv("GLOG_minloglevel", "0")
    with mediapipe_output_to_log(log):
        assert os.environ["GLOG_minloglevel"] == "0"
