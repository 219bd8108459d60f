"""Two-sided quality mismatch (target_degrade) and the min_visible rule (plan_and_render)."""
import json

import numpy as np
import pytest

from synth import OnlineFakes, make_fake
from synth.generate import generate
from synth.pool import FacePool
from synth.recipe import choice_keys, derive_seed, load_recipe, sample_plan
from synth.render import DegenerateSample, FaceCache, render
from synth.visibility import InvisibleFake, plan_and_render, visible_difference

SIZE = 96


@pytest.fixture
def one_face_pool(astro, astro_lm):
    return FacePool.from_arrays({"a": astro}, {"a": astro_lm})


_OFF = "{resample: {p: 0}, blur: {p: 0}, compression: {p: 0}, noise: {p: 0}}"
_POST_OFF = "{resample: {p: 0}, sharpness: {p: 0}, noise: {p: 0}, compression: {p: 0}}"


def _recipe(tmp_path, body, name="r"):
    """A recipe on top of mixed: self-blends, alpha blend, large regions (never empty at this
    size), no occlusion, no post, nothing
    degraded and no colour transfer unless ``body`` says otherwise."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"extends: mixed\nname: {name}\npairing: {{self: 1}}\nblend: {{ops: {{alpha: {{}}}}}}\n"
                 f"mask: {{regions: {{full: 1, inner: 1}}, occlusion: {{p: 0}}}}\npost: {{stages: {_POST_OFF}}}\ncolor: {{p: 0}}\n"
                 f"degrade: {{stages: {_OFF}}}\n" + body)
    return load_recipe(p)


# ------------------------------------------------------------------- two-sided mismatch

def test_mixed_draws_the_quality_mismatch_in_both_directions(jittered_pool):
    recipe, pool = load_recipe("mixed"), jittered_pool()
    plans = [sample_plan(recipe, pool, i, 0, size=128) for i in range(300)]
    src = [bool(p["source_degrade"]) for p in plans]
    tgt = [bool(p["target_degrade"]) for p in plans]
    src_only = sum(s and not t for s, t in zip(src, tgt))
    tgt_only = sum(t and not s for s, t in zip(src, tgt))
    both = sum(s and t for s, t in zip(src, tgt))
    # the recipe's arithmetic: 0.25 / 0.25 / 0.23 (binomial sd ~ 7.5 of 300)
    assert 45 <= src_only <= 105 and 45 <= tgt_only <= 105 and abs(src_only - tgt_only) <= 40
    assert 0 < both < 110
    keys = [k for p in plans for k in choice_keys(p)]
    assert any(k.startswith("target_degrade=") for k in keys) and any(k.startswith("degrade=") for k in keys)


def test_target_degrade_degrades_the_real_and_the_background_alike(tmp_path, one_face_pool):
    recipe = _recipe(tmp_path, "min_visible: 0\nperturb: {stages: {color: {p: 1}, sharpness: {p: 0}, geometry: {p: 0}}}\n"
                               "target_degrade: {stages: {resample: {p: 0}, blur: {p: 1}, compression: {p: 0}, "
                               "noise: {p: 0}}}\n")
    pool = one_face_pool
    plan = sample_plan(recipe, pool, 0, 0, size=SIZE)
    assert plan["target_degrade"] and plan["target_degrade"][0]["op"] in recipe.spec["target_degrade"]["stages"]["blur"]["ops"]
    real, fake, mask = render(plan, FaceCache(pool))
    outside = mask == 0
    assert outside.any()
    # alpha blending: outside the mask the fake is its real, so the pair differs only where forged
    assert np.array_equal(fake[outside], real[outside])
    plain = dict(plan, target_degrade=[])
    real0, fake0, mask0 = render(plain, FaceCache(pool))
    assert np.array_equal(mask0, mask)
    # the real is the degraded target photo, not the clean crop
    assert np.abs(real.astype(int) - real0.astype(int))[outside].mean() > 0.5
    assert np.array_equal(fake0[outside], real0[outside])
    # old plans without the key render as plans with no target_degrade steps
    old = {k: v for k, v in plan.items() if k != "target_degrade"}
    for x, y in zip(render(old, FaceCache(pool)), (real0, fake0, mask0)):
        assert np.array_equal(x, y)


def test_new_keys_default_off(tmp_path, jittered_pool):
    p = tmp_path / "plain.yaml"
    p.write_text("mask: {regions: {full: 1}}\nblend: {ops: {alpha: {}}}\n")
    recipe = load_recipe(p)
    assert recipe.spec["min_visible"] == 0.0 and recipe.spec["max_attempts"] == 8
    assert recipe.spec["target_degrade"] == {"order": [], "stages": {}}
    plan = sample_plan(recipe, jittered_pool(), 3, 0)
    assert plan["target_degrade"] == [] and plan["attempt"] == 0 and plan["seed"] == derive_seed(0, 3)


# ------------------------------------------------------------------------ min_visible

def test_visible_difference_counts_pixels_with_mask_at_least_128():
    real = np.zeros((4, 4, 3), np.uint8)
    fake = real.copy()
    fake[0, 0] = (3, 6, 9)  # mean 6 over one pixel
    fake[3, 3] = 200        # outside the measured pixels
    mask = np.zeros((4, 4), np.uint8)
    mask[0, :2] = 128
    mask[3, 3] = 127
    assert visible_difference(real, fake, mask) == pytest.approx(3.0)
    assert visible_difference(real, fake, np.zeros((4, 4), np.uint8)) == 0.0


def _sometimes_invisible(tmp_path):
    # the only change of the pasted copy is a brightness shift drawn half of the time:
    # without it a self-blend is pixel-identical to its real inside the mask
    return _recipe(tmp_path, "perturb: {stages: {sharpness: {p: 0}, geometry: {p: 0}, color: {p: 0.5, ops: "
                             "{color_shift: {params: {brightness: [0.1, 0.2]}}}}}}\n"
                             f"target_degrade: {{stages: {_OFF}}}\nmin_visible: 2.0\nmax_attempts: 6\n",
                   name="sometimes")


def test_invisible_plan_is_redrawn_and_the_redraw_replays(tmp_path, one_face_pool):
    recipe, pool = _sometimes_invisible(tmp_path), one_face_pool
    faces = FaceCache(pool)
    found = None
    for i in range(30):
        plan, real, fake, mask = plan_and_render(recipe, pool, faces, i, 0, SIZE)
        assert visible_difference(real, fake, mask) >= 2.0
        if plan["attempt"] > 0:
            found = (i, plan, real, fake, mask)
            break
    assert found, "no sample needed a second plan (p = 0.5 each: expected within a few samples)"
    i, plan, real, fake, mask = found
    k = plan["attempt"]
    # every earlier attempt was invisible; the recorded plan is attempt k of sample i
    for j in range(k):
        earlier = sample_plan(recipe, pool, i, 0, SIZE, attempt=j)
        assert earlier["attempt"] == j and visible_difference(*render(earlier, faces)) < 2.0
    assert plan == sample_plan(recipe, pool, i, 0, SIZE, attempt=k)
    assert plan["index"] == i and plan["seed"] == derive_seed(0, i, k) != derive_seed(0, i)
    assert plan["target"] == sample_plan(recipe, pool, i, 0, SIZE)["target"]  # same target
    # replay of the recorded plan (from JSON, fresh cache): byte-identical, no rule involved
    again = render(json.loads(json.dumps(plan)), FaceCache(pool))
    for x, y in zip((real, fake, mask), again):
        assert np.array_equal(x, y)
    # and the whole thing is deterministic
    plan2, *images2 = plan_and_render(recipe, pool, FaceCache(pool), i, 0, SIZE)
    assert plan2 == plan and all(np.array_equal(x, y) for x, y in zip((real, fake, mask), images2))


def test_rule_off_keeps_the_first_plan(tmp_path, one_face_pool):
    recipe = _recipe(tmp_path, f"perturb: {{stages: {{color: {{p: 0}}, sharpness: {{p: 0}}, geometry: {{p: 0}}}}}}\n"
                               f"target_degrade: {{stages: {_OFF}}}\nmin_visible: 0\n")
    pool = one_face_pool
    plan, real, fake, mask = plan_and_render(recipe, pool, FaceCache(pool), 0, 0, SIZE)
    assert plan["attempt"] == 0 and visible_difference(real, fake, mask) == 0.0


def test_never_visible_is_skipped_with_a_reason(tmp_path, one_face_pool, astro, astro_lm):
    recipe = _recipe(tmp_path, f"perturb: {{stages: {{color: {{p: 0}}, sharpness: {{p: 0}}, geometry: {{p: 0}}}}}}\n"
                               f"target_degrade: {{stages: {_OFF}}}\nmin_visible: 1.0\nmax_attempts: 3\n",
                     name="never")
    pool = one_face_pool
    with pytest.raises(InvisibleFake, match=r"3 plan\(s\).*min_visible 1") as e:
        plan_and_render(recipe, pool, FaceCache(pool), 0, 0, SIZE)
    assert isinstance(e.value, DegenerateSample) and e.value.plan["attempt"] == 2
    with pytest.raises(InvisibleFake):
        make_fake(astro, recipe=recipe, size=SIZE, target_landmarks=astro_lm)
    with pytest.raises(DegenerateSample, match="3 plans in a row"):
        OnlineFakes(pool, recipe=recipe, size=SIZE, length=2, retries=3)[0]
    report = generate(tmp_path / "out", 3, recipe=recipe, size=64, backend="serial", progress=False)
    assert report["n_ok"] == 0 and report["skip_reasons"] == {"InvisibleFake": 3}
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["status"] == "skipped" and "min_visible" in r["reason"] and r["plan"]["attempt"] == 2
               for r in lines)


def test_library_paths_and_weights_follow_the_rule(tmp_path, one_face_pool, astro, astro_lm):
    recipe, pool = _sometimes_invisible(tmp_path), one_face_pool
    for seed in range(4):
        real, fake, mask, plan = make_fake(astro, recipe=recipe, seed=seed, size=SIZE, target_landmarks=astro_lm)
        assert visible_difference(real, fake, mask) >= 2.0
        assert plan == sample_plan(recipe, pool, 0, seed, SIZE, target_key="a", attempt=plan["attempt"]) | {
            "target": "target", "source": "target"}
    ds = OnlineFakes(pool, recipe=recipe, size=SIZE, seed=0, length=8)
    attempts = []
    for n in range(len(ds)):
        item = ds[n]
        assert visible_difference(item["real"], item["fake"], item["mask"]) >= 2.0
        attempts.append(json.loads(item["plan"])["attempt"])
    assert max(attempts) > 0
    weights = {"perturb=color_shift": 1.0, "blend=alpha": 2.0}
    plan, *_ = plan_and_render(recipe, pool, FaceCache(pool), 5, 0, SIZE, weights)
    assert plan == sample_plan(recipe, pool, 5, 0, SIZE, weights, attempt=plan["attempt"])


def test_generate_records_attempts_and_replays(tmp_path):
    from synth.replay import replay

    recipe = _sometimes_invisible(tmp_path)
    out = tmp_path / "run"
    report = generate(out, 8, recipe=recipe, size=64, backend="serial", progress=False)
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    ok = [r for r in lines if r["status"] == "ok"]
    assert report["n_ok"] == len(ok) and any(r["plan"]["attempt"] > 0 for r in ok)
    redrawn = [r["id"] for r in ok if r["plan"]["attempt"] > 0]
    result = replay(out, redrawn)
    assert all(result[f"{sid} identical"] for sid in redrawn)


@pytest.mark.parametrize("mask", [np.ones((4, 4), np.float32), np.full((4, 4), 255, np.uint8)[:3], np.ones((4, 4), bool)])
def test_visible_difference_refuses_a_mask_that_would_select_nothing(mask):
    real = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="mask: expected uint8"):
        visible_difference(real, real + 3, mask)


def test_visible_difference_equals_numpy_mean_exactly():
    """The rule compares the value with a threshold: it must be numpy's float64 mean to the last bit."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        h, w = rng.integers(1, 80, 2)
        real, fake = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
        mask = rng.integers(0, 256, (h, w), dtype=np.uint8)
        inside = mask >= 128
        want = float(np.abs(real.astype(int) - fake)[inside].mean(dtype=np.float64)) if inside.any() else 0.0
        assert visible_difference(real, fake, mask) == want
