"""suite/prediction/classifier.py: a batch survives an image TensorFlow
refuses, bf16 gives fp32's answers, the weights are held about once, and
predict takes what a back-end holds (paths, bytes, file objects, PIL images,
numpy arrays), each the same image as its file, each hostile item its own
error."""
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from helpers import COLOURS, REPO, cut_jpeg, encoded, make_colour_images, no_hang, noise, png
from suite.export import saved_model
from suite.hardware import precision as hardware_precision
from suite.model.manifest import write_manifest
from suite.model.network import build_network
from suite.plumbing.errors import UserError
from suite.prediction.classifier import Classifier
from suite.prediction.results import print_results


@pytest.mark.slow
def test_classifier_keeps_the_batch_when_tensorflow_refuses_one_image(trained_model):
    # Pillow and TensorFlow's decoders can disagree on a rare file; the batch
    # around it is still classified.
    classifier = Classifier(trained_model)
    try:
        batch = [{"path": "good"}, {"path": "refused"}]
        good = encoded(Image.new("RGB", (32, 32), (200, 40, 40)))
        rows = classifier._rows(batch, [good, b"\xff\xd8\xff not a JPEG after all"])
    finally:
        classifier.close()
    assert rows[0].shape == (3,) and rows[1] is None
    assert "TensorFlow cannot decode it" in batch[1]["error"] and "error" not in batch[0]


CAN_BF16 = ("avx512f" in hardware_precision.cpu_flags()
            or bool(hardware_precision.gpu_compute_capabilities()))


needs_bf16 = pytest.mark.skipif(not CAN_BF16, reason="TensorFlow computes bfloat16 on a "
                                                     "CPU only with AVX-512")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Nine new colour images (three per class), not seen in training."""
    root = make_colour_images(str(tmp_path_factory.mktemp("parity")), per_class=3, seed=7)
    return sorted(os.path.join(root, c, f) for c in COLOURS for f in os.listdir(
        os.path.join(root, c)))


def top1(results):
    return [r["predictions"][0]["label"] for r in results]


@pytest.mark.slow
@needs_bf16
def test_bf16_prediction_gives_fp32s_answers(trained_model, images, tmp_path):
    answers = {}
    for name in ("fp32", "bf16"):
        classifier = Classifier(trained_model, precision=name)
        assert classifier.precision.name == name
        answers[name] = classifier.predict(images, top_k=3)
        classifier.close()
    assert top1(answers["bf16"]) == top1(answers["fp32"])
    assert sum(label == os.path.basename(os.path.dirname(path))
               for label, path in zip(top1(answers["fp32"]), images)) >= len(images) - 1
    for low, full in zip(answers["bf16"], answers["fp32"]):
        assert abs(low["predictions"][0]["probability"]
                   - full["predictions"][0]["probability"]) < 0.05
    # A SavedModel exported in bf16 answers the same too.
    path, _ = saved_model.export_saved_model(trained_model, str(tmp_path / "serving"),
                                          precision="bf16")
    serving = tf.saved_model.load(path).signatures["serving_default"]
    encoded = []
    for image in images:
        with open(image, "rb") as f:
            encoded.append(f.read())
    classes = serving(image_bytes=tf.constant(encoded))["classes"].numpy()[:, 0]
    assert [c.decode() for c in classes] == top1(answers["fp32"])


# Run in a process of its own: the Classifier's peak memory over what the
# process held once TensorFlow was imported, in MB ("skip" where the peak
# cannot be reset).
_PEAK_OF_A_CLASSIFIER = """
import sys
from suite.plumbing import environment
environment.configure()
from suite.prediction.classifier import Classifier

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
except OSError:
    sys.exit(print("skip"))
