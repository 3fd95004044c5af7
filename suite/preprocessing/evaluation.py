"""The evaluation transform in the graph: stored JPEG bytes -> the network's
input, for validation, Evaluation.py, useModel.py and the exports.

suite.images.eval_transform defines it (the crop's share, the resize) and
computes it without TensorFlow; the tests hold the two equal.
"""
import tensorflow as tf

from suite.images.eval_transform import eval_shorter_side
from suite.preprocessing.normalization import normalize


def eval_pixels(encoded, image_size):
    """JPEG bytes -> [image_size, image_size, 3] float RGB in 0..255: shorter
    side resized (antialiased bilinear) to eval_shorter_side(image_size) (the
    whole image up to 32 px, else the 87.5% centre crop), then the central
    square."""
    image = tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = eval_shorter_side(image_size) / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, resized, antialias=True)
    return tf.image.resize_with_crop_or_pad(image, image_size, image_size)


def preprocess_for_eval(encoded, image_size, preprocessing=None):
    """JPEG bytes -> the network's input: eval_pixels, normalised as a
    model.json's "preprocessing" says (normalize)."""
    return normalize(eval_pixels(encoded, image_size), preprocessing)


def preprocess_batch(encoded, preprocess, image_size):
    """preprocess (encoded bytes -> [image_size, image_size, 3] float32)
    applied to each of a 1-D string tensor of images. The function is not
    rewritten by AutoGraph: it has no Python control flow, and AutoGraph
    re-reads the source files, which breaks if one was edited after it was
    imported."""
    return tf.map_fn(tf.autograph.experimental.do_not_convert(preprocess), encoded,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))
