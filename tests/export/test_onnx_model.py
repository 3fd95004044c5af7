"""suite/export/onnx_model.py: the ONNX export's contract in ONNX Runtime, and
the rewrite of option-A shortcuts (the same sums without the Pad)."""
import json
import os
import tempfile

import numpy as np
import pytest

import onnx_predict
from suite.export import onnx_model
from suite.images import eval_transform
from suite.model import checkpoints
from suite.model.manifest import load_manifest


@pytest.mark.slow
def test_onnx_model_contract(exported, trained_model, tmp_path, monkeypatch):
    """Pixels in, probabilities out, batch size free, the labels beside it."""
    import onnx
    import onnxruntime
    manifest = load_manifest(trained_model)
    size, labels = manifest["image_size"], manifest["labels"]
    assert exported["onnx_labels"] == os.path.splitext(exported["onnx"])[0] + ".labels.txt"
    with open(exported["onnx_labels"], encoding="utf-8") as f:
        assert f.read().splitlines() == labels
    assert sorted(os.listdir(os.path.dirname(exported["onnx"]))) == [  # no temporaries left
        "model.labels.txt", "model.onnx"]
    model = onnx.load(exported["onnx"])
    assert {o.domain: o.version for o in model.opset_import}[""] == onnx_model.ONNX_OPSET
    # Each of the network's four option-A shortcuts is split into a Concat
    # (onnx_model.split_padded_shortcuts); the probabilities below and the
    # client's agreement with useModel.py check that it computes the same.
    op_types = [node.op_type for node in model.graph.node]
    split = [node for node in model.graph.node if node.op_type == "Concat"
             and all(name.endswith("/relu") for name in node.input)]
    assert len(split) == 4 and "Pad" not in op_types
    session = onnxruntime.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    [model_input], [output] = session.get_inputs(), session.get_outputs()
    assert (model_input.name, model_input.type, model_input.shape) == (
        "pixels", "tensor(float)", ["N", size, size, 3])
    assert (output.name, output.shape) == ("probabilities", ["N", len(labels)])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["checkpoint"] == checkpoints.resolve_checkpoint(trained_model)
    assert json.loads(metadata["max_side"]) is None
    # The model carries its class names and its pixel contract, from the
    # suite's definitions (suite.export.metadata).
    assert json.loads(metadata["labels"]) == labels
    contract = json.loads(metadata["pixel_contract"])
    assert (contract["input"], contract["shape"], contract["range"], contract["max_side"]) == (
        "pixels", ["N", size, size, 3], [0, 255], None)
    assert contract["resize_shorter_side_to"] == eval_transform.eval_shorter_side(size)
    assert contract["normalization"]["mean_rgb"] == manifest["preprocessing"]["mean_rgb"]
    assert contract["normalization"]["std_rgb"] == manifest["preprocessing"]["std_rgb"]
    # Any batch size; rows are probabilities and do not depend on the batch.
    pixels = np.random.default_rng(0).uniform(0, 255, (5, size, size, 3)).astype(np.float32)
    batch = session.run(None, {"pixels": pixels})[0]
    np.testing.assert_allclose(batch.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(session.run(None, {"pixels": pixels[2:3]})[0], batch[2:3],
                               atol=1e-6)
    # The client's session (loaded from a re-saved copy with the weights in a
    # file of their own, in the temporary folder, removed afterwards; runs of
    # RUN_IMAGES) computes the same, and leaves nothing behind.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    resaved = []
    load_copy = onnx_predict._session_from_resaved_copy
    monkeypatch.setattr(onnx_predict, "_session_from_resaved_copy",
                        lambda *args: resaved.append(load_copy(*args)) or resaved[-1])
    client = onnx_predict.OnnxClassifier(exported["onnx"])
    assert resaved == [client._session] and os.listdir(tmp_path) == []
    assert sorted(os.listdir(os.path.dirname(exported["onnx"]))) == [
        "model.labels.txt", "model.onnx"]
    assert (client.image_size, client.max_side, client.labels) == (size, None, labels)
    assert client.checkpoint == metadata["checkpoint"]
    more = np.random.default_rng(1).uniform(
        0, 255, (onnx_predict.RUN_IMAGES + 3, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(client.probabilities(more),
                               session.run(None, {"pixels": more})[0], atol=1e-5)


def shortcut_block_model(spatial_pad=False):
    """An ONNX model of one bottleneck's end, as tf2onnx converts it:
    Relu(Conv(h) + Pad(MaxPool(x))), the Pad adding 16 channels before the
    shortcut's 16 and 32 after (or, with spatial_pad, padding rows instead)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    pads = [0, 0, 1, 0, 0, 0, 1, 0] if spatial_pad else [0, 16, 0, 0, 0, 32, 0, 0]
    out_channels = 16 if spatial_pad else 64
    initializers = [
        numpy_helper.from_array(rng.normal(size=(16, 16, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(out_channels, 16, 1, 1)).astype(np.float32), "W3"),
        numpy_helper.from_array(rng.normal(size=out_channels).astype(np.float32), "B3"),
        numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["h"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Conv", ["h", "W3", "B3"], ["conv3"], name="conv3"),
        helper.make_node("MaxPool", ["x"], ["sampled"], name="sampling", kernel_shape=[1, 1],
                         strides=[2, 2]),
        helper.make_node("Pad", ["sampled", "pads"], ["filled"], name="depthFilling"),
        helper.make_node("Add", ["conv3", "filled"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["y"], name="relu")]
    height = 10 if spatial_pad else 8
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_channels, height, 8])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def run_onnx(model, x):
    import onnxruntime
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_split_padded_shortcuts_computes_the_same_without_the_pad():
    import onnx
    model = shortcut_block_model()
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 16)).astype(np.float32)
    expected = run_onnx(model, x)
    assert onnx_model.split_padded_shortcuts(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert sorted(n.op_type for n in model.graph.node) == [
        "Add", "Concat", "Conv", "Conv", "Conv", "Conv", "MaxPool", "Relu", "Relu", "Relu"]
    assert {t.name for t in model.graph.initializer} >= {"W1"} and not (
        {"W3", "B3", "pads"} & {t.name for t in model.graph.initializer})  # no dead weights
    np.testing.assert_allclose(run_onnx(model, x), expected, rtol=1e-5, atol=1e-5)


def test_split_padded_shortcuts_leaves_other_pads_alone():
    model = shortcut_block_model(spatial_pad=True)
    before = model.SerializeToString()
    assert onnx_model.split_padded_shortcuts(model) == 0
    assert model.SerializeToString() == before
