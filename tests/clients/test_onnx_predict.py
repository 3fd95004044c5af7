"""clients/onnx_predict.py with TensorFlow made unimportable: the same answers
as useModel.py --json, its text output, and its one-line errors."""
import json
import os
import shutil
import subprocess

import pytest

from helpers import JPEG_IMAGES, run_script, without_tensorflow
from suite.model.manifest import load_manifest






def run_without_tensorflow(*args, cwd):
    """clients/onnx_predict.py ARGS where TensorFlow cannot be imported
    (helpers.without_tensorflow); cwd outside the repository, so nothing is
    found from there."""
    return subprocess.run(without_tensorflow("onnx_predict.py", *args), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_onnx_client_without_tensorflow_agrees_with_use_model(exported, colour_data,
                                                             sample_images, trained_model,
                                                             tmp_path):
    """Every colour image (PNGs, re-encoded as FlowIO stores them), JPEGs kept
    byte for byte (4:2:0), an unreadable file and a missing path: the same
    JSON as useModel.py --json, the same top-1, probabilities within 1e-3."""
    image_dir, _ = colour_data
    jpeg_folder, _ = sample_images
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    inputs = [image_dir, jpeg_folder, broken, tmp_path / "missing.png"]
    labels = load_manifest(trained_model)["labels"]
    expected = json.loads(run_script("useModel.py", *inputs, "--model_dir", trained_model,
                                     "--json", "--top_k", len(labels)).stdout)
    result = run_without_tensorflow(exported["onnx"], *inputs, "--json", "--top_k",
                                    len(labels), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["checkpoint"] == expected["checkpoint"]
    assert len(document["results"]) == len(expected["results"]) == 120 + len(JPEG_IMAGES) + 2
    for ours, theirs in zip(document["results"], expected["results"]):
        assert ours.keys() == theirs.keys() and ours["path"] == theirs["path"]
        if "error" in theirs:
            assert ours["error"] == theirs["error"]
            continue
        assert ours["label"] == theirs["label"], ours["path"]
        assert [p["label"] for p in ours["predictions"]][:1] == [theirs["label"]]
        mine = {p["label"]: p["probability"] for p in ours["predictions"]}
        for prediction in theirs["predictions"]:
            assert abs(mine[prediction["label"]] - prediction["probability"]) < 1e-3, ours
    assert [r["path"] for r in document["results"] if "error" in r] == [
        str(tmp_path / "missing.png"), str(broken)]
    # The model is good enough that agreeing is about real predictions
    # (chance: 40 of the 120).
    correct = sum(r["label"] == os.path.basename(os.path.dirname(r["path"]))
                  for r in document["results"] if os.path.dirname(os.path.dirname(
                      r["path"])) == image_dir)
    assert correct >= 100


@pytest.mark.slow
def test_onnx_client_text_output_and_errors_without_tensorflow(exported, colour_data,
                                                              tmp_path):
    image = os.path.join(colour_data[0], "red", "000.png")
    result = run_without_tensorflow(exported["onnx"], image, "--top_k", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{image}: red  (red 0.") and line.count(", ") == 1
    # Only unreadable inputs: one line each, exit code 1.
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = run_without_tensorflow(exported["onnx"], empty, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"{empty}: error: empty file"]
    # A file that is not a model: one line, exit 2.
    result = run_without_tensorflow(empty, image, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "not an ONNX model" in result.stderr
    # The model carries its class names: alone, it needs no labels file; with
    # the names in another order beside it, it is refused in one line.
    alone = tmp_path / "alone.onnx"
    shutil.copy(exported["onnx"], alone)
    result = run_without_tensorflow(alone, image, "--top_k", "1", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(f"{image}: red  (red 0.")
    with open(exported["onnx_labels"], encoding="utf-8") as f:
        labels = f.read().splitlines()
    (tmp_path / "alone.labels.txt").write_text("\n".join(labels[::-1]), encoding="utf-8")
    result = run_without_tensorflow(alone, image, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path / 'alone.labels.txt'} does not match the class "
                           f"names in {alone} (the same names in another order)"), line


# ---------------------------------------------------------------------------
# Models carry their class names; foreign models are refused in one line.
# Tiny ONNX models built with onnx.helper: the colour of the image, averaged
# over its pixels, through a softmax, so a red image is class 0.
# ---------------------------------------------------------------------------
COLOUR_LABELS = ["red", "green", "blue"]


def colour_model(path, shape=("N", 8, 8, 3), elem_type="FLOAT", metadata=None):
    """Writes an ONNX model with one input of shape and type elem_type (the
    spatial axes: 1, 2 for NHWC, else 2, 3) and probabilities [N, 3] out;
    metadata: its metadata_props. Returns path."""
    import onnx
    from onnx import TensorProto, helper
    spatial = [1, 2] if shape[-1] == 3 else [2, 3]
    nodes = [helper.make_node("Cast", ["pixels"], ["float"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["float"], ["mean"], axes=spatial, keepdims=0),
             helper.make_node("Softmax", ["mean"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "colour",
        [helper.make_tensor_value_info("pixels", getattr(TensorProto, elem_type), list(shape))],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [shape[0], 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return str(path)


def colour_image(folder, name="red.png", colour=(200, 40, 40)):
    from PIL import Image
    path = os.path.join(folder, name)
    Image.new("RGB", (12, 10), colour).save(path)
    return path


def labels_file(model, labels):
    path = os.path.splitext(str(model))[0] + ".labels.txt"
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{label}\n" for label in labels))
    return path


def refusal(model):
    """The ModelError the client raises for model, as its one line."""
    import onnx_predict
    with pytest.raises(onnx_predict.ModelError) as error:
        onnx_predict.OnnxClassifier(model)
    [line] = str(error.value).splitlines()
    return line


@pytest.mark.parametrize("shape,elem_type,has", [
    (("N", 3, 8, 8), "FLOAT", "float32 [N, 3, 8, 8]"),        # NCHW
    ((1, 8, 8, 3), "FLOAT", "float32 [1, 8, 8, 3]"),          # a fixed batch of 1
    (("N", 8, 8, 3), "UINT8", "uint8 [N, 8, 8, 3]"),          # bytes, not float pixels
    (("N", "height", "width", 3), "FLOAT", "float32 [N, height, width, 3]"),  # any side
    (("N", 8, 6, 3), "FLOAT", "float32 [N, 8, 6, 3]"),        # not square
])
def test_a_foreign_onnx_model_is_refused_saying_what_input_it_needs(tmp_path, shape, elem_type,
                                                                    has):
    """Another tool's .onnx, with a labels file beside it: refused before any
    image is read, in one line with what the client feeds and what it takes."""
    model = colour_model(tmp_path / "foreign.onnx", shape, elem_type)
    labels_file(model, COLOUR_LABELS)
    line = refusal(model)
    assert line.startswith(f"{model}: not a pixel model of useModel.py --export_onnx"), line
    assert "one input float32 [N, S, S, 3]" in line and f"its input 'pixels' is {has}" in line


def test_a_model_that_carries_its_labels_needs_no_labels_file(tmp_path):
    import onnx_predict
    model = colour_model(tmp_path / "model.onnx", metadata={
        "labels": json.dumps(COLOUR_LABELS), "max_side": "null", "checkpoint": "model.ckpt-7"})
    classifier = onnx_predict.OnnxClassifier(model)
    assert (classifier.labels, classifier.image_size, classifier.max_side,
            classifier.checkpoint) == (COLOUR_LABELS, 8, None, "model.ckpt-7")
    [result] = classifier.predict([colour_image(tmp_path)])
    assert result["label"] == "red"
    # The same names in the same order beside it (Windows line ends too): used.
    labels = labels_file(model, COLOUR_LABELS)
    with open(labels, "w", encoding="utf-8", newline="\r\n") as f:
        f.write("red\ngreen\nblue\n")
    assert onnx_predict.OnnxClassifier(model).labels == COLOUR_LABELS


@pytest.mark.parametrize("in_file,why", [
    (["blue", "green", "red"], "the same names in another order"),
    (["red", "green", "cyan"], "line 3 is 'cyan', the model's is 'blue'"),
    (["red", "green"], "2 names, the model has 3"),
])
def test_a_labels_file_that_disagrees_with_the_model_is_refused(tmp_path, in_file, why):
    """A labels file in another order (or from another model) beside a model
    that carries its names: one line naming both files, never wrong labels."""
    model = colour_model(tmp_path / "model.onnx",
                         metadata={"labels": json.dumps(COLOUR_LABELS)})
    labels = labels_file(model, in_file)
    line = refusal(model)
    assert line.startswith(f"{labels} does not match the class names in {model} ({why})"), line


def test_an_older_export_without_embedded_labels_uses_its_labels_file(tmp_path):
    """An ONNX model with the right input but no names (an export before they
    were embedded): its labels file is used, and needed."""
    import onnx_predict
    model = colour_model(tmp_path / "older.onnx", metadata={"max_side": "null"})
    line = refusal(model)
    assert f"cannot read the class names {tmp_path / 'older.labels.txt'} (no such file)" in line
    labels_file(model, COLOUR_LABELS)
    [result] = onnx_predict.OnnxClassifier(model).predict([colour_image(tmp_path)])
    assert result["label"] == "red"
    labels_file(model, COLOUR_LABELS[:2])
    assert "has 2 class names" in refusal(model)
    with open(os.path.join(tmp_path, "older.labels.txt"), "wb") as f:
        f.write(b"red\ngr\xe9en\nblue\n")  # not UTF-8
    assert "cannot read the class names" in refusal(model)


@pytest.mark.parametrize("metadata,why", [
    ({"max_side": "abc"}, "max_side is 'abc', not JSON"),
    ({"max_side": "-3"}, "max_side is '-3', not null or a positive whole number"),
    ({"max_side": "true"}, "max_side is 'true', not null or a positive whole number"),
    ({"labels": "red,green,blue"}, "labels is 'red,green,blue', not JSON"),
    ({"labels": "[1, 2, 3]"}, "labels is not a list of class names"),
    ({"labels": '["red", "green"]'}, "labels has 2 class names, the model 3 outputs"),
    ({"pixel_contract": '{"shape": ["N", 9, 9, 3]}'}, "pixel_contract does not describe"),
])
def test_odd_metadata_is_refused_in_one_line(tmp_path, metadata, why):
    """Metadata that no export writes: one line naming the model and the
    entry, not a traceback, and not every image blamed."""
    model = colour_model(tmp_path / "odd.onnx", metadata=metadata)
    labels_file(model, COLOUR_LABELS)
    line = refusal(model)
    assert line.startswith(f"{model}: its metadata is not what useModel.py --export_onnx "
                           f"writes ({why}"), line


@pytest.mark.slow
def test_refusals_are_one_line_from_the_command_line(tmp_path):
    """What a user sees for a foreign model and for a mismatched labels file,
    without TensorFlow: one line, exit code 2."""
    image = colour_image(tmp_path)
    foreign = colour_model(tmp_path / "foreign.onnx", (1, 3, 8, 8))
    mismatched = colour_model(tmp_path / "model.onnx",
                              metadata={"labels": json.dumps(COLOUR_LABELS)})
    labels_file(mismatched, COLOUR_LABELS[::-1])
    for model, text in ((foreign, "its input 'pixels' is float32 [1, 3, 8, 8]"),
                        (mismatched, "another order")):
        result = run_without_tensorflow(model, image, cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
        [line] = result.stderr.splitlines()
        assert line.startswith("error: ") and text in line, line
