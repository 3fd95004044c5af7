"""suite/preprocessing/evaluation.py: the centre crop for photos, the whole
image for small images."""
import io

import numpy as np
import tensorflow as tf
from PIL import Image

from suite.images import eval_transform
from suite.preprocessing import evaluation as eval_preprocessing, normalization


def jpeg(width, height, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def eval_rgb(pixels, image_size, decoded=False):
    """eval_preprocessing.preprocess_for_eval of pixels (as a quality-100 JPEG), back in
    0..255; with decoded, also the JPEG's own pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        encoded = tf.constant(buffer.getvalue())
        out, jpeg_pixels = session.run((eval_preprocessing.preprocess_for_eval(encoded, image_size),
                                        tf.io.decode_jpeg(encoded, channels=3)))
    assert out.shape == (image_size, image_size, 3)
    rgb = out * np.array(normalization.STD_RGB) + np.array(normalization.MEAN_RGB)
    return (rgb, jpeg_pixels) if decoded else rgb


def test_evaluation_preprocessing_is_the_centre_crop():
    # A 80x160 image whose left and right quarters are black and middle white:
    # resized to 74x148 (64 / 0.875 on the shorter side), the central 64x64
    # square lies inside the white middle.
    pixels = np.zeros((80, 160, 3), np.uint8)
    pixels[:, 40:120] = 255
    rgb = eval_rgb(pixels, 64)
    assert rgb[:, 8:56].min() > 240  # the middle of the crop is the white band


def test_evaluation_sees_the_whole_of_a_small_image():
    # A 28x28 image framed by a white 2-px border: at 28 px evaluation keeps
    # the frame (the centre crop would cut it off), and upscaled to 32 too.
    pixels = np.zeros((28, 28, 3), np.uint8)
    pixels[:2], pixels[-2:], pixels[:, :2], pixels[:, -2:] = 255, 255, 255, 255
    assert eval_transform.eval_crop(28) == eval_transform.eval_crop(32) == 1.0
    assert eval_transform.eval_crop(33) == eval_transform.eval_crop(224) == 0.875
    rgb, jpeg_pixels = eval_rgb(pixels, 28, decoded=True)
    np.testing.assert_allclose(rgb, jpeg_pixels, atol=0.01)  # at its own size: as it is
    for rgb in (eval_rgb(pixels, 28), eval_rgb(pixels, 32)):
        assert rgb[0].min() > 200 and rgb[:, -1].min() > 200 and rgb[14, 14].max() < 20