start = status("VmRSS")
classifier = Classifier(sys.argv[1], precision=sys.argv[3])
assert "predictions" in classifier.predict([sys.argv[2]])[0]
print(status("VmHWM") - start)
"""


@pytest.mark.slow  # a process of its own
def test_classifier_holds_its_weights_about_once(tmp_path):
    """Classifier in fp32 keeps its weights in variables. Frozen into
    constants, TensorFlow held them many times over: this layer_14 (about 20
    MB of weights) took 330 MB to load and classify one image, 60 MB with
    variables; ResNet-50 at 224 px peaked at 1.9 GB instead of 0.7. Restoring
    takes about twice the weights while the checkpoint is read; the bound
    leaves room for that, the graph and one image's work."""
    model_dir = str(tmp_path / "model")
    labels = [f"class_{i}" for i in range(10)]
    manifest = {"model": "layer_14", "num_classes": 10, "image_size": 32, "stem": "small",
                "preprocessing": {}}
    write_manifest(model_dir, dict(manifest, labels=labels))
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        build_network(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3]),
                      dict(manifest, labels=labels), is_train=False)
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, os.path.join(model_dir, "model.ckpt-0"),
                                        write_meta_graph=False)
    weights_mb = sum(os.path.getsize(os.path.join(model_dir, name)) for name in
                     os.listdir(model_dir) if ".data-" in name) / 2**20
    image = str(tmp_path / "red.jpg")
    Image.new("RGB", (40, 40), COLOURS["red"]).save(image)
    result = subprocess.run([sys.executable, "-c", _PEAK_OF_A_CLASSIFIER, model_dir, image,
                             "fp32"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    if result.stdout.strip() == "skip":
        pytest.skip("cannot reset the peak-memory counter here")
    growth = float(result.stdout)
    assert 15 < weights_mb < 30  # what the bound was set for
    assert growth < 4 * weights_mb + 40, f"{growth:.0f} MB for {weights_mb:.0f} MB of weights"


# What a back-end holds: paths, bytes, file objects, PIL images, numpy arrays.

@pytest.fixture(scope="module")
def untrained_classifier(tmp_path_factory):
    """A Classifier over a layer_14 model with its initial weights, in
    batches of 3: seconds to make, and its answers still differ from image
    to image."""
    model_dir = str(tmp_path_factory.mktemp("untrained") / "model")
    manifest = {"model": "layer_14", "num_classes": 3, "image_size": 32, "stem": "small",
                "preprocessing": {}, "labels": sorted(COLOURS)}
    write_manifest(model_dir, manifest)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(3)
        build_network(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3]), manifest,
                      is_train=False)
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, os.path.join(model_dir, "model.ckpt-0"),
                                        write_meta_graph=False)
    classifier = Classifier(model_dir, batch_size=3, precision="fp32")
    yield classifier
    classifier.close()


def probabilities_of(result):
    assert "error" not in result, result
    return [p["probability"] for p in result["predictions"]]


def alone(classifier, images):
    """Each image's probabilities, classified on its own: the network's float
    sums can round differently in a batch of another size (oneDNN), so exact
    equality is asked of images classified the same way."""
    return [probabilities_of(classifier.predict([image])[0]) for image in images]


def photos(folder):
    """An upright JPEG, one its EXIF turns, and a PNG with alpha: {name: path}."""
    rotated = Image.Exif()
    rotated[0x0112] = 6  # EXIF orientation: rotate 90 on display
    rgba = noise(40, 30, seed=2).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((40, 30)))
    files = {"upright.jpg": encoded(noise(48, 40, seed=1), quality=90),
             "rotated.jpg": encoded(noise(48, 40, seed=1), quality=90, exif=rotated.tobytes()),
             "alpha.png": encoded(rgba, "PNG")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: str(folder / name) for name in files}


def forms_of(name, path):
    """One file's image in each form predict takes, made afresh (a file
    object is read once)."""
    with open(path, "rb") as f:
        data = f.read()
    forms = [path, pathlib.Path(path), data, bytearray(data), memoryview(data),
             open(path, "rb"), io.BytesIO(data), Image.open(path)]
    if name == "rotated.jpg":  # decoded pixels; an upright JPEG's are stored again
        loaded = Image.open(path)
        loaded.load()
        forms += [loaded, np.asarray(ImageOps.exif_transpose(loaded))]
    return forms


@pytest.mark.slow  # the whole prediction path
def test_a_path_its_bytes_file_object_and_pil_image_get_the_same_probabilities(
        untrained_classifier, tmp_path):
    for name, path in photos(tmp_path).items():
        answers = alone(untrained_classifier, forms_of(name, path))
        assert answers == [answers[0]] * len(answers), name
        results = untrained_classifier.predict(forms_of(name, path))
        assert [r.get("path") for r in results[:2]] == [path, pathlib.Path(path)]
        assert all("input" in r and "predictions" in r for r in results[2:])
    # Equal answers mean something: another image gets others.
    answers = alone(untrained_classifier, [encoded(noise(48, 40, seed=1), quality=90),
                                           encoded(noise(48, 40, seed=9), quality=90)])
    assert answers[0] != answers[1]


