"""suite/model/manifest.py: an edited model.json (its preprocessing too) or a
short labels.txt is one line naming the file."""
import json

import pytest

from suite.data import contract
from suite.model.manifest import MANIFEST_FILE, load_manifest
from suite.plumbing import errors


GOOD_MANIFEST = {"model": "layer_14", "num_classes": 3, "image_size": 32, "shortcut": "A"}


@pytest.mark.parametrize("change,expected", [
    (lambda m: "{not json", "cannot be read"),
    (lambda m: dict(m, model="layer_7"), "model 'layer_7'"),
    (lambda m: dict(m, image_size=0), "image_size is 0"),
    (lambda m: {k: v for k, v in m.items() if k != "num_classes"}, "num_classes is None"),
    (lambda m: dict(m, shortcut="Z"), "shortcut 'Z'"),
    (lambda m: dict(m, flip_average="yes"), "flip_average is 'yes'"),
    (lambda m: [1, 2], "not a JSON object"),
])
def test_an_edited_manifest_is_one_line_naming_it(tmp_path, change, expected):
    contract.write_labels(str(tmp_path), ["a", "b", "c"])
    changed = change(dict(GOOD_MANIFEST))
    (tmp_path / MANIFEST_FILE).write_text(
        changed if isinstance(changed, str) else json.dumps(changed), encoding="utf-8")
    with pytest.raises(errors.UserError) as error:
        load_manifest(str(tmp_path))
    assert expected in str(error.value) and MANIFEST_FILE in str(error.value)


def test_a_short_labels_file_is_one_line_naming_it(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(GOOD_MANIFEST), encoding="utf-8")
    contract.write_labels(str(tmp_path), ["a", "b"])
    with pytest.raises(errors.UserError, match="labels.txt names 2 classes but .* says 3"):
        load_manifest(str(tmp_path))
    (tmp_path / contract.LABELS_FILE).unlink()
    with pytest.raises(errors.UserError, match="labels.txt not found"):
        load_manifest(str(tmp_path))


@pytest.mark.parametrize("preprocessing,expected", [
    ({"std_rgb": [0, 1, 1]}, "preprocessing std_rgb is [0, 1, 1], not three finite numbers "
                             "above 0"),
    ({"mean_rgb": [1, 2]}, "preprocessing mean_rgb is [1, 2], not three finite numbers"),
    ({"mean_rgb": "123"}, "preprocessing mean_rgb is '123'"),
    ([1, 2, 3], "preprocessing is not a JSON object"),
])
def test_an_edited_preprocessing_is_one_line_naming_model_json(tmp_path, preprocessing,
                                                               expected):
    manifest = {"model": "layer_14", "num_classes": 3, "image_size": 32,
                "preprocessing": preprocessing}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    contract.write_labels(str(tmp_path), ["a", "b", "c"])
    with pytest.raises(errors.UserError) as error:
        load_manifest(str(tmp_path))
    assert expected in str(error.value) and MANIFEST_FILE in str(error.value)
