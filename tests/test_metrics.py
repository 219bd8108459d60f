import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from detector.metrics import binary_metrics, compute_metrics, eer, format_metrics, lookup, tpr_at_fpr, video_scores


def test_auc_ap_match_sklearn_on_random_inputs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y * 0.8
    s[:50] = np.round(s[:50])  # ties
    m = compute_metrics(y, s)
    assert m["auc"] == roc_auc_score(y, s)
    assert m["ap"] == average_precision_score(y, s)
    assert (m["n"], m["n_real"], m["n_fake"]) == (500, int((y == 0).sum()), int(y.sum()))


def test_eer_and_tpr_hand_checked():
    # reals 0.1 0.2 0.3 0.6 | fakes 0.4 0.7 0.8 0.9
    # ROC (fpr, tpr): (0,0) (0,.25) (0,.5) (0,.75) (.25,.75) (.25,1) (.5,1) (.75,1) (1,1)
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert eer(y, s) == (0.25, 0.6)  # FPR = FNR = 0.25 exactly at threshold 0.6
    assert tpr_at_fpr(y, s, 0.1) == 0.75
    assert tpr_at_fpr(y, s, 0.25) == 1.0  # vertical segment at FPR .25: best TPR within budget
    assert tpr_at_fpr(y, s, 0.0) == 0.75


def test_eer_interpolates_between_roc_points():
    # reals 1 2 3 4 | fakes 2.5 5 6 (3 fakes): ROC (0,0) (0,1/3) (0,2/3) (.25,2/3) (.5,2/3) (.5,1) (.75,1) (1,1)
    # FNR = 1/3 along the horizontal run from FPR 0 to .5: crossing at FPR = FNR = 1/3
    y = [0, 0, 0, 0, 1, 1, 1]
    s = [1, 2, 3, 4, 2.5, 5, 6]
    value, thr = eer(y, s)
    assert value == pytest.approx(1 / 3)
    assert thr == 3  # first ROC point past the crossing: (.5, 2/3)
    # TPR@FPR .1 on that run is flat at 2/3; between (.5,2/3) and ... vertical at .5 -> 1
    assert tpr_at_fpr(y, s, 0.1) == pytest.approx(2 / 3)
    assert tpr_at_fpr(y, s, 0.6) == 1.0


def test_tpr_interpolates_on_a_sloped_segment():
    # tied scores make a diagonal ROC segment from (0,0) to (0.5,0.5)
    y = [0, 1, 0, 1]
    s = [0.9, 0.9, 0.1, 0.5]
    # ROC: (0,0) -> (.5,.5) [0.9 tie] -> (.5,1) [0.5] -> (1,1)
    assert tpr_at_fpr(y, s, 0.1) == pytest.approx(0.1)
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(0.01)


def test_per_generator_and_video_breakdown():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    gen = ["real"] * 4 + ["a", "a", "b", "b"]
    m = compute_metrics(y, s, generators=gen, videos=["v0", "v0", "v1", "v2", "v3", "v3", "v4", "v5"])
    assert set(m["per_generator"]) == {"a", "b"}
    ma = m["per_generator"]["a"]
    assert (ma["n_real"], ma["n_fake"]) == (4, 2)
    assert ma["auc"] == roc_auc_score([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.4, 0.7])
    assert m["per_generator"]["b"]["auc"] == 1.0
    ids, vy, vs = video_scores(y, s, ["v0", "v0", "v1", "v2", "v3", "v3", "v4", "v5"])
    assert ids.tolist() == ["v0", "v1", "v2", "v3", "v4", "v5"]
    assert vy.tolist() == [0, 0, 0, 1, 1, 1] and vs[0] == pytest.approx(0.15) and vs[3] == pytest.approx(0.55)
    assert m["video"]["auc"] == roc_auc_score(vy, vs)
    assert lookup(m, "auc", "b") == 1.0
    with pytest.raises(KeyError, match="no generator 'c'"):
        lookup(m, "auc", "c")
    assert "a " in format_metrics(m) and "video-level" in format_metrics(m)


def test_one_class_gives_nan_and_warning_not_crash():
    m = compute_metrics([1, 1, 1], [0.2, 0.5, 0.9], generators=["x", "x", "x"])
    assert math.isnan(m["auc"]) and math.isnan(m["eer"]) and math.isnan(m["tpr@fpr0.1"])
    assert "only one class" in m["warning"] and "n_real=0" in m["warning"]
    assert "only one class" in m["per_generator"]["x"]["warning"]
    assert "warning" in format_metrics(m)
    assert "warning" in binary_metrics([], [])


@pytest.mark.parametrize("labels, scores, match", [
    ([0, 1], [0.1], "same length"),
    ([0, 2], [0.1, 0.2], "labels must be 0"),
    ([0, 1], [0.1, float("nan")], "non-finite"),
])
def test_bad_input_raises(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(labels, scores)


def test_video_with_mixed_labels_is_an_error():
    with pytest.raises(ValueError, match="video 'v'"):
        compute_metrics([0, 1], [0.1, 0.2], videos=["v", "v"])
