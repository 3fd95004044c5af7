"""A TensorFlow Lite model of the pixel contract (useModel.py --export_tflite)."""
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

from suite.export.metadata import QUANTIZATION
from suite.export.pixel_graph import (PIXELS_INPUT, PROBABILITIES_OUTPUT, frozen_pixel_graph,
                                      pixel_model_metadata, write_model_files)
from suite.export.quantize import configure_tflite, description
from suite.plumbing.environment import quiet_tf1_notices


def export_tflite(model_dir, path, checkpoint=None, quantize=None, calibration=None):
    """Writes a TensorFlow Lite model of the checkpoint (frozen_pixel_graph) to
    path and the class names beside it, as a pair (write_model_files); returns
    (path, labels path, checkpoint).

    The model takes pixels, not bytes: TFLite's builtin ops have no image
    decoder (the SELECT_TF_OPS route would need the Flex delegate, which
    mobile runtimes rarely ship), and apps decode with the platform's own
    decoder anyway. It carries the ONNX export's metadata (class names,
    pixel contract; suite.export.metadata) as entries of the flatbuffer's
    own metadata table (with_metadata). quantize "int8" (with calibration,
    suite.export.quantize's pixels) or "fp16" has the converter quantize it.
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
        if quantize:
            configure_tflite(converter, quantize, calibration)
        flatbuffer = converter.convert()
    metadata = pixel_model_metadata(manifest, checkpoint)
    if quantize:
        metadata[QUANTIZATION] = description(quantize, calibration)
    flatbuffer = with_metadata(flatbuffer, metadata)
    labels_file = write_model_files("--export_tflite", path, flatbuffer, manifest["labels"])
    return path, labels_file, checkpoint


def with_metadata(flatbuffer, metadata):
    """The TFLite flatbuffer with each of metadata's strings as a named entry
    of its metadata table (beside the converter's min_runtime_version), UTF-8:
    read by name with the TFLite schema (metadata_entries).

    Not the TFLite Support library's "TFLITE_METADATA" entry: writing its
    flatbuffer needs tflite-support, whose last release (0.4.4, 2023) pins
    protobuf below 4 and cannot be installed beside TensorFlow 2.21.
    Interpreters ignore entries they do not know."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    for name, text in metadata.items():
        buffer = tflite_schema.BufferT()
        buffer.data = list(text.encode("utf-8"))
        model.buffers.append(buffer)
        entry = tflite_schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def metadata_entries(flatbuffer):
    """A TFLite flatbuffer's metadata table: {name: bytes}."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    return {entry.name.decode("utf-8"): bytes(model.buffers[entry.buffer].data)
            for entry in model.metadata}
