"""suite/prediction/classifier.py: a batch survives an image TensorFlow
refuses, bf16 gives fp32's answers, and the weights are held about once."""
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from PIL import Image

from helpers import COLOURS, REPO, encoded, make_colour_images
from suite.export import saved_model
from suite.hardware import precision as hardware_precision
from suite.model.manifest import write_manifest
from suite.model.network import build_network
from suite.prediction.classifier import Classifier


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
