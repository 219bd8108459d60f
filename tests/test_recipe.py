"""Recipes: every shipped recipe validates; bad recipes fail naming file, key and problem;
plans are deterministic, JSON-able, and respect the recipe."""
import json
from pathlib import Path

import pytest
import yaml

from synth.ops import REGISTRY
from synth.recipe import RecipeError, choice_keys, derive_seed, list_recipes, load_recipe, sample_plan


def _write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_recipes_validate():
    names = list_recipes()
    for required in ("mixed", "self-blend", "swap", "rendered-swap", "blend-alpha", "blend-poisson", "blend-pyramid",
                     "blend-wavelet"):
        assert required in names
    for name in names:
        r = load_recipe(name)
        assert r.name == name and len(r.hash) == 16


def test_extends_merges_and_overrides():
    mixed, swap = load_recipe("mixed"), load_recipe("swap")
    assert swap.spec["pairing"] == {"swap": 1}
    assert swap.spec["blend"] == mixed.spec["blend"]  # inherited
    assert swap.hash != mixed.hash
    only = load_recipe("blend-poisson")
    assert list(only.spec["blend"]["ops"]) == ["poisson"]  # op groups are replaced, not merged


@pytest.mark.parametrize("text,key,problem", [
    ("extends: mixed\nblend: {ops: {nosuch: {}}}\n", "blend.ops.nosuch", "unknown op"),
    ("extends: mixed\nbogus: 1\n", "bogus", "unknown key"),
    ("extends: mixed\ncolor: {ops: {jpeg: {}}}\n", "color.ops.jpeg", "not allowed here"),
    ("extends: mixed\nblend: {ops: {pyramid: {params: {levels: [6, 3]}}}}\n", "blend.ops.pyramid.params.levels", "inverted range"),
    ("extends: mixed\nblend: {ops: {pyramid: {params: {levels: []}}}}\n", "blend.ops.pyramid.params.levels", "empty range"),
    ("extends: mixed\nblend: {ops: {pyramid: {params: {levels: 'x'}}}}\n", "blend.ops.pyramid.params.levels", "integer"),
    ("extends: mixed\nblend: {ops: {poisson: {params: {mode: [normal, weird]}}}}\n", "blend.ops.poisson.params.mode", "weird"),
    ("extends: mixed\npairing: {self: 1, clone: 2}\n", "pairing.clone", "unknown key"),
    ("extends: mixed\ncolor: {p: 1.5}\n", "color.p", "probability"),
    ("extends: mixed\nmask: {regions: {}}\n", "mask.regions", "empty"),
    ("extends: mixed\nmask: {params: {feather: [8, 1]}}\n", "mask.params", "feather"),
    ("extends: mixed\ncrop_scale: 9\n", "crop_scale", "[1.0, 3.0]"),
    ("extends: mixed\ndegrade: {order: [blur, warp]}\n", "degrade.order", "warp"),
    ("extends: nosuchparent\n", "nosuchparent", "unknown recipe"),
    ("extends: mixed\ntarget_degrade: {stages: {blur: {p: 2}}}\n", "target_degrade.stages.blur.p", "probability"),
    ("extends: mixed\ntarget_degrade: {stages: {blur: {ops: {sharpen: {}}}}}\n",
     "target_degrade.stages.blur.ops.sharpen", "not allowed here"),
    ("extends: mixed\ntarget_degrade: {order: [blur, warp]}\n", "target_degrade.order", "warp"),
    ("extends: mixed\ntarget_degrade: {stages: {blur: {ops: {jpeg: {params: {quality: 0}}}}}}\n",
     "target_degrade.stages.blur.ops.jpeg.params.quality", "minimum"),
    ("extends: mixed\ntarget_degrade: {steps: []}\n", "target_degrade.steps", "unknown key"),
    ("extends: mixed\nmin_visible: -1\n", "min_visible", "[0, 255]"),
    ("extends: mixed\nmin_visible: yes\n", "min_visible", "True"),
    ("extends: mixed\nmin_visible: '2'\n", "min_visible", "expected a number"),
    ("extends: mixed\nmax_attempts: 0\n", "max_attempts", "integer in [1, 64]"),
    ("extends: mixed\nmax_attempts: 2.5\n", "max_attempts", "2.5"),
])
def test_bad_recipes_name_file_key_problem(tmp_path, text, key, problem):
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert key in msg and problem in msg and str(path) in msg


