"""A TensorFlow Lite model of the pixel contract (useModel.py --export_tflite)."""
import tensorflow as tf

from suite.export.pixel_graph import (PIXELS_INPUT, PROBABILITIES_OUTPUT, frozen_pixel_graph,
                                      write_model_files)
from suite.plumbing.environment import quiet_tf1_notices


def export_tflite(model_dir, path, checkpoint=None):
    """Writes a TensorFlow Lite model of the checkpoint (frozen_pixel_graph) to
    path and the class names beside it; returns (path, labels path, checkpoint).

    The model takes pixels, not bytes: TFLite's builtin ops have no image
    decoder (the SELECT_TF_OPS route would need the Flex delegate, which
    mobile runtimes rarely ship), and apps decode with the platform's own
    decoder anyway.
    """
    frozen, manifest, checkpoint = frozen_pixel_graph(model_dir, checkpoint)
    # Converted in a session without variables: from the session that froze
    # them, the converter logs an error about the variables' initialisers,
    # harmless but alarming.
    graph = tf.Graph()
    with quiet_tf1_notices(), graph.as_default(), \
            tf.compat.v1.Session(graph=graph) as session:
        tf.graph_util.import_graph_def(frozen, name="")
        converter = tf.compat.v1.lite.TFLiteConverter.from_session(
            session, [graph.get_tensor_by_name(PIXELS_INPUT + ":0")],
            [graph.get_tensor_by_name(PROBABILITIES_OUTPUT + ":0")])
        flatbuffer = converter.convert()
    labels_file = write_model_files("--export_tflite", path, flatbuffer, manifest["labels"])
    return path, labels_file, checkpoint
