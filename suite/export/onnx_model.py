"""An ONNX model of the pixel contract (useModel.py --export_onnx), which
clients/onnx_predict.py runs in ONNX Runtime without TensorFlow."""
import logging

import numpy as np

from suite.export.metadata import QUANTIZATION
from suite.export.pixel_graph import (PIXELS_INPUT, PROBABILITIES_OUTPUT, frozen_pixel_graph,
                                      pixel_model_metadata, write_model_files)
from suite.export.quantize import description, quantize_onnx
from suite.plumbing.environment import quiet_tf1_notices
from suite.plumbing.errors import UserError

ONNX_OPSET = 15  # tf2onnx 1.17's default, pinned: ONNX Runtime has run it since 1.10 (2021)


def split_padded_shortcuts(model):
    """Rewrites each option-A shortcut of a converted ONNX model so that ONNX
    Runtime can keep the residual stream in its blocked (NCHWc) layout;
    returns how many it rewrote.

    Relu(Conv(h) + Pad(x)), where the Pad adds zero channels before and after
    x (resnet.depthFilling), becomes
    Concat(Relu(Conv_before(h)), Relu(Conv_x(h) + x), Relu(Conv_after(h))):
    the conv split by its output channels and the additions of zeros left
    out, so the same sums. ONNX Runtime has no blocked kernel for Pad: with
    it, every block's residual addition ran unfused in plain NCHW between two
    layout conversions (BENCHMARKS.md, "Serving runtimes"). Any other graph
    is left as it is.
    """
    graph = _Graph(model.graph)
    rewrites = {}  # the Relu node's name -> (the nodes in place of the four, their names)
    for pad in model.graph.node:
        found = graph.padded_shortcut(pad)
        if found:
            relu, conv, add, padding = found
            rewrites[relu.name] = (_split_conv(model.graph, graph, pad, conv, relu, padding),
                                   {pad.name, conv.name, add.name})
    replaced = set().union(*(names for _, names in rewrites.values()))
    kept = []
    for node in model.graph.node:  # the new nodes in the Relu's place: after all they read
        if node.name in rewrites:
            kept.extend(rewrites[node.name][0])
        elif node.name not in replaced:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for node in model.graph.node for name in node.input}
    for tensor in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(tensor)
    return len(rewrites)