def test_yaml_errors_and_unsafe_tags(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "a: [1, 2\n"))
    # safe_load refuses python object tags
    with pytest.raises(RecipeError):
        load_recipe(_write(tmp_path, "extends: !!python/object/apply:os.system ['true']\n"))
    with pytest.raises(RecipeError, match="unknown recipe"):
        load_recipe("definitely-not-a-recipe")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(RecipeError, match="binary.yaml: not a text file"):
        load_recipe(binary)


def _alias_bomb(levels: int = 9) -> str:
    """A "billion laughs": each level lists the previous one 10 times (10**levels leaves)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]" for k in range(1, levels)]
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["top", "pairing"])
def test_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, where):
    # #18 item 8: nested aliases in an allowed key ran into a MemoryError after 40 s at 3 GB
    import time

    bomb = _alias_bomb()
    if where == "top":
        text = bomb + "\n"
    else:  # inside an allowed key, under a mapping that is otherwise valid
        text = "pairing:\n  self: 1\n  swap:\n" + "".join(f"    {line}\n" for line in bomb.splitlines())
    path = _write(tmp_path, text)
    t0 = time.perf_counter()
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert str(path) in msg and "aliases expand to more than" in msg and len(msg) < 400


def test_small_aliases_and_recursive_aliases(tmp_path):
    base = (Path(__file__).resolve().parents[1] / "recipes" / "mixed.yaml").read_text()
    spec = yaml.safe_load(base)
    spec.pop("name", None)
    spec["blend"] = "BLEND"
    text = yaml.safe_dump(spec).replace("BLEND", "{ops: *ops}")
    ok = _write(tmp_path, "blend_ops: &ops {alpha: {weight: 1}, poisson: {weight: 2}}\n" + text, "anchors.yaml")
    with pytest.raises(RecipeError, match="blend_ops: unknown key"):  # aliases load; the extra key is refused
        load_recipe(ok)
    ok.write_text(text.replace("*ops", "{alpha: {weight: 1}, poisson: {weight: 2}}") + "description: &d ok\nname: *d\n")
    assert load_recipe(ok).name == "ok"
    loop = _write(tmp_path, "pairing: &p {self: 1, swap: [*p]}\n", "loop.yaml")
    with pytest.raises(RecipeError, match=r"loop.yaml: YAML anchors/aliases: .*recursive"):
        load_recipe(loop)
    huge = _write(tmp_path, "description: " + repr("x" * 100_000) + "\npairing: {self: [" + "1, " * 5000 + "1]}\n",
                  "huge.yaml")
    with pytest.raises(RecipeError) as e:
        load_recipe(huge)
    assert "pairing.self" in str(e.value) and len(str(e.value)) < 600


def test_circular_extends(tmp_path):
    _write(tmp_path, "extends: b.yaml\n", "a.yaml")
    _write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(RecipeError, match="circular"):
        load_recipe(tmp_path / "a.yaml")


def test_plan_is_deterministic_json_and_in_range(jittered_pool):
    recipe, pool = load_recipe("mixed"), jittered_pool()
    plans = [sample_plan(recipe, pool, i, 7, size=128) for i in range(40)]
    again = [sample_plan(recipe, pool, i, 7, size=128) for i in range(40)]
    assert plans == again
    assert json.loads(json.dumps(plans)) == plans
    assert plans != [sample_plan(recipe, pool, i, 8, size=128) for i in range(40)]
    spec = recipe.spec
    for plan in plans:
        assert plan["blend"]["op"] in spec["blend"]["ops"]
        assert plan["mask"]["region"] in spec["mask"]["regions"]
        for step in plan["source_degrade"] + plan["target_degrade"] + plan["post"] + plan["perturb"]:
            op = REGISTRY[step["op"]]
            assert set(step["params"]) == set(op.params)  # every parameter recorded, defaults too
            for name, value in step["params"].items():
                op.params[name].check(value, name)
        if plan["pairing"] == "swap":
            assert plan["source"] != plan["target"]
        else:
            assert plan["source"] == plan["target"]
    # each face is a target once per pass over the pool
    assert sorted(p["target"] for p in plans[:5]) == sorted(pool.keys)


def test_rendered_swap_smooths_every_source_and_never_the_target(jittered_pool):
    recipe, pool = load_recipe("rendered-swap"), jittered_pool()
    plans = [sample_plan(recipe, pool, i, 3, size=128) for i in range(40)]
    for plan in plans:
        assert plan["pairing"] == "swap" and plan["target_degrade"] == []
        ops = [step["op"] for step in plan["source_degrade"]]
        assert ops in (["guided_smooth"], ["downup", "guided_smooth"])   # resolution first, then texture
        smooth = plan["source_degrade"][-1]["params"]
        assert 2 <= smooth["radius"] <= 6 and 4.0 <= smooth["strength"] <= 20.0
    assert 10 < sum(len(p["source_degrade"]) == 2 for p in plans) < 40   # downup p = 0.6


def test_sampled_values_stay_in_recipe_ranges(jittered_pool):
    recipe, pool = load_recipe("blend-pyramid"), jittered_pool()
    levels = {sample_plan(recipe, pool, i, 0)["blend"]["params"]["levels"] for i in range(60)}
    assert levels <= {3, 4, 5, 6} and len(levels) > 1


def test_weights_shift_choices(jittered_pool):
    recipe, pool = load_recipe("mixed"), jittered_pool()
    count = lambda w: sum(sample_plan(recipe, pool, i, 0, weights=w)["blend"]["op"] == "wavelet" for i in range(300))  # noqa: E731
    assert count({"blend=wavelet": 20.0}) > 2 * count(None)


def test_choice_keys_and_seed(jittered_pool):
    plan = sample_plan(load_recipe("swap"), jittered_pool(), 3, 0)
    keys = choice_keys(plan)
    assert "pairing=swap" in keys and f"blend={plan['blend']['op']}" in keys
    assert derive_seed(0, 1) != derive_seed(0, 2) and derive_seed(0, 1) == derive_seed(0, 1)
    assert 0 <= derive_seed(123, 10**9) < 2**53


def test_single_face_pool_falls_back_to_self(jittered_pool):
    plan = sample_plan(load_recipe("swap"), jittered_pool(1), 0, 0)
    assert plan["pairing"] == "self"


def test_a_perturb_stage_may_soften_the_source_down_to_the_blurred_image(tmp_path, jittered_pool):
    # sharpen's amount may be negative in a recipe (the source softened as well as sharpened), down to -1
    soft = "extends: mixed\nname: soft\nperturb:\n  stages:\n    sharpness:\n      ops:\n        sharpen: {params: {amount: %s}}\n"
    ok = _write(tmp_path, soft % "[-0.5, -0.167]", "soft.yaml")
    recipe, pool = load_recipe(ok), jittered_pool()
    plans = [sample_plan(recipe, pool, i, 123, size=128) for i in range(60)]
    amounts = [op["params"]["amount"] for p in plans for op in p["perturb"] if op["op"] == "sharpen"]
    assert amounts and all(-0.5 <= a <= -0.167 for a in amounts)
    bad = _write(tmp_path, soft % "[-1.5, -0.2]", "bad.yaml")
    with pytest.raises(RecipeError, match=r"bad.yaml: perturb.stages.sharpness.ops.sharpen.params.amount: -1.5 is below "
                                          r"the minimum -1"):
        load_recipe(bad)
