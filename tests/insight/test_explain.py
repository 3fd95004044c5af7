"""Tests of suite/insight/explain.py and useModel.py --explain: Grad-CAM maps
of a model whose classes are told apart by a small patch alone must lie on
that patch, wherever in the image it is."""
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import useModel
from helpers import TRAIN_ARGS, one_error_line, run_script
from suite.data.convert import convert
from suite.images.inputs import encode_image
from suite.insight.explain import (Explainer, class_id, explanation_png, normalise_maps,
                                   output_path, write_explanations)
from suite.plumbing.errors import UserError

# The class is the colour of an 8 px square on grey noise; the square lies in
# a random quadrant (0 top left, 1 top right, 2 bottom left, 3 bottom right),
# so a map that always lit one place, or the whole image, would fail.
PATCH_COLOURS = {"blue": (30, 30, 230), "red": (230, 30, 30)}
SIZE, PATCH = 32, 8


def make_patch_images(root, per_class, seed):
    """per_class images of each colour under root/<colour>/NNN.png: {path: quadrant}."""
    rng = np.random.default_rng(seed)
    quadrants, half = {}, SIZE // 2
    for name, colour in PATCH_COLOURS.items():
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            pixels = rng.normal(128, 30, (SIZE, SIZE, 1)).repeat(3, axis=2)
            quadrant = int(rng.integers(4))
            y = quadrant // 2 * half + rng.integers(0, half - PATCH + 1)
            x = quadrant % 2 * half + rng.integers(0, half - PATCH + 1)
            pixels[y:y + PATCH, x:x + PATCH] = colour
            path = os.path.join(root, name, f"{i:03d}.png")
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            quadrants[path] = quadrant
    return quadrants


def heaviest_quadrant(heat_map):
    """The quadrant (numbered as above) holding most of the map's mass."""
    h, w = heat_map.shape[0] // 2, heat_map.shape[1] // 2
    return int(np.argmax([heat_map[:h, :w].sum(), heat_map[:h, w:].sum(),
                          heat_map[h:, :w].sum(), heat_map[h:, w:].sum()]))


@pytest.fixture(scope="module")
def patch_model(module_tmp):
    """A layer_14 model trained on the patch images (17 s on 2 cores): its model_dir."""
    root = module_tmp / "patches"
    make_patch_images(str(root / "images"), per_class=40, seed=0)
    convert(str(root / "images"), str(root / "records"), workers=1)  # FlowIO.py's conversion
    model_dir = str(root / "models")
    run_script("train.py", "--data_dir", root / "records", "--model_dir", model_dir,
               *TRAIN_ARGS, "--model", "layer_14", "--epochs", "12")
    return model_dir


@pytest.fixture(scope="module")
def fresh(module_tmp):
    """Images the model never saw, {path: quadrant}, under a folder that also
    holds a file that is no image; red/000.png and blue/000.png share a name."""
    root = module_tmp / "fresh"
    quadrants = make_patch_images(str(root / "images"), per_class=25, seed=99)
    (root / "images" / "broken.jpg").write_bytes(b"not an image")
    return str(root / "images"), quadrants


@pytest.fixture(scope="module")
def explained(patch_model, fresh, module_tmp):
    """useModel.py FRESH --explain OUT --json: (its JSON, OUT, its stderr).
    --checkpoint latest: best/ is the first checkpoint that validated
    perfectly, a few steps in, before the maps settle on the patch."""
    out_dir = str(module_tmp / "maps")  # not there yet
    result = run_script("useModel.py", fresh[0], "--model_dir", patch_model, "--checkpoint",
                        "latest", "--explain", out_dir, "--json")
    return json.loads(result.stdout), out_dir, result.stderr


@pytest.mark.slow
def test_heat_maps_lie_on_the_patch(patch_model, fresh, explained):
    document, _, _ = explained
    _, quadrants = fresh
    results = {r["path"]: r for r in document["results"] if r["path"] in quadrants}
    assert len(results) == len(quadrants)
    right = sum(r["label"] == os.path.basename(os.path.dirname(path))
                for path, r in results.items())
    assert right >= 0.95 * len(results), f"the model learned {right} of {len(results)}"
    paths = sorted(results)
    explainer = Explainer(patch_model, "latest")
    _, maps, probabilities = explainer.explain(
        [encode_image(path)[0] for path in paths],
        [class_id(results[path]["explained_class"], explainer.labels) for path in paths])
    explainer.close()
    hits = [heaviest_quadrant(m) == quadrants[path] for m, path in zip(maps, paths)]
    assert np.mean(hits) >= 0.9, f"{sum(hits)} of {len(hits)} maps peak on the patch"
    assert maps.shape == (len(paths), SIZE, SIZE) and maps.max() == 1.0 and maps.min() >= 0
    assert np.all(probabilities > 0.5)  # the predicted class, as the plain network sees it


