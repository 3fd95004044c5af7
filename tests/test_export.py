"""useModel.py --export / --export_tflite / --export_onnx and Evaluation.py
--image_dir, run as subprocesses the way a user runs them; the exported models
are loaded the way TensorFlow Serving, a TFLite app (LiteRT) and a back-end
without TensorFlow (clients/onnx_predict.py in ONNX Runtime) load them."""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import FlowIO
import modeldir
import useModel
from conftest import REPO, run_script
from test_hostile_inputs import png

sys.path.insert(0, os.path.join(REPO, "clients"))
import onnx_predict  # noqa: E402

pytestmark = pytest.mark.slow  # the scripts run as subprocesses


# JPEG copies of colour images: (file name, colour folder, image number).
JPEG_IMAGES = [(f"{colour}_{i}.jpg", colour, i) for colour in ("blue", "green", "red")
               for i in (0, 7, 13)]


def error_lines(stderr):
    """The lines a user reads, without TensorFlow's own log lines."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def sorted_to_label_order(outputs, num_classes):
    """The signature's best-first probabilities back in labels.txt order."""
    ids, values = outputs["class_ids"].numpy(), outputs["probabilities"].numpy()
    table = np.zeros((len(ids), num_classes), np.float32)
    np.put_along_axis(table, ids, values, axis=1)
    return table


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory):
    """One export run (SavedModel + TFLite + ONNX) into a folder that already
    holds a version 3 and a non-version folder: {"dir", "saved_model",
    "tflite", "onnx", ...}."""
    root = tmp_path_factory.mktemp("export")
    export_dir = root / "serving"
    (export_dir / "3").mkdir(parents=True)          # an older version
    (export_dir / "notes").mkdir()                  # not a version: ignored
    tflite = root / "mobile" / "model.tflite"
    onnx_model = root / "backend" / "model.onnx"
    result = run_script("useModel.py", "--export", export_dir, "--export_tflite", tflite,
                        "--export_onnx", onnx_model, "--model_dir", trained_model, "--json")
    document = json.loads(result.stdout)["exported"]
    return dict(document, dir=str(export_dir))


@pytest.fixture(scope="module")
def sample_images(colour_data, tmp_path_factory):
    """A folder of JPEGs made from the colour images, and their bytes by name."""
    image_dir, _ = colour_data
    folder = tmp_path_factory.mktemp("jpegs")
    encoded = {}
    for name, colour, index in JPEG_IMAGES:
        with Image.open(os.path.join(image_dir, colour, f"{index:03d}.png")) as image:
            image.convert("RGB").save(folder / name, quality=90)
        encoded[name] = (folder / name).read_bytes()
    return str(folder), encoded


def use_model_probabilities(paths, model_dir, labels):
    """useModel.py --json on paths, in fp32 as the SavedModel computes:
    {basename: probabilities in label order}. (bf16 against fp32:
    tests/test_precision.py.)"""
    result = run_script("useModel.py", *paths, "--model_dir", model_dir, "--json",
                        "--top_k", str(len(labels)), "--precision", "fp32")
    table = {}
    for entry in json.loads(result.stdout)["results"]:
        assert "error" not in entry, entry
        row = np.zeros(len(labels))
        for prediction in entry["predictions"]:
            row[labels.index(prediction["label"])] = prediction["probability"]
        table[os.path.basename(entry["path"])] = row
    return table


def test_saved_model_layout_for_tensorflow_serving(exported):
    assert exported["saved_model"] == os.path.join(exported["dir"], "4")  # next free number
    assert sorted(os.listdir(exported["dir"])) == ["3", "4", "notes"]     # no staging left
    version = exported["saved_model"]
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    assert os.path.isfile(os.path.join(version, "variables", "variables.index"))


