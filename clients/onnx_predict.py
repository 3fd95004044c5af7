"""Classifies images with the ONNX model of `useModel.py --export_onnx`, without
TensorFlow.

    python clients/onnx_predict.py MODEL.onnx IMAGE|FOLDER|GLOB [...] [--top_k 3]
                                   [--threshold P] [--batch_size 32] [--threads N] [--json]

Needs onnxruntime, numpy and Pillow (pip install -r clients/requirements-onnx.txt)
and the repository's imagefile.py. The class names are read from the labels
file the export writes beside the model (MODEL.labels.txt). Output, exit code
and the handling of unreadable files are useModel.py's: one line per image (or
with --json one document: "model", "checkpoint", and "results" with "path",
"label", "predictions" [{"label", "probability"}], or "error"), exit code
non-zero only when nothing could be classified.

Each image is read exactly as useModel.py and Evaluation.py read it: decoded
by Pillow with EXIF orientation, colour conversion and transparency on white,
shrunk to the model's --max_side if it had one, and re-encoded as the JPEG
FlowIO.py stores (imagefile.encode_image_file); then the shorter side is
resized to ceil(size / 0.875) with the antialiased bilinear filter of
tf.image.resize and the central size x size square taken
(imagefile.eval_pixels). Probabilities agree with useModel.py's to about 1e-4.

From Python (load once, classify many):

    from onnx_predict import OnnxClassifier
    classifier = OnnxClassifier("model.onnx")
    for result in classifier.predict(["a.jpg", "b.png"], top_k=3):
        print(result["path"], result.get("label"), result.get("error"))

Why imagefile.py is imported and not copied in: it is the one definition of
how a file becomes the network's input, shared with training, evaluation and
useModel.py and tested against them; a copy here would drift from it. The
cost: this file is not standalone. To ship the client without the
repository, copy clients/onnx_predict.py and imagefile.py into one folder
(both need only Pillow and numpy); it looks for imagefile.py beside itself
first, then in the folder above (the repository's layout).
"""
import argparse
import json
import os
import sys

import numpy as np


def _import_imagefile():
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "imagefile.py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            import imagefile
            return imagefile
    raise ImportError(f"imagefile.py is neither in {here} nor in the folder above: copy it "
                      f"from the repository beside {os.path.basename(__file__)}")


imagefile = _import_imagefile()


class ModelError(Exception):
    """The model or its labels cannot be used: printed as one line."""


def image_pixels(path, image_size, max_side=None):
    """An image file -> the pixel models' input for it, float32 RGB 0..255
    [image_size, image_size, 3] (for the ONNX and TFLite exports alike).
    Raises imagefile.BadImage with the reason when the file is unusable."""
    jpeg = imagefile.encode_image_file(path, max_side)[0]
    return imagefile.eval_pixels(jpeg, image_size)


class OnnxClassifier:
    """An exported ONNX model loaded once: predict() classifies lists of files."""

    def __init__(self, model_path, batch_size=32, threads=None, low_memory=False):
        """threads: ONNX Runtime's threads for one run (default: one per core).
        low_memory: only ONNX Runtime's basic graph optimisations. The full
        set re-lays the conv weights out for its fastest kernels, a second
        copy of them: for layer_50 at 224 px, peak RSS about 190 MB instead
        of 300 MB, at about 1.2x the time per image (bench/onnx_options.py)."""
        try:
            import onnxruntime
        except ImportError:
            raise ModelError("onnxruntime is not installed: "
                             "pip install -r clients/requirements-onnx.txt")
        if not os.path.isfile(model_path):
            raise ModelError(f"{model_path}: no such file; write it with "
                             f"'python useModel.py --export_onnx {model_path}'")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        # Worker threads sleep between runs instead of spinning: a service
        # shares its cores with its other work, and on a busy 2-core machine
        # spinning made single images 1.5x slower (bench/predict_speed.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory arena: batches' activations go back to the system instead
        # of staying reserved (peak RSS at a batch of 32 at 224 px: -200 MB,
        # no slower).
        options.enable_cpu_mem_arena = False
        if low_memory:
            options.graph_optimization_level = \
                onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        try:
            self._session = onnxruntime.InferenceSession(
                model_path, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types are not public
            raise ModelError(f"{model_path}: not an ONNX model onnxruntime can load "
                             f"({str(error).splitlines()[0][:200]})")
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self.image_size = model_input.shape[1]
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.max_side = json.loads(metadata.get("max_side", "null"))
        self.checkpoint = metadata.get("checkpoint")
        self.labels = _read_labels(imagefile.labels_path(model_path))
        num_classes = self._session.get_outputs()[0].shape[-1]
        if num_classes != len(self.labels):
            raise ModelError(f"{imagefile.labels_path(model_path)} has {len(self.labels)} "
                             f"class names, the model {num_classes} outputs: export again")
        self.batch_size = batch_size

    def probabilities(self, pixels):
        """[N, num_classes] for pixels [N, size, size, 3] from image_pixels."""
        return self._session.run(None, {self._input_name: pixels})[0]

    def predict(self, paths, top_k=3, threshold=None):
        """As useModel.Classifier.predict: one dict per path, {"path",
        "predictions": [{"label", "probability"}], "label"} or {"path", "error"}."""
        results = [{"path": path} for path in paths]
        for start in range(0, len(paths), self.batch_size):
            batch, pixels = [], []
            for result in results[start:start + self.batch_size]:
                try:
                    pixels.append(image_pixels(result["path"], self.image_size,
                                               self.max_side))
                    batch.append(result)
                except imagefile.BadImage as error:
                    result["error"] = str(error)
            if not pixels:
                continue
            for result, row in zip(batch, self.probabilities(np.stack(pixels))):
                result.update(imagefile.rank(row, self.labels, top_k, threshold))
        return results


def _read_labels(path):
    try:
        with open(path, encoding="utf-8") as f:
            labels = [line.rstrip("\n") for line in f if line.strip()]
    except OSError as error:
        raise ModelError(f"cannot read the class names {path} ({error.strerror or error}): "
                         f"it is written beside the model by useModel.py --export_onnx")
    return labels


def _positive_int(text):
    """A range-checked number for argparse (the suite's scripts use cli.py's
    types; this client stays free of the suite's other modules)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return int(text)


def _probability(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def main():
    parser = argparse.ArgumentParser(description="Classify images with an exported ONNX "
                                                 "model, without TensorFlow.")
    parser.add_argument("model", help="the .onnx file of useModel.py --export_onnx")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--top_k", type=_positive_int, default=3, help="(default: %(default)s)")
    parser.add_argument("--threshold", type=_probability, default=None,
                        help="below this probability the answer is 'unknown'")
    parser.add_argument("--batch_size", type=_positive_int, default=32,
                        help="(default: %(default)s)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="ONNX Runtime's threads (default: one per core)")
    parser.add_argument("--low_memory", action="store_true",
                        help="basic graph optimisations only: about 0.6x the memory, "
                             "1.2x the time per image")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    try:
        classifier = OnnxClassifier(args.model, args.batch_size, args.threads, args.low_memory)
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    paths, problems = imagefile.expand_inputs(args.images)
    results = problems + classifier.predict(paths, args.top_k, args.threshold)
    for result in results:  # printable and valid JSON whatever bytes a name holds
        result["path"] = imagefile.display_name(result["path"])
    if args.json:
        print(json.dumps({"model": args.model, "checkpoint": classifier.checkpoint,
                          "results": results}, ensure_ascii=False, indent=1))
    else:
        imagefile.print_results(results)
    sys.exit(0 if any("predictions" in r for r in results) else 1)


if __name__ == "__main__":
    main()