@pytest.mark.slow
def test_one_two_panel_png_per_image_under_unique_names(fresh, explained):
    document, out_dir, stderr = explained
    root, quadrants = fresh
    broken = [r for r in document["results"] if r["path"].endswith("broken.jpg")]
    assert len(broken) == 1 and "error" in broken[0] and "explanation" not in broken[0]
    pngs = [r["explanation"] for r in document["results"] if "predictions" in r]
    assert len(pngs) == len(quadrants) == len(set(pngs))
    assert sorted(os.listdir(out_dir)) == sorted(os.path.basename(p) for p in pngs)
    for result in document["results"][:6] + document["results"][-6:]:
        if "explanation" not in result:
            continue
        stem = os.path.splitext(os.path.basename(result["path"]))[0]
        assert re.fullmatch(re.escape(stem) + r"(-\d+)?\.png",
                            os.path.basename(result["explanation"]))
        assert result["explained_class"] == result["predictions"][0]["label"]
        with Image.open(result["explanation"]) as picture:
            assert picture.format == "PNG" and 1.6 < picture.width / picture.height < 2.4
    assert {os.path.basename(p) for p in pngs} >= {"000.png", "000-2.png"}
    assert stderr.strip().splitlines()[-1] == f"Grad-CAM heat maps: {len(pngs)} PNGs in {out_dir}"


@pytest.mark.slow
def test_explain_class_explains_that_class(patch_model, fresh, explained, tmp_path):
    """What --explain_class runs (write_explanations with a class name): the
    maps of the other class, differing from the predicted class's."""
    document, _, _ = explained
    reds = [r for r in document["results"] if os.sep + "red" + os.sep in r["path"]][:4]
    answers = [{"path": r["path"], "predictions": r["predictions"]} for r in reds]
    explainer = Explainer(patch_model, "latest")
    assert write_explanations(explainer, answers, str(tmp_path), "blue") == 4
    encoded = [encode_image(r["path"])[0] for r in reds]
    _, red_maps, red_p = explainer.explain(encoded, [class_id("red", explainer.labels)] * 4)
    _, blue_maps, blue_p = explainer.explain(encoded, [class_id("blue", explainer.labels)] * 4)
    explainer.close()
    assert [a["explained_class"] for a in answers] == ["blue"] * 4
    for answer, before in zip(answers, reds):
        with open(answer["explanation"], "rb") as f, open(before["explanation"], "rb") as g:
            assert f.read() != g.read()
    assert np.abs(red_maps - blue_maps).mean() > 0.1
    np.testing.assert_allclose(red_p + blue_p, 1.0, rtol=1e-5)


@pytest.mark.slow
def test_an_explain_class_the_model_lacks_is_one_line(patch_model, fresh, tmp_path):
    result = run_script("useModel.py", fresh[0], "--model_dir", patch_model, "--explain",
                        tmp_path / "maps", "--explain_class", "green", check=False)
    one_error_line(result, "--explain_class 'green' is not a class", "blue, red")
    assert not (tmp_path / "maps").exists()


@pytest.mark.parametrize("flags, expected", [
    (["image.png", "--explain_class", "red"], "--explain_class goes with --explain"),
    (["--export", "somewhere", "--explain", "maps"], "--explain explains the images"),
])
def test_explain_flags_out_of_place_are_one_line(flags, expected, capsys):
    with pytest.raises(SystemExit) as stopped:
        useModel.parse_args(flags)
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], errors


def test_maps_are_scaled_to_their_own_peak_and_zero_stays_zero():
    maps = np.stack([np.full((4, 4), 0.0), np.arange(16.0).reshape(4, 4) / 3])
    scaled = normalise_maps(maps)
    np.testing.assert_array_equal(scaled[0], 0.0)
    assert scaled[1].max() == 1.0 and scaled[1, 0, 0] == 0.0


def test_output_names_never_take_a_file_already_there(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"the user's own")
    taken = set()
    names = [output_path(str(tmp_path), path, taken)
             for path in ("a/cat.jpg", "b/cat.jpg", "dog.jpeg", "c/dog.png")]
    assert [os.path.basename(n) for n in names] == ["cat-2.png", "cat-3.png", "dog.png",
                                                   "dog-2.png"]


def test_explanation_png_is_two_panels_side_by_side():
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = explanation_png(pixels, np.linspace(0, 1, 32 * 32).reshape(32, 32), "a.jpg",
                           "Grad-CAM: cat (p=0.93)")
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG" and 1.6 < picture.width / picture.height < 2.4


def test_unknown_class_names_some_that_exist():
    with pytest.raises(UserError, match=r"'dog' is not a class .* a, b, c, d, e and 2 more"):
        class_id("dog", list("abcdefg"))
    assert class_id("c", list("abc")) == 2
