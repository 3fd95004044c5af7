"""Classifies images with the ONNX model of `useModel.py --export_onnx`, without
TensorFlow.

    python clients/onnx_predict.py MODEL.onnx IMAGE|FOLDER|GLOB [...] [--top_k 3]
                                   [--threshold P] [--batch_size 32] [--threads N] [--json]

Needs onnxruntime, numpy, Pillow and simplejpeg (pip install -r
clients/requirements-onnx.txt) and the repository's suite/ package, of which
it imports only modules without TensorFlow. The class names are the ones the
model carries (suite.export.metadata); the labels file the export writes
beside it (MODEL.labels.txt) may be left out, and where it is there it must
name the same classes in the same order, or the model is refused. An export
made before models carried their names needs that file. A model that does
not take float32 RGB pixels [N, S, S, 3] with any batch size (another
tool's .onnx: NCHW, a fixed batch, uint8 input, free sides) is refused in
one line saying what it takes. Output, exit code
and the handling of unreadable files are useModel.py's: one line per image (or
with --json one document: "model", "checkpoint", "precision" (fp32, or the
int8 or fp16 of useModel.py --quantize), and "results" with "path",
"label", "predictions" [{"label", "probability"}], or "error"), exit code
non-zero only when nothing could be classified.

Each image is read exactly as useModel.py and Evaluation.py read it: decoded
by Pillow with EXIF orientation, colour conversion and transparency on white,
shrunk to the model's --max_side if it had one, and re-encoded as the JPEG
FlowIO.py stores (suite.images.decoding.encode_image_file); then the shorter
side is resized to ceil(size / 0.875) (to size up to 32 px) with the
antialiased bilinear filter of tf.image.resize and the central size x size
square taken (suite.images.eval_transform.eval_pixels). Probabilities agree
with useModel.py's to about 1e-4.

From Python (load once, classify many):

    from onnx_predict import OnnxClassifier
    classifier = OnnxClassifier("model.onnx")
    for result in classifier.predict(["a.jpg", "b.png"], top_k=3):
        print(result["path"], result.get("label"), result.get("error"))

Memory (bench/onnx_options.py measures each step; layer_50 at 224 px, whose
weights are 91 MB): ONNX Runtime's full graph optimisations re-lay the conv
weights out for its fastest kernels (NCHWc), and it makes the new copy while
the old one is still loaded; what it then frees, glibc's malloc keeps (its
mmap threshold has climbed past the weights' sizes). A plain session of this
model peaks at about 300 MB for single images and 750-850 MB for a batch of 32.
The client loads it in three steps instead:
  1. ONNX Runtime writes the model again, unoptimised, with its weights in a
     file of their own, into a temporary folder (tempfile's: on a tmpfs it
     takes memory while the model loads); the full session is made from that
     copy, which it maps instead of reading, so the weights are not held
     twice while they are re-laid out. The folder is removed once the
     session holds what it needs (POSIX only: elsewhere the model is loaded
     as it is).
  2. On Linux with glibc, malloc's mmap threshold is held at 128 KiB while
     the model loads, so that every block freed then goes back to the
     system, and set to 32 MiB (the top of glibc's own adjustment) with a
     64 MiB trim threshold afterwards, so that the work buffers of runs and
     of the image decoding are reused rather than mapped and zeroed again
     each time. This is process-wide, and glibc no longer moves the
     threshold itself afterwards; malloc is left alone where the process was
     started with MALLOC_MMAP_THRESHOLD_ or glibc.malloc tunables.
  3. Runs use ONNX Runtime's memory arena without memory patterns (buffers
     reused, no page faults per run) and take at most 8 images at a time:
     a batch's activations grow with the number of images in one run.
Together: about 170 MB for single images and 280 MB for batches of 32.

Why the suite's modules are imported and not copied in: they are the one
definition of how a file becomes the network's input, shared with training,
evaluation and useModel.py and tested against them; a copy here would drift
from it. The cost: this file is not standalone. To ship the client without
the repository, copy clients/onnx_predict.py and the suite/ folder into one
folder; it looks for suite/ beside itself first, then in the folder above
(the repository's layout), and imports only these modules of it, none of
which imports TensorFlow: suite.images.decoding, suite.images.eval_transform,
suite.images.finding, suite.export.metadata, suite.prediction.results,
suite.plumbing.flags and suite.plumbing.names.
"""
import ctypes
import json
import os
import sys
import tempfile

import numpy as np


