"""The pixel contract of the TFLite and ONNX exports, as one frozen graph:
float32 RGB pixels in (suite.images.eval_transform), probabilities out."""
import contextlib
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from suite.export.metadata import (PIXELS_INPUT, PROBABILITIES_OUTPUT, model_metadata,
                                   pixel_contract)
from suite.model.checkpoints import resolve_checkpoint, restore_chosen
from suite.model.manifest import load_manifest
from suite.model.network import network_probabilities
from suite.plumbing.environment import quiet_tf1_notices
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write
from suite.prediction.results import labels_path
from suite.preprocessing.evaluation import eval_pixels
from suite.preprocessing.normalization import MEAN_RGB, STD_RGB, normalize


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


def pixel_model_metadata(manifest, checkpoint):
    """The metadata a pixel model carries (suite.export.metadata): its class
    names and its pixel contract, from its model.json; the mean and standard
    deviation as normalize() takes them."""
    preprocessing = manifest["preprocessing"]
    contract = pixel_contract(manifest["image_size"], preprocessing.get("mean_rgb", MEAN_RGB),
                              preprocessing.get("std_rgb", STD_RGB),
                              preprocessing.get("max_side"))
    return model_metadata(manifest["labels"], contract, checkpoint)


def write_model_files(flag, path, model_bytes, labels):
    """Writes the model to path and the class names (one per line, in output
    order) to path's .labels.txt as a pair: both or neither; returns the
    labels path.

    Both are written whole into a private folder beside them first
    (mkdtemp: nothing planted can be under its names), then moved in, the
    model first: a run killed between the two moves leaves the new model,
    which carries its class names, beside the old labels file, and the
    client refuses that pair rather than use it. A move that fails puts the
    old model back. Raises UserError naming the file that could not be
    written; the old pair is then as it was.
    """
    labels_file = labels_path(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".export-", dir=folder)
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot write in {folder} ({reason(error)}): "
                        f"choose another FILE or fix the folder's permissions")
    try:
        staged = {}
        for target, name, data in (
                (path, "model", model_bytes),
                (labels_file, "labels", "".join(f"{label}\n" for label in labels))):
            staged[target] = os.path.join(staging, name)
            with _cannot_write(flag, path, target):
                atomic_write(staged[target], data)
        _move_pair_in(flag, path, staged, labels_file, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return labels_file


@contextlib.contextmanager
def _cannot_write(flag, path, target):
    """An OSError writing target, one of the pair, becomes the export's one line."""
    try:
        yield
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot write {target} ({reason(error)}); nothing "
                        f"was replaced: free some space, fix the permissions or choose "
                        f"another FILE") from None


def _move_pair_in(flag, path, staged, labels_file, staging):
    """Moves the staged model, then its labels, over path and labels_file;
    the old model is put back if the labels cannot be moved."""
    had_model = os.path.lexists(path)
    previous = os.path.join(staging, "previous")
    try:  # a hard link: the old model stays in place until the new one replaces it
        if had_model:
            os.link(path, previous, follow_symlinks=False)
    except OSError:
        previous = None  # a file system without hard links: no way back
    with _cannot_write(flag, path, path):
        os.replace(staged[path], path)
    try:
        with _cannot_write(flag, path, labels_file):
            os.replace(staged[labels_file], labels_file)
    except UserError:
        with contextlib.suppress(OSError):
            if not had_model:
                os.remove(path)
            elif previous:
                os.replace(previous, path)
            # else the new model stays: it carries its class names, so the
            # client refuses it beside the old labels file
        raise


def tflite_pixels(encoded_images, image_size):
    """JPEG bytes (from suite.images.decoding.encode_image_file) -> the pixel
    models' input, float32 RGB 0..255 [N, image_size, image_size, 3], resized
    and cropped in the graph as evaluation does before normalising: the
    model normalises them itself, with its model.json's values.
    suite.images.eval_transform.eval_pixels gives the same pixels without
    TensorFlow."""
    pixels = tf.stack([eval_pixels(e, image_size) for e in encoded_images])
    return pixels.numpy().astype(np.float32)
