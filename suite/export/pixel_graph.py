"""The pixel contract of the TFLite and ONNX exports, as one frozen graph:
float32 RGB pixels in (suite.images.eval_transform), probabilities out."""
import os

import numpy as np
import tensorflow as tf

from suite.model.checkpoints import resolve_checkpoint, restore_chosen
from suite.model.manifest import load_manifest
from suite.model.network import network_probabilities
from suite.plumbing.environment import quiet_tf1_notices
from suite.plumbing.errors import UserError
from suite.plumbing.files import atomic_write
from suite.prediction.results import labels_path
from suite.preprocessing.evaluation import eval_pixels
from suite.preprocessing.normalization import normalize

PIXELS_INPUT = "pixels"                # the pixel models' input and output names
PROBABILITIES_OUTPUT = "probabilities"


def frozen_pixel_graph(model_dir, checkpoint=None):
    """The pixel contract of the TFLite and ONNX exports, as one frozen graph:
    (GraphDef, manifest, checkpoint).

    Input PIXELS_INPUT: float32 RGB 0..255 [N, size, size, 3], the image's
    shorter side resized (antialiased bilinear) to ceil(size / 0.875), or to
    size up to 32 px, and the central square taken
    (suite.images.eval_transform.eval_pixels). Output PROBABILITIES_OUTPUT:
    [N, num_classes] in labels.txt order. Normalisation is inside the model
    (model.json's "preprocessing"), so a client only resizes and crops.
    The variables are constants: the converters take the graph as it is.
    """
    manifest = load_manifest(model_dir)
    resolve_checkpoint(model_dir, checkpoint)  # a clear error if there is none
    size = manifest["image_size"]
    graph = tf.Graph()
    with quiet_tf1_notices(), graph.as_default(), \
            tf.compat.v1.Session(graph=graph) as session:
        pixels = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3],
                                          name=PIXELS_INPUT)
        probabilities = network_probabilities(
            normalize(pixels, manifest["preprocessing"]), manifest)
        assert probabilities.op.name == PROBABILITIES_OUTPUT, probabilities.op.name
        checkpoint = restore_chosen(session, model_dir, checkpoint)
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), [PROBABILITIES_OUTPUT])
    return frozen, manifest, checkpoint


def write_model_files(flag, path, model_bytes, labels):
    """Writes the model to path and the class names (one per line, in output
    order) to path's .labels.txt, each whole or not at all; returns the
    labels path."""
    labels_file = labels_path(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write(path, model_bytes)
        atomic_write(labels_file, "".join(f"{name}\n" for name in labels))
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot write ({error.strerror or error})")
    return labels_file


def tflite_pixels(encoded_images, image_size):
    """JPEG bytes (from suite.images.decoding.encode_image_file) -> the pixel
    models' input, float32 RGB 0..255 [N, image_size, image_size, 3], resized
    and cropped in the graph as evaluation does before normalising: the
    model normalises them itself, with its model.json's values.
    suite.images.eval_transform.eval_pixels gives the same pixels without
    TensorFlow."""
    pixels = tf.stack([eval_pixels(e, image_size) for e in encoded_images])
    return pixels.numpy().astype(np.float32)