def _find_suite():
    """Puts the folder holding the suite/ package on sys.path: beside this
    file, else the folder above (the repository's layout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "suite", "images", "decoding.py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return
    raise ImportError(f"the suite/ package is neither in {here} nor in the folder above: copy "
                      f"it from the repository beside {os.path.basename(__file__)}")


_find_suite()
from suite.export.metadata import (OddMetadata, model_precision,  # noqa: E402
                                   read_metadata)
from suite.images.decoding import BadImage, encode_image_file  # noqa: E402
from suite.images.eval_transform import eval_pixels  # noqa: E402
from suite.images.finding import expand_inputs  # noqa: E402
from suite.plumbing import flags  # noqa: E402
from suite.plumbing.names import display_name  # noqa: E402
from suite.prediction.results import labels_path, print_results, rank  # noqa: E402


class ModelError(Exception):
    """The model or its labels cannot be used: printed as one line."""


def image_pixels(path, image_size, max_side=None):
    """An image file -> the pixel models' input for it, float32 RGB 0..255
    [image_size, image_size, 3] (for the ONNX and TFLite exports alike).
    Raises BadImage with the reason when the file is unusable."""
    return eval_pixels(encode_image_file(path, max_side)[0], image_size)


# Images per ONNX Runtime run: a batch's activations grow with it (peak RSS
# for a batch of 32 of layer_50 at 224 px: about 280 MB in runs of 8, 600 MB
# in one run), and runs of 8 were no slower per image than one run on an
# idle 2-core CPU (bench/onnx_options.py).
RUN_IMAGES = 8

PROVIDERS = ["CPUExecutionProvider"]


class OnnxClassifier:
    """An exported ONNX model loaded once: predict() classifies lists of files."""

    run_images = RUN_IMAGES  # None: a whole batch in one run

    def __init__(self, model_path, batch_size=32, threads=None):
        """threads: ONNX Runtime's threads for one run (default: one per core).
        How the model is loaded to keep the process small: the module's
        docstring, "Memory"."""
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
        # The arena keeps the runs' buffers for the next run; memory patterns
        # would add one block per input shape on top of them.
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
        try:
            self._session = self._load_session(onnxruntime, model_path, options)
        except Exception as error:  # onnxruntime's own exception types are not public
            raise ModelError(f"{model_path}: not an ONNX model onnxruntime can load "
                             f"({str(error).splitlines()[0][:200]})")
        self._input_name, self.image_size, num_classes = _pixel_model_shape(
            model_path, self._session)
        metadata = self._session.get_modelmeta().custom_metadata_map
        try:
            embedded, self.max_side, self.checkpoint = read_metadata(
                metadata, self.image_size, num_classes)
            self.precision = model_precision(metadata)  # fp32, or int8/fp16 (--quantize)
        except OddMetadata as error:
            raise ModelError(f"{model_path}: its metadata is not what useModel.py "
                             f"--export_onnx writes ({error}): export the model again")
        self.labels = _model_labels(model_path, embedded, num_classes)
        self.batch_size = batch_size

    def _load_session(self, onnxruntime, model_path, options):
        return load_session(onnxruntime, model_path, options)

    def probabilities(self, pixels):
        """[N, num_classes] for pixels [N, size, size, 3] from image_pixels,
        computed run_images at a time."""
        step = self.run_images or len(pixels)
        if len(pixels) <= step:
            return self._session.run(None, {self._input_name: pixels})[0]
        return np.concatenate([
            self._session.run(None, {self._input_name: pixels[start:start + step]})[0]
            for start in range(0, len(pixels), step)])

    def predict(self, paths, top_k=3, threshold=None):
        """As useModel.Classifier.predict: one dict per path, {"path",
        "predictions": [{"label", "probability"}], "label"} or {"path", "error"}."""
        results = [{"path": path} for path in paths]
        for start in range(0, len(paths), self.batch_size):
            step = results[start:start + self.batch_size]
            # Filled in place: a list of images stacked afterwards would hold them twice.
            pixels = np.empty((len(step), self.image_size, self.image_size, 3), np.float32)
            batch = []
            for result in step:
                try:
                    pixels[len(batch)] = image_pixels(result["path"], self.image_size,
                                                      self.max_side)
                    batch.append(result)
                except BadImage as error:
                    result["error"] = str(error)
            if not batch:
                continue
            for result, row in zip(batch, self.probabilities(pixels[:len(batch)])):
                result.update(rank(row, self.labels, top_k, threshold))
        return results


def load_session(onnxruntime, model_path, options):
    """An InferenceSession of model_path with options, loaded as the module's
    docstring says ("Memory"); raises onnxruntime's error for a model it
    cannot load."""
    mallopt = _glibc_mallopt()
    if mallopt:
        mallopt(_M_MMAP_THRESHOLD, 128 << 10)
    try:
        if os.name == "posix":  # elsewhere a mapped file cannot be deleted
            try:
                return _session_from_resaved_copy(onnxruntime, model_path, options)
            except Exception:  # a temporary folder ONNX Runtime cannot write in, or a bad
                pass           # model, which the plain load below reports
        return onnxruntime.InferenceSession(model_path, options, providers=PROVIDERS)
    finally:
        if mallopt:
            mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def _session_from_resaved_copy(onnxruntime, model_path, options):
    """The session made from a copy of the model with its weights in a file
    of their own (which ONNX Runtime maps), written by ONNX Runtime into a
    temporary folder and removed once the session is made."""
    with tempfile.TemporaryDirectory(prefix="onnx_predict-") as folder:
        copy = os.path.join(folder, "model.onnx")
        staging = onnxruntime.SessionOptions()
        staging.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        staging.enable_cpu_mem_arena = False
        staging.optimized_model_filepath = copy
        staging.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "weights")
        staging.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        onnxruntime.InferenceSession(model_path, staging, providers=PROVIDERS)
        return onnxruntime.InferenceSession(copy, options, providers=PROVIDERS)


# glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _glibc_mallopt():
    """glibc's mallopt, or None: not glibc (macOS, Windows, musl), or the
    process was started with its own malloc settings, which win."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's alone
        return libc.mallopt
    except (OSError, AttributeError):
        return None


