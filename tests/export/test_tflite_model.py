"""suite/export/tflite_model.py: the TFLite export runs in LiteRT and agrees
with useModel.py."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import onnx_predict
from helpers import sorted_to_label_order
from suite.export import pixel_graph, tflite_model
from suite.model.manifest import load_manifest








@pytest.mark.slow
def test_tflite_model_runs_in_litert_and_agrees(exported, sample_images, trained_model):
    """In LiteRT (ai_edge_litert, the runtime tf.lite.Interpreter's warning
    points to), with the pixels prepared by the TensorFlow-free client's code."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter
    folder, encoded = sample_images
    manifest = load_manifest(trained_model)
    size, labels = manifest["image_size"], manifest["labels"]
    with open(exported["tflite_labels"], encoding="utf-8") as f:
        assert f.read().splitlines() == labels
    # It carries the ONNX export's metadata: its class names and pixel contract.
    with open(exported["tflite"], "rb") as f:
        entries = tflite_model.metadata_entries(f.read())
    onnx_metadata = {p.key: p.value for p in onnx.load(exported["onnx"]).metadata_props}
    assert {key: entries[key].decode("utf-8") for key in onnx_metadata} == onnx_metadata
    assert json.loads(entries["labels"]) == labels
    names = sorted(encoded)
    serving = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"]
    reference = sorted_to_label_order(
        serving(image_bytes=tf.constant([encoded[name] for name in names])), len(labels))
    interpreter = Interpreter(model_path=exported["tflite"])
    details = interpreter.get_input_details()[0]
    assert details["dtype"] == np.float32 and list(details["shape"][1:]) == [size, size, 3]
    # What a client does: image file -> resized, cropped RGB 0..255 pixels.
    pixels = np.stack([onnx_predict.image_pixels(os.path.join(folder, name), size)
                       for name in names])
    assert pixels.shape == (len(names), size, size, 3) and 0 <= pixels.min() < pixels.max() <= 255
    # pixel_graph.tflite_pixels, the same in TensorFlow, gives the same pixels.
    np.testing.assert_allclose(pixel_graph.tflite_pixels([encoded[name] for name in names], size),
                               pixels, atol=0.01)
    interpreter.resize_tensor_input(details["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], pixels)
    interpreter.invoke()
    probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert probabilities.shape == (len(names), len(labels))
    np.testing.assert_allclose(probabilities, reference, atol=1e-3)
    assert (probabilities.argmax(1) == reference.argmax(1)).all()
