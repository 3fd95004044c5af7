"""suite/model/network.py's flip average (train.py --flip_average): the
eval-mode network averages each image's probabilities with its mirror
image's, a resumed run keeps the setting, and every reader and export does it."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from helpers import TRAIN_ARGS, run_script
from suite.images import decoding
from suite.model.manifest import MANIFEST_FILE, load_manifest
from suite.model.network import build_network


MANIFEST = {"model": "layer_14", "stem": "small", "labels": ["a", "b", "c"]}


def test_the_flip_average_is_the_mean_of_the_image_and_its_mirror_image():
    """In-process, on a real layer_14 graph with random weights."""
    pixels = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        # Seeded: with some random weights the softmax saturates and hides
        # the mirror image's effect on the probabilities (a CI run once saw that).
        tf.compat.v1.set_random_seed(1)
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        with tf.compat.v1.variable_scope("", reuse=tf.compat.v1.AUTO_REUSE):
            averaged = build_network(images, dict(MANIFEST, flip_average=True),
                                              is_train=False)
            plain = build_network(images, MANIFEST, is_train=False)
            training = build_network(images, dict(MANIFEST, flip_average=True),
                                              is_train=True)
        session.run(tf.compat.v1.global_variables_initializer())
        probabilities = session.run(tf.nn.softmax(averaged), {images: pixels})
        own_logits = session.run(plain, {images: pixels})
        mirrored_logits = session.run(plain, {images: pixels[:, :, ::-1]})
        # Training is never averaged: one row of logits per image.
        assert session.run(training, {images: pixels}).shape == (4, 3)
    # The mirror image changes the answer (the logits: a difference of 0.5-1.2
    # over twelve seeds, while the probabilities' can be as small as 3e-4).
    assert np.abs(own_logits - mirrored_logits).max() > 0.1
    own, mirrored = softmax(own_logits), softmax(mirrored_logits)
    np.testing.assert_allclose(probabilities, (own + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-6)


def softmax(logits):
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def flip_model(colour_data, module_tmp):
    """A model trained with --flip_average, and a copy of it whose
    model.json turns the average off: (model_dir, plain_dir)."""
    _, data_dir = colour_data
    root = module_tmp / "flip"
    model_dir, plain_dir = str(root / "models"), str(root / "plain")
    run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "3", "--flip_average")
    shutil.copytree(model_dir, plain_dir)
    manifest_path = os.path.join(plain_dir, MANIFEST_FILE)
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(dict(manifest, flip_average=False), f)
    return model_dir, plain_dir


@pytest.mark.slow
def test_a_resumed_run_keeps_the_flip_average_unless_told(colour_data, flip_model, tmp_path):
    _, data_dir = colour_data
    model_dir = str(tmp_path / "models")
    shutil.copytree(flip_model[0], model_dir)
    assert load_manifest(model_dir)["flip_average"] is True
    run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "4")
    assert load_manifest(model_dir)["flip_average"] is True
    run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "5", "--no-flip_average")
    assert load_manifest(model_dir)["flip_average"] is False


@pytest.mark.slow
def test_every_reader_and_export_averages_with_the_mirror_image(colour_data, flip_model,
                                                                 tmp_path):
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter
    image_dir, data_dir = colour_data
    model_dir, plain_dir = flip_model
    labels = load_manifest(model_dir)["labels"]
    exports = {}
    for name, folder, kinds in (("flip", model_dir, ("--export", "--export_tflite")),
                                ("plain", plain_dir, ())):  # the plain one: ONNX alone
        paths = {"--export": tmp_path / name / "serving",
                 "--export_tflite": tmp_path / name / "model.tflite"}
        result = run_script("useModel.py", *(a for k in kinds for a in (k, paths[k])),
                            "--export_onnx", tmp_path / name / "model.onnx",
                            "--model_dir", folder, "--json")
        exports[name] = json.loads(result.stdout)["exported"]

    # The ONNX model of the pixel contract: the mean of the plain model's
    # probabilities on the pixels and on their mirror image.
    def onnx_probabilities(name, pixels):
        session = onnxruntime.InferenceSession(exports[name]["onnx"],
                                               providers=["CPUExecutionProvider"])
        return session.run(None, {"pixels": pixels})[0]

    pixels = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    averaged = onnx_probabilities("flip", pixels)
    own, mirrored = (onnx_probabilities("plain", p) for p in (pixels, pixels[:, :, ::-1]))
    assert np.abs(own - mirrored).max() > 1e-3
    np.testing.assert_allclose(averaged, (own + mirrored) / 2, atol=1e-5)

    # TFLite, on the same pixels.
    interpreter = Interpreter(model_path=exports["flip"]["tflite"])
    details = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(details["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], pixels)
    interpreter.invoke()
    np.testing.assert_allclose(
        interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), averaged,
        atol=1e-4)

    # useModel.py (fp32), the SavedModel and the TensorFlow-free client on image
    # files agree with one another, and differ from the plain model.
    files = [os.path.join(image_dir, colour, f"{i:03d}.png")
             for colour in ("blue", "green", "red") for i in (0, 5)]

    def use_model(folder):
        result = run_script("useModel.py", *files, "--model_dir", folder, "--json",
                            "--top_k", len(labels), "--precision", "fp32")
        rows = []
        for entry in json.loads(result.stdout)["results"]:
            row = dict((p["label"], p["probability"]) for p in entry["predictions"])
            rows.append([row[label] for label in labels])
        return np.array(rows)

    ours = use_model(model_dir)
    assert np.abs(ours - use_model(plain_dir)).max() > 1e-4
    client = run_script(os.path.join("clients", "onnx_predict.py"), exports["flip"]["onnx"],
                        *files, "--json", "--top_k", len(labels))
    rows = [{p["label"]: p["probability"] for p in entry["predictions"]}
            for entry in json.loads(client.stdout)["results"]]
    np.testing.assert_allclose([[row[label] for label in labels] for row in rows], ours,
                               atol=1e-3)
    serving = tf.saved_model.load(exports["flip"]["saved_model"]).signatures["serving_default"]
    encoded = [decoding.encode_image_file(path)[0] for path in files]
    outputs = serving(image_bytes=tf.constant(encoded))
    table = np.zeros_like(ours)
    np.put_along_axis(table, outputs["class_ids"].numpy(), outputs["probabilities"].numpy(),
                      axis=1)
    np.testing.assert_allclose(table, ours, atol=1e-4)

    # Evaluation.py says so, in its report and its JSON.
    text = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir", data_dir,
                      "--output_dir", tmp_path / "eval").stdout
    assert any(line.startswith("checkpoint ") and line.endswith(
        " images (each averaged with its mirror image)") for line in text.splitlines()), text
    document = json.loads(run_script("Evaluation.py", "--model_dir", plain_dir, "--data_dir",
                                     data_dir, "--output_dir", tmp_path / "eval", "--json").stdout)
    assert document["flip_average"] is False
