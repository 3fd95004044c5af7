"""suite/export/saved_model.py: the SavedModel's layout for TensorFlow
Serving, its agreement with useModel.py on JPEGs and other formats, and its
refusal of an oversized image from the header, in bounded memory."""
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import png, sorted_to_label_order, use_model_probabilities
from suite.data import contract










@pytest.mark.slow
def test_saved_model_layout_for_tensorflow_serving(exported):
    assert exported["saved_model"] == os.path.join(exported["dir"], "4")  # next free number
    assert sorted(os.listdir(exported["dir"])) == ["3", "4", "notes"]     # no staging left
    version = exported["saved_model"]
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    assert os.path.isfile(os.path.join(version, "variables", "variables.index"))


@pytest.mark.slow
def test_saved_model_agrees_with_use_model_on_jpegs(exported, sample_images, trained_model):
    folder, encoded = sample_images
    labels = contract.read_labels(os.path.join(trained_model, "labels.txt"))
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


@pytest.mark.slow
def test_saved_model_takes_other_formats_as_flowio_stores_them(exported, colour_data,
                                                               trained_model, tmp_path):
    """PNG (with transparency), GIF, BMP and WebP: the served graph re-encodes
    them as FlowIO does, so it agrees with useModel.py closely (the JPEG
    encoders are not byte-identical, hence a looser tolerance than for JPEGs)."""
    image_dir, _ = colour_data
    labels = contract.read_labels(os.path.join(trained_model, "labels.txt"))
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


@pytest.mark.slow
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
