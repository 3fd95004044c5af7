"""Smaller, faster pixel models (useModel.py --quantize): int8, calibrated on
the model's own training images, and fp16.

int8 ONNX: ONNX Runtime's static quantizer (onnxruntime.quantization), in
the QDQ format, weights int8 per output channel, activations uint8 with
ranges from the calibration images (min-max). Activations in uint8, not
int8: ONNX Runtime's x86 int8 kernels multiply uint8 by int8 (VNNI's and
AMX's instruction), and int8 activations ran slower than fp32
(BENCHMARKS.md, "Quantized exports").

int8 TFLite: TensorFlow's own converter with the calibration images as its
representative dataset (weights int8 per channel, activations int8);
float32 pixels in and probabilities out, as the fp32 export. The converter
ships with TensorFlow 2.21, which the suite pins, and LiteRT's
"Post-training quantization" guide still teaches it for TensorFlow models.
LiteRT's own quantizer (litert-quantizer, formerly ai-edge-quantizer) is
where new schemes go (int4, blockwise, mixed precision, for LLMs); it works
on a .tflite after conversion and would add a package for what the
converter already does here.

fp16: the weights stored as float16, half the file; ONNX Runtime
(onnxruntime.transformers.float16, inputs and outputs kept float32) and the
TFLite converter. CPUs compute it through float32 or casts: it pays in size
and on GPUs, not in a CPU's speed (BENCHMARKS.md, "Quantized exports").
"""
import contextlib
import json
import logging
import os
import tempfile

import numpy as np
import tensorflow as tf

from suite.data.contract import FEATURES, load_dataset_info, shard_paths
from suite.export.metadata import PIXELS_INPUT
from suite.images.eval_transform import eval_pixels
from suite.plumbing.errors import UserError

CHOICES = ("int8", "fp16")

# Images the int8 ranges are measured on: ONNX Runtime's and TFLite's
# guides ask for a few hundred representative inputs; the ranges of the
# Fashion-MNIST model moved by under 1% from 300 to 1,000.
CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 32  # images per calibration run of ONNX Runtime


def calibration_pixels(manifest, data_dir=None, count=CALIBRATION_IMAGES):
    """Up to count of the model's training images (FlowIO.py's records in
    data_dir, else those model.json names), spread over the shards, as the
    pixel models' input: float32 [n, size, size, 3] (eval_pixels). Raises
    UserError when there are none to read or their classes differ."""
    data_dir = data_dir or manifest.get("data", {}).get("dir")
    if not data_dir or not os.path.isfile(os.path.join(data_dir, "dataset.json")):
        raise UserError(f"--quantize int8 calibrates on the model's training records, and "
                        f"{data_dir or 'model.json'} has none: give --data_dir with "
                        f"FlowIO.py's records of the same classes")
    info = load_dataset_info(data_dir)
    if info["classes"] != manifest["labels"]:
        raise UserError(f"--data_dir {data_dir} has classes {info['classes']}, the model "
                        f"{manifest['labels']}: give the records the model was trained on")
    paths = shard_paths(data_dir, "train", info)
    per_shard = -(-count // len(paths))
    pixels = []
    for path in paths:
        for record in tf.data.TFRecordDataset(path).take(per_shard):
            encoded = tf.io.parse_single_example(record, FEATURES)["image/encoded"]
            pixels.append(eval_pixels(encoded.numpy(), manifest["image_size"]))
    if not pixels:
        raise UserError(f"{data_dir} has no training records to calibrate on: re-run "
                        f"FlowIO.py or give --data_dir")
    return np.stack(pixels[:count]).astype(np.float32)


def description(precision, calibration=None):
    """The "quantization" metadata entry of a quantized model (JSON)."""
    if precision == "fp16":
        return json.dumps({"precision": "fp16", "method": "weights stored as float16"})
    return json.dumps({"precision": "int8",
                       "method": "static: weights per channel, activation ranges min-max",
                       "calibration_images": len(calibration)})


def quantize_onnx(model, precision, calibration=None, activations="uint8"):
    """The fp32 ONNX ModelProto of export_onnx -> its int8 or fp16 form (a new
    ModelProto; its metadata is set by the caller). activations "int8" is
    for bench/quantized_exports.py's comparison."""
    import onnx
    if precision == "fp16":
        from onnxruntime.transformers.float16 import (DEFAULT_OP_BLOCK_LIST,
                                                      convert_float_to_float16)
        # IsInf, in tf2onnx's form of the mirror average's log-sum-exp
        # (suite.model.network), has no float16 kernel in ONNX Runtime.
        return convert_float_to_float16(model, keep_io_types=True,
                                        op_block_list=[*DEFAULT_OP_BLOCK_LIST, "IsInf"])
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory(prefix="quantize-") as folder, _quiet_quantizer():
        fp32, prepared, quantized = (os.path.join(folder, name)
                                     for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, fp32)  # as a file: given a ModelProto, it fails to save a copy
        # The quantizer's own preparation: shapes inferred, the graph simplified.
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, quantized, _calibration_reader(calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type={"uint8": QuantType.QUInt8,
                                         "int8": QuantType.QInt8}[activations],
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return onnx.load(quantized)


def _calibration_reader(pixels):
    """The calibration pixels in runs of CALIBRATION_BATCH, as ONNX Runtime's
    CalibrationDataReader gives them (get_next until None)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([pixels[start:start + CALIBRATION_BATCH]
                                  for start in range(0, len(pixels), CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {PIXELS_INPUT: batch}

    return Reader()


@contextlib.contextmanager
def _quiet_quantizer():
    """The quantizer logs a warning for each rank-1 weight it cannot split by
    channel (the last batch norm's scale, quantized per tensor instead), on
    the root logger: noise for a user."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def configure_tflite(converter, precision, calibration=None):
    """Sets a TFLite converter to quantize: int8 with the calibration pixels
    as its representative dataset (one image a step), or fp16 weights."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        return
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