class _Graph:
    """Who produces and who reads each tensor of an ONNX graph, and its constants."""

    def __init__(self, graph):
        from onnx import numpy_helper  # only the ONNX export needs it
        self._to_array = numpy_helper.to_array
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.producers = {name: node for node in graph.node for name in node.output}
        self.consumers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def only_consumer(self, name, op_type):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def constant(self, name):
        return self._to_array(self.initializers[name]) if name in self.initializers else None

    def channel_padding(self, pad):
        """(zero channels before, after) that a Pad node adds in NCHW, or None."""
        mode = [a.s for a in pad.attribute if a.name == "mode"]
        pads = self.constant(pad.input[1]) if len(pad.input) > 1 else None
        fill = self.constant(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0
        if mode not in ([], [b"constant"]) or pads is None or fill is None or np.any(fill):
            return None
        if pads.shape != (8,) or pads[[0, 2, 3, 4, 6, 7]].any():  # channels only
            return None
        return int(pads[1]), int(pads[5])

    def padded_shortcut(self, pad):
        """(relu, conv, add, padding) where pad is the channel padding of an
        option-A shortcut, Relu(Conv(h) + Pad(x)) with a biased Conv of one
        group whose output nothing else reads; else None."""
        padding = self.channel_padding(pad) if pad.op_type == "Pad" else None
        add = padding and self.only_consumer(pad.output[0], "Add")
        if not add:
            return None
        residual = add.input[1] if add.input[0] == pad.output[0] else add.input[0]
        conv, relu = self.producers.get(residual), self.only_consumer(add.output[0], "Relu")
        if (relu is None or conv is None or conv.op_type != "Conv" or len(conv.input) != 3
                or self.constant(conv.input[1]) is None or self.constant(conv.input[2]) is None
                or self.only_consumer(residual, "Add") is None
                or any(a.name == "group" and a.i != 1 for a in conv.attribute)):
            return None
        return relu, conv, add, padding


def _split_conv(onnx_graph, graph, pad, conv, relu, padding):
    """The nodes that replace Relu(Conv(h) + Pad(x)): the conv split by its
    output channels into the part added to x and the parts beside it,
    concatenated under the Relu's output name."""
    from onnx import helper, numpy_helper  # only the ONNX export needs them
    weights, bias = graph.constant(conv.input[1]), graph.constant(conv.input[2])
    before, after = padding
    channels = len(weights)
    nodes, outputs = [], []
    for part, start, stop in (("before", 0, before), ("shortcut", before, channels - after),
                              ("after", channels - after, channels)):
        if start == stop:
            continue
        name = f"{conv.name}/{part}"
        onnx_graph.initializer.extend([numpy_helper.from_array(weights[start:stop], name + "/W"),
                                       numpy_helper.from_array(bias[start:stop], name + "/B")])
        split = helper.make_node("Conv", [conv.input[0], name + "/W", name + "/B"], [name],
                                 name=name)
        split.attribute.extend(conv.attribute)
        nodes.append(split)
        if part == "shortcut":
            nodes.append(helper.make_node("Add", [name, pad.input[0]], [name + "/add"],
                                          name=name + "/add"))
            name += "/add"
        nodes.append(helper.make_node("Relu", [name], [name + "/relu"], name=name + "/relu"))
        outputs.append(name + "/relu")
    nodes.append(helper.make_node("Concat", outputs, list(relu.output),
                                  name=relu.name + "/concat", axis=1))
    return nodes


def export_onnx(model_dir, path, checkpoint=None, quantize=None, calibration=None):
    """Writes an ONNX model of the checkpoint (frozen_pixel_graph: the TFLite
    model's contract, batch size free) to path and the class names beside it,
    as a pair (write_model_files); returns (path, labels path, checkpoint).

    Pixels in, as for TFLite: tf2onnx cannot convert the SavedModel's
    image-decoding string ops, and ONNX has no JPEG decoder. The model's
    metadata_props (custom_metadata_map in ONNX Runtime) hold what a client
    needs: the class names, the pixel contract, "max_side" (the --max_side
    images were shrunk to before the JPEG encoding, JSON null for none) and
    "checkpoint" (suite.export.metadata). The option-A shortcuts are
    rewritten for ONNX Runtime's fastest layout (split_padded_shortcuts).
    quantize "int8" (with calibration, suite.export.quantize's pixels) or
    "fp16" writes that form instead, its "quantization" metadata saying so.
    """
    try:  # only this export needs them, and tf2onnx takes seconds to import
        import onnx
        import tf2onnx
    except ImportError as error:
        raise UserError(f"--export_onnx needs {error.name}: pip install -r requirements.txt")
    frozen, manifest, checkpoint = frozen_pixel_graph(model_dir, checkpoint)
    # tf2onnx logs each conversion step at INFO: it would bury the one line that matters.
    with quiet_tf1_notices(), tf2onnx.logging.set_scope_level(
            logging.ERROR, logging.getLogger("tf2onnx")):
        model, _ = tf2onnx.convert.from_graph_def(
            frozen, input_names=[PIXELS_INPUT + ":0"],
            output_names=[PROBABILITIES_OUTPUT + ":0"], opset=ONNX_OPSET,
            tensors_to_rename={PIXELS_INPUT + ":0": PIXELS_INPUT,
                               PROBABILITIES_OUTPUT + ":0": PROBABILITIES_OUTPUT})
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"  # not tf2onnx's "unk__215"
    split_padded_shortcuts(model)
    metadata = pixel_model_metadata(manifest, checkpoint)
    if quantize:
        model = quantize_onnx(model, quantize, calibration)
        metadata[QUANTIZATION] = description(quantize, calibration)
    onnx.helper.set_model_props(model, metadata)
    labels_file = write_model_files("--export_onnx", path, model.SerializeToString(),
                                    manifest["labels"])
    return path, labels_file, checkpoint
