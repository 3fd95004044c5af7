"""suite/images/eval_transform.py: simplejpeg decodes to tf.io.decode_jpeg's
pixels, and the evaluation transform without TensorFlow equals the graph's."""
import io

import numpy as np
import tensorflow as tf
from PIL import Image

from suite.images import decoding, eval_transform
from suite.preprocessing import evaluation as eval_preprocessing, normalization


def photo_like(rng, height, width):
    """Smooth colour fields with noise: JPEG errors like a photo's."""
    smooth = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    pixels = np.asarray(smooth.resize((width, height), Image.BICUBIC), dtype=np.float64)
    return np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)


def test_jpegs_decode_to_tensorflows_pixels(tmp_path):
    """eval_transform.decode_jpeg_as_tensorflow (simplejpeg) equals
    tf.io.decode_jpeg bit for bit: colour 4:4:4, 4:2:2 and 4:2:0, and
    grayscale, each baseline and progressive, at odd, tiny and 2-wide sizes,
    low and high quality."""
    rng = np.random.default_rng(7)
    cases = [(h, w, mode, sub, q, prog) for (h, w) in ((1, 1), (3, 2), (5, 4), (17, 31), (64, 48))
             for mode, sub in (("RGB", 0), ("RGB", 1), ("RGB", 2), ("L", 0))
             for q in (50, 95) for prog in (False, True)]
    for h, w, mode, subsampling, quality, progressive in cases:
        path = tmp_path / "a.jpg"
        Image.fromarray(photo_like(rng, h, w)).convert(mode).save(
            path, quality=quality, subsampling=subsampling, progressive=progressive)
        encoded = path.read_bytes()
        np.testing.assert_array_equal(eval_transform.decode_jpeg_as_tensorflow(encoded),
                                      tf.io.decode_jpeg(encoded, channels=3).numpy(),
                                      err_msg=str((h, w, mode, subsampling, quality, progressive)))


def test_eval_pixels_without_tensorflow_equal_the_graph():
    """eval_transform.eval_pixels gives what the graph's preprocess_for_eval
    gives before normalising: files re-encoded as FlowIO stores them (PNG with alpha,
    grayscale) and JPEGs kept as they are (4:2:0, 4:2:2), at sizes that
    shrink, enlarge and change the aspect ratio."""
    rng = np.random.default_rng(3)
    files = []
    for (h, w), fmt, options in (((40, 60), "JPEG", {"quality": 90}),
                                 ((77, 51), "JPEG", {"quality": 75, "subsampling": 1}),
                                 ((28, 28), "PNG", {}), ((300, 200), "JPEG", {})):
        image = Image.fromarray(photo_like(rng, h, w))
        if fmt == "PNG":
            image = image.convert("LA")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        files.append(buffer.getvalue())
    for data in files:
        encoded, _, _ = decoding.encode_image_bytes(data)
        for size in (16, 32, 224):
            graph = (eval_preprocessing.preprocess_for_eval(encoded, size)
                     * normalization.STD_RGB + normalization.MEAN_RGB)
            np.testing.assert_allclose(eval_transform.eval_pixels(encoded, size), graph, atol=0.02)
