"""useModel.py --export / --export_tflite and Evaluation.py --image_dir, run as
subprocesses the way a user runs them; the exported models are loaded the way
TensorFlow Serving and a TFLite app load them."""
import io
import json
import os
import shutil
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import FlowIO
import modeldir
import useModel
from conftest import run_script

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
    """One export run (SavedModel + TFLite) into a folder that already holds a
    version 3 and a non-version folder: {"dir", "saved_model", "tflite", ...}."""
    root = tmp_path_factory.mktemp("export")
    export_dir = root / "serving"
    (export_dir / "3").mkdir(parents=True)          # an older version
    (export_dir / "notes").mkdir()                  # not a version: ignored
    tflite = root / "mobile" / "model.tflite"
    result = run_script("useModel.py", "--export", export_dir, "--export_tflite", tflite,
                        "--model_dir", trained_model, "--json")
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


def test_tflite_model_runs_and_agrees(exported, sample_images, trained_model):
    folder, encoded = sample_images
    manifest = modeldir.load_manifest(trained_model)
    size, labels = manifest["image_size"], manifest["labels"]
    with open(exported["tflite_labels"], encoding="utf-8") as f:
        assert f.read().splitlines() == labels
    names = sorted(encoded)
    serving = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"]
    reference = sorted_to_label_order(
        serving(image_bytes=tf.constant([encoded[name] for name in names])), len(labels))
    with warnings.catch_warnings():  # "use ai_edge_litert": not installed here
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=exported["tflite"])
    details = interpreter.get_input_details()[0]
    assert details["dtype"] == np.float32 and list(details["shape"][1:]) == [size, size, 3]
    # What a client does: JPEG bytes -> resized, cropped RGB 0..255 pixels.
    pixels = useModel.tflite_pixels([encoded[name] for name in names], size)
    assert pixels.shape == (len(names), size, size, 3) and 0 <= pixels.min() < pixels.max() <= 255
    interpreter.resize_tensor_input(details["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], pixels)
    interpreter.invoke()
    probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert probabilities.shape == (len(names), len(labels))
    np.testing.assert_allclose(probabilities, reference, atol=1e-3)
    assert (probabilities.argmax(1) == reference.argmax(1)).all()


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