def test_saved_model_agrees_with_use_model_on_jpegs(exported, sample_images, trained_model):
    folder, encoded = sample_images
    labels = FlowIO.read_labels(os.path.join(trained_model, "labels.txt"))
    expected = use_model_probabilities([folder], trained_model, labels)
    serving = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"]
    names = sorted(encoded)
    outputs = serving(image_bytes=tf.constant([encoded[name] for name in names]))
    assert outputs["classes"].shape == (len(names), len(labels))
    probabilities = sorted_to_label_order(outputs, len(labels))
    for row, name, classes, ids in zip(probabilities, names, outputs["classes"].numpy(),
                                       outputs["class_ids"].numpy()):
        assert [c.decode() for c in classes] == [labels[i] for i in ids]
        assert classes[0].decode() == labels[int(np.argmax(expected[name]))]
        np.testing.assert_allclose(row, expected[name], atol=1e-4, err_msg=name)
    # The model is good enough that the comparison is about real predictions.
    assert sum(outputs["classes"].numpy()[i, 0].decode() == name.split("_")[0]
               for i, name in enumerate(names)) >= len(names) - 1


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_saved_model_takes_other_formats_as_flowio_stores_them(exported, colour_data,
                                                               trained_model, tmp_path):
    """PNG (with transparency), GIF, BMP and WebP: the served graph re-encodes
    them as FlowIO does, so it agrees with useModel.py closely (the JPEG
    encoders are not byte-identical, hence a looser tolerance than for JPEGs)."""
    image_dir, _ = colour_data
    labels = FlowIO.read_labels(os.path.join(trained_model, "labels.txt"))
    with Image.open(os.path.join(image_dir, "green", "005.png")) as image:
        rgb = image.convert("RGB")
    rgba = rgb.convert("RGBA")
    alpha = np.full(rgb.size[::-1], 255, np.uint8)
    alpha[:10, :] = 0                              # a transparent band: white in FlowIO
    rgba.putalpha(Image.fromarray(alpha))
    files = {"a.png": _encode(rgb, "PNG"), "alpha.png": _encode(rgba, "PNG"),
             "a.gif": _encode(rgb.quantize(256), "GIF"), "a.bmp": _encode(rgb, "BMP"),
             "a.webp": _encode(rgb, "WEBP", lossless=True)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    expected = use_model_probabilities([str(tmp_path)], trained_model, labels)
    serving = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"]
    names = sorted(files)
    outputs = serving(image_bytes=tf.constant([files[name] for name in names]))
    probabilities = sorted_to_label_order(outputs, len(labels))
    for row, name in zip(probabilities, names):
        assert np.argmax(row) == np.argmax(expected[name]), name
        np.testing.assert_allclose(row, expected[name], atol=1e-2, err_msg=name)
    with pytest.raises(tf.errors.InvalidArgumentError):
        serving(image_bytes=tf.constant([b"not an image"]))


def peak_rss_mb_since_reset():
    """This process's peak resident memory (VmHWM) in MB; reset_peak_rss()
    starts a new measurement (Linux: /proc/self/clear_refs, "5")."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def test_saved_model_refuses_an_oversized_image_from_its_header(exported, sample_images):
    """A 140 KB PNG of 12,000 x 12,000 pixels (144 MB as pixels, several times
    that through the graph) pushed a server past 6 GB. Now the header is
    checked first: InvalidArgument, no memory spent, and the server goes on."""
    serving = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"]
    _, encoded = sample_images
    good = encoded[sorted(encoded)[0]]
    serving(image_bytes=tf.constant([good]))  # everything loaded and warm
    big, thin = png(12_000, 12_000), png(60_000, 1)
    try:
        reset_peak_rss()
    except OSError:
        pytest.skip("cannot reset the peak-memory counter here")
    start = peak_rss_mb_since_reset()
    for data, size in ((big, "12000x12000"), (thin, "60000x1")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"image of {size} pixels refused"):
            serving(image_bytes=tf.constant([good, data]))
    assert peak_rss_mb_since_reset() - start < 50
    outputs = serving(image_bytes=tf.constant([good]))
    assert outputs["classes"].shape[0] == 1
    # The measurement would have seen it: decoding alone takes the pixels' size.
    reset_peak_rss()
    start = peak_rss_mb_since_reset()
    assert tf.io.decode_png(big).shape == (12_000, 12_000, 1)
    assert peak_rss_mb_since_reset() - start > 100


def test_tflite_model_runs_in_litert_and_agrees(exported, sample_images, trained_model):
    """In LiteRT (ai_edge_litert, the runtime tf.lite.Interpreter's warning
    points to), with the pixels prepared by the TensorFlow-free client's code."""
    from ai_edge_litert.interpreter import Interpreter
    folder, encoded = sample_images
    manifest = modeldir.load_manifest(trained_model)
    size, labels = manifest["image_size"], manifest["labels"]
    with open(exported["tflite_labels"], encoding="utf-8") as f:
        assert f.read().splitlines() == labels
    names = sorted(encoded)
    serving = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"]
    reference = sorted_to_label_order(
        serving(image_bytes=tf.constant([encoded[name] for name in names])), len(labels))
    interpreter = Interpreter(model_path=exported["tflite"])
    details = interpreter.get_input_details()[0]
    assert details["dtype"] == np.float32 and list(details["shape"][1:]) == [size, size, 3]
    # What a client does: image file -> resized, cropped RGB 0..255 pixels.
    pixels = np.stack([onnx_predict.image_pixels(os.path.join(folder, name), size)
                       for name in names])
    assert pixels.shape == (len(names), size, size, 3) and 0 <= pixels.min() < pixels.max() <= 255
    # useModel.tflite_pixels, the same in TensorFlow, gives the same pixels.
    np.testing.assert_allclose(useModel.tflite_pixels([encoded[name] for name in names], size),
                               pixels, atol=0.01)
    interpreter.resize_tensor_input(details["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], pixels)
    interpreter.invoke()
    probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert probabilities.shape == (len(names), len(labels))
    np.testing.assert_allclose(probabilities, reference, atol=1e-3)
    assert (probabilities.argmax(1) == reference.argmax(1)).all()


def test_onnx_model_contract(exported, trained_model, tmp_path, monkeypatch):
    """Pixels in, probabilities out, batch size free, the labels beside it."""
    import onnx
    import onnxruntime
    manifest = modeldir.load_manifest(trained_model)
    size, labels = manifest["image_size"], manifest["labels"]
    assert exported["onnx_labels"] == os.path.splitext(exported["onnx"])[0] + ".labels.txt"
    with open(exported["onnx_labels"], encoding="utf-8") as f:
        assert f.read().splitlines() == labels
    assert sorted(os.listdir(os.path.dirname(exported["onnx"]))) == [  # no temporaries left
        "model.labels.txt", "model.onnx"]
    model = onnx.load(exported["onnx"])
    assert {o.domain: o.version for o in model.opset_import}[""] == useModel.ONNX_OPSET
    # Each of layer_14's four option-A shortcuts is split into a Concat
    # (useModel.split_padded_shortcuts); the probabilities below and the
    # client's agreement with useModel.py check that it computes the same.
    op_types = [node.op_type for node in model.graph.node]
    assert op_types.count("Concat") == 4 and "Pad" not in op_types
    session = onnxruntime.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    [model_input], [output] = session.get_inputs(), session.get_outputs()
    assert (model_input.name, model_input.type, model_input.shape) == (
        "pixels", "tensor(float)", ["N", size, size, 3])
    assert (output.name, output.shape) == ("probabilities", ["N", len(labels)])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["checkpoint"] == modeldir.resolve_checkpoint(trained_model)
    assert json.loads(metadata["max_side"]) is None
    # Any batch size; rows are probabilities and do not depend on the batch.
    pixels = np.random.default_rng(0).uniform(0, 255, (5, size, size, 3)).astype(np.float32)
    batch = session.run(None, {"pixels": pixels})[0]
    np.testing.assert_allclose(batch.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(session.run(None, {"pixels": pixels[2:3]})[0], batch[2:3],
                               atol=1e-6)
    # The client's session (loaded from a re-saved copy with the weights in a
    # file of their own, in the temporary folder, removed afterwards; runs of
    # RUN_IMAGES) computes the same, and leaves nothing behind.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    resaved = []
    load_copy = onnx_predict._session_from_resaved_copy
    monkeypatch.setattr(onnx_predict, "_session_from_resaved_copy",
                        lambda *args: resaved.append(load_copy(*args)) or resaved[-1])
    client = onnx_predict.OnnxClassifier(exported["onnx"])
    assert resaved == [client._session] and os.listdir(tmp_path) == []
    assert sorted(os.listdir(os.path.dirname(exported["onnx"]))) == [
        "model.labels.txt", "model.onnx"]
    assert (client.image_size, client.max_side, client.labels) == (size, None, labels)
    assert client.checkpoint == metadata["checkpoint"]
    more = np.random.default_rng(1).uniform(
        0, 255, (onnx_predict.RUN_IMAGES + 3, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(client.probabilities(more),
                               session.run(None, {"pixels": more})[0], atol=1e-5)


# Runs a script with every import of TensorFlow (and of the packages that only
# the TensorFlow side installs) failing, as in a venv with only
# clients/requirements-onnx.txt, but without the cost of making one.
WITHOUT_TENSORFLOW = """
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "tf_slim", "tf2onnx", "onnx", "keras",
                                  "tf_keras", "tensorboard", "ai_edge_litert"}:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without_tensorflow(*args, cwd):
    """clients/onnx_predict.py ARGS in a fresh process where TensorFlow cannot
    be imported; cwd outside the repository, so nothing is found from there."""
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW,
                           os.path.join(REPO, "clients", "onnx_predict.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


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
    labels = modeldir.load_manifest(trained_model)["labels"]
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
    # A file that is not a model, and a model without its labels: one line, exit 2.
    result = run_without_tensorflow(empty, image, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "not an ONNX model" in result.stderr
    alone = tmp_path / "alone.onnx"
    shutil.copy(exported["onnx"], alone)
    result = run_without_tensorflow(alone, image, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "alone.labels.txt" in result.stderr


def test_export_without_a_model_is_a_one_line_error(tmp_path):
    result = run_script("useModel.py", "--export", tmp_path / "out", "--model_dir",
                        tmp_path / "nothing", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(error_lines(result.stderr)) == 1 and "train.py" in result.stderr
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_evaluation_of_an_image_tree_equals_evaluation_of_its_records(colour_data,
                                                                     trained_model, tmp_path):
    image_dir = str(tmp_path / "images")
    shutil.copytree(colour_data[0], image_dir)
    broken = os.path.join(image_dir, "red", "broken.jpg")
    with open(broken, "wb") as f:
        f.write(b"not an image")
    records = str(tmp_path / "records")
    run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", records,
               "--validation_ratio", "0")
    from_records = json.loads(run_script(
        "Evaluation.py", "--json", "--model_dir", trained_model, "--data_dir", records,
        "--split", "train", "--output_dir", tmp_path / "eval_records").stdout)
    result = run_script("Evaluation.py", "--json", "--model_dir", trained_model,
                        "--image_dir", image_dir, "--output_dir", tmp_path / "eval_tree")
    from_tree = json.loads(result.stdout)
    assert from_tree["num_examples"] == from_records["num_examples"] == 120
    assert from_tree["top1"] == from_records["top1"]
    assert from_tree["confusion_matrix"] == from_records["confusion_matrix"]
    assert sorted(row["file"] for row in from_tree["misclassified"]) == sorted(
        os.path.join(image_dir, row["file"]) for row in from_records["misclassified"])
    # The unusable file is reported as FlowIO.py reports it.
    assert from_tree["skipped"] == [{"path": broken, "reason": "not an image Pillow can read"}]
    assert f"  {broken}: not an image Pillow can read" in result.stderr
    assert from_tree["image_dir"] == os.path.abspath(image_dir)


def test_evaluation_of_a_mismatched_tree_is_a_one_line_error(colour_data, trained_model,
                                                            tmp_path):
    image_dir = tmp_path / "images"
    for colour in ("green", "red"):
        shutil.copytree(os.path.join(colour_data[0], colour), image_dir / colour)
    shutil.copytree(os.path.join(colour_data[0], "blue"), image_dir / "zebra")
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--image_dir",
                        image_dir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "zebra" in line and "missing: blue" in line
    # A class folder whose every file is unusable is no class either.
    shutil.rmtree(image_dir / "zebra")
    (image_dir / "blue").mkdir()
    (image_dir / "blue" / "empty.png").write_bytes(b"")
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--image_dir",
                        image_dir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "blue" in line and "no usable image" in line
    assert "empty.png: empty file" in result.stdout
