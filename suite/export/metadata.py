"""What an exported pixel model (TFLite, ONNX) carries about itself: its class
names and its pixel contract, as string metadata (ONNX's metadata_props,
which ONNX Runtime gives as custom_metadata_map; TFLite's metadata entries).
Without TensorFlow: clients/onnx_predict.py reads it.

    labels          JSON list of the class names, in output order
    pixel_contract  JSON object: how an image file becomes the input
                    (suite.images.eval_transform), and the normalisation the
                    model does itself
    max_side        JSON: FlowIO.py's --max_side the model was trained with, or null
    checkpoint      the checkpoint exported
    quantization    JSON object, only in a quantized model (useModel.py
                    --quantize): "precision" int8 or fp16, and how

The class names are in the model so that a model cannot be used with another
model's names, or its own in another order; the labels file written beside it
is for people and tools that read text, and a client checks it against them.
Exports before these keys carry only max_side and checkpoint.
"""
import json

from suite.images.decoding import BACKGROUND, JPEG_QUALITY
from suite.images.eval_transform import eval_shorter_side

PIXELS_INPUT = "pixels"                # the pixel models' input and output names
PROBABILITIES_OUTPUT = "probabilities"

LABELS = "labels"
PIXEL_CONTRACT = "pixel_contract"
MAX_SIDE = "max_side"
CHECKPOINT = "checkpoint"
QUANTIZATION = "quantization"

# How suite.images.eval_transform.eval_pixels resizes (Pillow's BILINEAR on
# float channels), the same filter as evaluation's tf.image.resize(antialias=True).
RESIZE_FILTER = "bilinear, antialiased (tf.image.resize antialias=True)"


def pixel_contract(image_size, mean_rgb, std_rgb, max_side):
    """The input a pixel model takes, for a reader of its metadata: what
    suite.images.eval_transform and suite.images.decoding do to a file."""
    return {
        "input": PIXELS_INPUT, "layout": "NHWC", "dtype": "float32",
        "shape": ["N", image_size, image_size, 3], "channels": "RGB", "range": [0, 255],
        "decode": f"EXIF orientation applied, transparency on RGB {list(BACKGROUND)}, the "
                  f"longer side shrunk to max_side if set, stored as JPEG quality "
                  f"{JPEG_QUALITY} 4:4:4 (JPEGs already upright RGB within max_side kept "
                  f"as they are)",
        "max_side": max_side,
        "resize_shorter_side_to": eval_shorter_side(image_size),
        "resize_filter": RESIZE_FILTER,
        "crop": f"the central {image_size}x{image_size} square",
        "normalization": {"mean_rgb": list(mean_rgb), "std_rgb": list(std_rgb),
                          "done_by": "the model: feed 0..255 pixels"},
        "output": PROBABILITIES_OUTPUT,
        "output_order": "the labels entry's order",
    }


def model_metadata(labels, contract, checkpoint):
    """The string metadata of a pixel model (the module's docstring)."""
    return {LABELS: json.dumps(list(labels), ensure_ascii=False),
            PIXEL_CONTRACT: json.dumps(contract, ensure_ascii=False),
            MAX_SIDE: json.dumps(contract["max_side"]),
            CHECKPOINT: checkpoint}


class OddMetadata(ValueError):
    """A metadata entry that is not what an export writes: str() says which and why."""


def read_metadata(metadata, image_size, num_classes):
    """A model's string metadata -> (labels or None where it has none,
    max_side, checkpoint or None), checked against the model's input side
    and number of outputs. Raises OddMetadata."""
    labels = _entry(metadata, LABELS, None)
    if labels is not None and not (
            isinstance(labels, list) and all(isinstance(name, str) and name.strip()
                                             and "\n" not in name for name in labels)):
        raise OddMetadata(f"{LABELS} is not a list of class names")
    if labels is not None and len(labels) != num_classes:
        raise OddMetadata(f"{LABELS} has {len(labels)} class names, the model "
                          f"{num_classes} outputs")
    max_side = _entry(metadata, MAX_SIDE, None)
    if max_side is not None and (type(max_side) is not int or max_side < 1):
        raise OddMetadata(f"{MAX_SIDE} is {metadata[MAX_SIDE][:40]!r}, not null or a "
                          f"positive whole number")
    contract = _entry(metadata, PIXEL_CONTRACT, {})
    shape = contract.get("shape") if isinstance(contract, dict) else "none"
    if shape is not None and not (isinstance(shape, list)
                                  and shape[1:3] == [image_size, image_size]):
        raise OddMetadata(f"{PIXEL_CONTRACT} does not describe this model's "
                          f"{image_size}x{image_size} input")
    return labels, max_side, metadata.get(CHECKPOINT)


def _entry(metadata, key, default):
    """The JSON value of a metadata entry, default where there is none."""
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except ValueError:
        raise OddMetadata(f"{key} is {metadata[key][:40]!r}, not JSON") from None


def model_precision(metadata):
    """The precision of a pixel model's weights from its metadata: "int8" or
    "fp16" for a quantized model, else "fp32"."""
    entry = _entry(metadata, QUANTIZATION, {})
    precision = entry.get("precision", "fp32") if isinstance(entry, dict) else None
    if precision not in ("fp32", "int8", "fp16"):
        raise OddMetadata(f"{QUANTIZATION} does not name int8 or fp16")
    return precision