# The input this client feeds, and the output it reads (suite.export.metadata).
EXPECTED_INPUT = ("one input float32 [N, S, S, 3] (RGB pixels 0..255, NHWC, any batch size N) "
                  "and one output [N, classes]")


def _pixel_model_shape(model_path, session):
    """(input name, image side S, number of classes) of a model that takes
    what EXPECTED_INPUT says; raises ModelError saying what it takes instead
    (a foreign model: NCHW, a fixed batch, uint8, any side)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    out_shape = outputs[0].shape if len(outputs) == 1 else []
    fits = (len(inputs) == 1 and inputs[0].type == "tensor(float)" and len(shape) == 4
            and not isinstance(shape[0], int) and isinstance(shape[1], int) and shape[1] > 0
            and shape[2] == shape[1] and shape[3] == 3
            and len(outputs) == 1 and len(out_shape) == 2 and isinstance(out_shape[1], int)
            and out_shape[1] > 0)
    if not fits:
        has = ", ".join(f"its {kind} {value.name!r} is {_describe(value)}"
                        for kind, values in (("input", inputs), ("output", outputs))
                        for value in values)
        raise ModelError(f"{model_path}: not a pixel model of useModel.py --export_onnx: this "
                         f"client needs {EXPECTED_INPUT}; {has}")
    return inputs[0].name, shape[1], out_shape[1]


def _describe(value):
    """An ONNX Runtime input or output as "uint8 [1, 3, 224, 224]"; a free
    dimension by its name, or "?"."""
    dtype = value.type.removeprefix("tensor(").removesuffix(")")
    dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
    dims = ", ".join("?" if d is None else str(d) for d in (value.shape or []))
    return f"{dtype} [{dims}]"


def _model_labels(model_path, embedded, num_classes):
    """The class names: those the model carries, which the labels file beside
    it (optional then) must repeat; else, for an export made before models
    carried them, the labels file."""
    path = labels_path(model_path)
    if embedded is None:
        labels = _read_labels(path, required=True)
        if len(labels) != num_classes:
            raise ModelError(f"{path} has {len(labels)} class names, {model_path} "
                             f"{num_classes} outputs: export the model again")
        return labels
    in_file = _read_labels(path, required=False)
    if in_file is not None and in_file != embedded:
        raise ModelError(f"{path} does not match the class names in {model_path} "
                         f"({_first_difference(in_file, embedded)}): delete {path} or export "
                         f"the model again; the model's own names need no file")
    return embedded


def _first_difference(in_file, embedded):
    """How a labels file's names differ from the model's, in a few words."""
    if sorted(in_file) == sorted(embedded):
        return "the same names in another order"
    if len(in_file) != len(embedded):
        return f"{len(in_file)} names, the model has {len(embedded)}"
    line = next(i for i, (a, b) in enumerate(zip(in_file, embedded)) if a != b)
    return f"line {line + 1} is {in_file[line]!r}, the model's is {embedded[line]!r}"


def _read_labels(path, required):
    """A labels file's names, one a line; None if it is absent and not required."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f if line.strip()]
    except FileNotFoundError:
        if not required:
            return None
        raise ModelError(f"cannot read the class names {path} (no such file): the model "
                         f"does not carry them (an export before they were embedded): "
                         f"export it again with useModel.py --export_onnx, or write them "
                         f"there, one a line in output order")
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot read the class names {path} "
                         f"({getattr(error, 'strerror', None) or error}): delete it or "
                         f"export the model again")


def main():
    parser = flags.ArgumentParser(description="Classify images with an exported ONNX "
                                              "model, without TensorFlow.", verbose_flag=False)
    parser.add_argument("model", help="the .onnx file of useModel.py --export_onnx")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    flags.add_answers(parser)
    parser.add_argument("--batch_size", type=flags.positive_int, default=32,
                        help="images per run of the model (default: %(default)s)")
    parser.add_argument("--threads", type=flags.positive_int, default=None,
                        help="ONNX Runtime's threads (default: one per core)")
    flags.add_json(parser)
    args = parser.parse_args()
    try:
        classifier = OnnxClassifier(args.model, args.batch_size, args.threads)
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    paths, problems = expand_inputs(args.images)
    results = problems + classifier.predict(paths, args.top_k, args.threshold)
    for result in results:  # printable and valid JSON whatever bytes a name holds
        result["path"] = display_name(result["path"])
    if args.json:
        print(json.dumps({"model": args.model, "checkpoint": classifier.checkpoint,
                          "precision": classifier.precision, "results": results},
                         ensure_ascii=False, indent=1))
    else:
        print_results(results)
    sys.exit(0 if any("predictions" in r for r in results) else 1)


if __name__ == "__main__":
    main()