@pytest.mark.slow  # the whole prediction path
def test_pixels_get_the_probabilities_of_the_same_pixels_in_a_file(untrained_classifier,
                                                                    tmp_path):
    pixels = np.asarray(noise(40, 40, seed=4))
    Image.fromarray(pixels).save(tmp_path / "pixels.png")
    Image.fromarray(pixels).save(tmp_path / "pixels.jpg", quality=95)
    answers = alone(untrained_classifier, [
        str(tmp_path / "pixels.png"), pixels, Image.fromarray(pixels), pixels[:, ::-1][:, ::-1],
        str(tmp_path / "pixels.jpg"), np.asarray(Image.open(tmp_path / "pixels.jpg"))])
    assert answers[1:4] == [answers[0]] * 3
    # An upright JPEG's decoded pixels are stored again: near its file's answer.
    assert np.allclose(answers[5], answers[4], atol=0.02)
    # A 4-D array is a batch.
    batch = untrained_classifier.predict(np.stack([pixels, pixels[::-1]]))
    assert np.allclose(probabilities_of(batch[0]), answers[0], atol=1e-5)
    assert batch[1]["input"] == "item 1: numpy array (40, 40, 3) uint8"


@pytest.mark.slow  # the whole prediction path
def test_each_hostile_item_gets_its_own_error_and_the_rest_are_answered(
        untrained_classifier, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encoded(noise(40, 40, seed=5), "PNG"))
    closed = open(good, "rb")
    closed.close()
    text = open(good, "r", encoding="latin-1")
    closed_image = Image.fromarray(np.asarray(noise()))
    closed_image.close()
    hostile = [  # (item, what its error says)
        (3, "not an image: int"), (None, "not an image: None"), (b"", "empty bytes"),
        (closed, "a closed file object"), (text, "text mode: open it with 'rb'"),
        (png(8001, 8000), "too large to decode safely"),
        (io.BytesIO(png(70_000, 1)), "too large to decode safely"),
        (Image.open(io.BytesIO(png(60_000, 1))), "too thin to classify"),
        (Image.open(io.BytesIO(cut_jpeg(encoded(noise(300, 200))))), "broken image"),
        (closed_image, "closed image"), (np.zeros((8, 8, 3), np.float64), "of float64"),
        (np.zeros((8, 8, 4), np.uint8), "4 channels"),
        (str(tmp_path / "missing.jpg"), "cannot read"),
        (good.read_bytes(), None), (str(good), None), (open(good, "rb"), None),
        (np.asarray(noise(40, 40, seed=5)), None), (Image.open(good), None)]
    with no_hang(60):
        results = untrained_classifier.predict([item for item, _ in hostile])
    text.close()
    assert len(results) == len(hostile)
    expected = alone(untrained_classifier, [str(good)])[0]
    for (item, why), result in zip(hostile, results):
        if why is None:  # batched with others: equal but for the last float bits
            assert np.allclose(probabilities_of(result), expected, atol=1e-5), result
        else:
            assert why in result["error"] and "predictions" not in result, (why, result)
    assert results[0]["input"] == "item 0: int" and results[2]["input"] == "item 2: 0 bytes"
    assert results[4]["input"] == f"item 4: file object {str(good)!r}"


@pytest.mark.parametrize("one_image", ["a.jpg", b"\xff\xd8\xff", np.zeros((32, 32, 3), np.uint8),
                                       Image.new("RGB", (8, 8)), io.BytesIO(b"x"), 3])
def test_one_image_passed_alone_is_refused_not_taken_apart(untrained_classifier, one_image):
    with pytest.raises(UserError, match="Classifier.predict takes a list of images"):
        untrained_classifier.predict(one_image)


def test_results_name_their_image_in_text(capsys):
    print_results([{"path": "a.jpg", "label": "red", "predictions": [
        {"label": "red", "probability": 0.9}]},
        {"input": "item 1: 12 bytes", "error": "not an image Pillow can read"}])
    out, err = capsys.readouterr()
    assert out == "a.jpg: red  (red 0.900)\n"
    assert err == "item 1: 12 bytes: error: not an image Pillow can read\n"
