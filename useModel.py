"""Classifies images with a trained model.

    python useModel.py IMAGE|FOLDER|GLOB [...] [--model_dir models] [--top_k 3]
                       [--threshold P] [--json] [--checkpoint PATH|best|latest]
                       [--precision auto|fp32|bf16|fp16]

It classifies (and exports) with best/'s checkpoint when there is one, else
the newest (--checkpoint latest: the newest), and its first line, on stderr,
says which and why (modeldir.describe_checkpoint).

Folders are searched recursively; a file that cannot be used (not an image,
broken, too large or too thin, not a regular file: a pipe or device is never
opened) gets one error line (or a JSON entry with "error") and the others go
on. Names that are not UTF-8 are printed with their odd bytes as \\xNN, so the
output (and --json's) is always valid UTF-8. The exit code is
non-zero only when nothing could be classified. Each image is decoded and
preprocessed exactly as FlowIO.py stores it and Evaluation.py reads it (EXIF
orientation, colour conversion, --max_side, centre crop). The precision it
computes in goes to stderr (into the JSON with --json): with "auto", the
fastest that keeps fp32's answers (hardware.choose_precision): fp32 on CPUs,
fp16 on GPUs with tensor cores; --precision bf16 is faster on CPUs with AMX
or avx512_bf16, and may change an answer that is a near tie.

From Python, load once and classify many:

    from useModel import Classifier
    classifier = Classifier("models")
    for result in classifier.predict(["a.jpg", "b.png"], top_k=3):
        print(result["path"], result["predictions"][0])  # {"label": ..., "probability": ...}

Export for serving (no images needed):

    python useModel.py --export DIR [--model_dir models] [--checkpoint best]
                       [--export_precision fp32|bf16|fp16]
    python useModel.py --export_tflite FILE [--model_dir models]
    python useModel.py --export_onnx FILE [--model_dir models]

--export writes a SavedModel to DIR/<version> (the next free integer, the
layout TensorFlow Serving watches). Its "serving_default" signature takes
`image_bytes`, a 1-D string tensor of encoded images (JPEG, PNG, GIF, BMP,
WebP), and returns, for each image, every class most probable first:
`classes` [batch, num_classes] (names), `probabilities` [batch, num_classes]
and `class_ids` [batch, num_classes] (indices into labels.txt). An image
whose header claims a size outside imagefile.py's rule (too large, too thin)
or that is none of those formats fails the request with InvalidArgument before
anything is decoded. Its layers compute in float32 (it runs anywhere) unless
--export_precision says bf16 or fp16. The graph is built from code (modeldir.build_network +
FlowIO.preprocess_for_eval) and only the checkpoint's variables are read.
TensorFlow's decoders ignore EXIF, so clients must send upright images
(useModel.py and FlowIO.py rotate by EXIF).

--export_tflite writes a TensorFlow Lite model taking RGB pixels, float32
0..255, [N, size, size, 3] (shorter side resized to ceil(size / 0.875), or
to size up to 32 px, then the central square: see frozen_pixel_graph()),
returning probabilities [N, num_classes] in labels.txt order; the class
names go to FILE's .labels.txt beside it, one per line. --export_onnx writes
the same graph as an ONNX model (and the same labels file), which
clients/onnx_predict.py runs in ONNX Runtime without TensorFlow.
"""
import json
import logging
import os
import shutil
import sys
import tempfile

import numpy as np

import cli

if __name__ == "__main__":
    cli.configure_environment(verbose="--verbose" in sys.argv)  # before TensorFlow loads

import tensorflow as tf

import FlowIO
import hardware
import imagefile
import modeldir
from cli import UserError


class Classifier:
    """A trained model loaded once: predict() classifies lists of image files.

    checkpoint: None (best/'s when there is one, else the newest), "best",
    "latest" or a prefix; checkpoint_description says which and why, and
    self.checkpoint is the one loaded."""

    def __init__(self, model_dir="models", checkpoint=None, batch_size=32, precision="auto"):
        self.manifest = modeldir.load_manifest(model_dir)
        self.labels = self.manifest["labels"]
        self.batch_size = batch_size
        # (A clear error if there is none.)
        self.checkpoint_description = modeldir.describe_checkpoint(model_dir, checkpoint)
        # hardware.choose_precision: "auto" is the fastest this machine has
        # that keeps the answers (BENCHMARKS.md, "Precision").
        self.precision = hardware.choose_precision(precision, purpose="prediction")
        # The weights stay variables, restored from the checkpoint: a service
        # keeps a third of the memory of frozen constants for a little speed
        # on single images (modeldir.frozen_network says both). Except in
        # bf16 on a CPU, where the constants also convert the float32 weights
        # once instead of at every run; without them bf16 was slower than
        # fp32 for single images (1.6x frozen bf16's time).
        frozen = self.precision.rewrite_bf16
        self._graph = tf.Graph()
        with self._graph.as_default():
            # The input is encoded JPEG bytes, as FlowIO stores them; the graph
            # runs the evaluation preprocessing, so prediction = evaluation.
            self._encoded = tf.compat.v1.placeholder(tf.string, [None], name="encoded_images")
            size, preprocessing = self.manifest["image_size"], self.manifest["preprocessing"]
            images = tf.map_fn(_plain(lambda e: FlowIO.preprocess_for_eval(e, size,
                                                                           preprocessing)),
                               self._encoded,
                               fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            if frozen:
                network, self.checkpoint = modeldir.frozen_network(
                    self.manifest, model_dir, checkpoint, self.precision.graph_dtype)
                self._probabilities = tf.nn.softmax(modeldir.import_network(network, images))
            else:
                self._probabilities = network_probabilities(images, self.manifest,
                                                            self.precision.graph_dtype)
            self._session = tf.compat.v1.Session(
                graph=self._graph, config=hardware.session_config(False, self.precision))
            if not frozen:
                self.checkpoint = modeldir.restore_chosen(self._session, model_dir, checkpoint)

    def probabilities(self, encoded_images):
        """[len(encoded_images), num_classes] for JPEG bytes from encode_image_file."""
        return self._session.run(self._probabilities, {self._encoded: encoded_images})

    def predict(self, paths, top_k=3, threshold=None):
        """One dict per path: {"path", "predictions": [{"label", "probability"}],
        "label"} or {"path", "error"}. "label" is the best class, or "unknown"
        when its probability is below threshold."""
        results = [{"path": path} for path in paths]
        max_side = self.manifest["preprocessing"].get("max_side")
        for start in range(0, len(paths), self.batch_size):
            batch, encoded = [], []
            for result in results[start:start + self.batch_size]:
                try:  # BadImage is all that one file can raise (imagefile.py)
                    encoded.append(imagefile.encode_image_file(result["path"], max_side)[0])
                    batch.append(result)
                except imagefile.BadImage as error:
                    result["error"] = str(error)
            if not encoded:
                continue
            for result, row in zip(batch, self._rows(batch, encoded)):
                if row is not None:  # None: TensorFlow refused it (its error is set)
                    result.update(imagefile.rank(row, self.labels, top_k, threshold))
        return results

    def _rows(self, batch, encoded):
        """Probabilities per image; an image TensorFlow's decoder refuses
        although Pillow read it gets an "error" and row None, and the rest
        of its batch is still classified."""
        try:
            return self.probabilities(encoded)
        except tf.errors.InvalidArgumentError:
            rows = []
            for result, data in zip(batch, encoded):
                try:
                    rows.append(self.probabilities([data])[0])
                except tf.errors.InvalidArgumentError as error:
                    result["error"] = ("TensorFlow cannot decode it: "
                                       + error.message.splitlines()[0])
                    rows.append(None)
            return rows

    def close(self):
        self._session.close()


def _plain(fn):
    """fn for tf.map_fn, not rewritten by AutoGraph: it has no Python control
    flow, and AutoGraph re-reads the source files, which breaks if one was
    edited after it was imported."""
    return tf.autograph.experimental.do_not_convert(fn)


def network_probabilities(images, manifest, compute_dtype=tf.float32):
    """Softmax of the eval-mode network on preprocessed images [N, size, size, 3]."""
    logits = modeldir.build_network(images, manifest, is_train=False,
                                    compute_dtype=compute_dtype)
    return tf.nn.softmax(logits, name="probabilities")


# ---------------------------------------------------------------------------
# Export: a SavedModel for TensorFlow Serving, a TensorFlow Lite model
# ---------------------------------------------------------------------------
SERVING_INPUT = "image_bytes"  # "_bytes": what Google Cloud's JSON API expects of binary inputs


def _starts_with(data, prefix, offset=0):
    head = tf.strings.substr(data, offset, len(prefix))
    return tf.equal(head, prefix)


# The signatures TensorFlow's decode_image dispatches on (decode_image_op.cc).
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF8",
               "bmp": b"BM"}


def header_size(encoded):
    """(height, width) that an image's header claims, as int64 scalars, read
    without decoding it: JPEG by tf.io.extract_jpeg_shape (the header only),
    PNG from IHDR, GIF from its logical screen, BMP as TensorFlow's decoder
    reads it (int32 at 18 and 22, height signed), WebP from its VP8, VP8L or
    VP8X chunk. (-1, -1) for anything else, which no decoder then sees."""
    padded = tf.strings.join([encoded, b"\0" * 32])  # substr never runs past the end
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, 32), tf.uint8), tf.int64)

    def number(start, length, big_endian=False):
        shifts = range(length)[::-1] if big_endian else range(length)
        return tf.add_n([head[start + i] * (1 << (8 * shift)) for i, shift in enumerate(shifts)])

    def int32(start):  # little-endian, signed
        value = number(start, 4)
        return tf.where(value >= 2**31, value - 2**32, value)

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(encoded), tf.int64)
        return shape[0], shape[1]

    def png():  # IHDR must be the first chunk; otherwise no size, and refused
        ihdr = _starts_with(padded, b"IHDR", 12)
        return (tf.where(ihdr, number(20, 4, True), 0), tf.where(ihdr, number(16, 4, True), 0))

    def webp():
        chunk = tf.strings.substr(padded, 12, 4)
        bits = number(21, 4)
        return tf.case([
            (tf.equal(chunk, b"VP8 "), lambda: (tf.bitwise.bitwise_and(number(28, 2), 0x3FFF),
                                               tf.bitwise.bitwise_and(number(26, 2), 0x3FFF))),
            (tf.equal(chunk, b"VP8L"), lambda: (
                tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1,
                tf.bitwise.bitwise_and(bits, 0x3FFF) + 1)),
            (tf.equal(chunk, b"VP8X"), lambda: (number(27, 3) + 1, number(24, 3) + 1))],
            default=lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))

    return tf.case([
        (_starts_with(padded, _SIGNATURES["jpeg"]), jpeg),
        (_starts_with(padded, _SIGNATURES["png"]), png),
        (_starts_with(padded, _SIGNATURES["gif"]), lambda: (number(8, 2), number(6, 2))),
        (_starts_with(padded, _SIGNATURES["bmp"]), lambda: (tf.abs(int32(22)), int32(18))),
        (tf.logical_and(_starts_with(padded, b"RIFF"), _starts_with(padded, b"WEBP", 8)), webp)],
        default=lambda: (tf.constant(-1, tf.int64), tf.constant(-1, tf.int64)))


def size_is_allowed(height, width):
    """imagefile.size_problem's rule, as a TensorFlow bool: the same limits
    (MAX_SIDE, MAX_PIXELS, MAX_ASPECT_RATIO) in the served graph."""
    longer, shorter = tf.maximum(height, width), tf.minimum(height, width)
    # Clamped so the product cannot overflow int64 (a PNG side may be 2^32 - 1);
    # a side over MAX_SIDE fails anyway.
    side = imagefile.MAX_SIDE + 1
    area = tf.minimum(height, side) * tf.minimum(width, side)
    return tf.reduce_all([shorter >= 1, longer <= imagefile.MAX_SIDE,
                          area <= imagefile.MAX_PIXELS,
                          longer <= imagefile.MAX_ASPECT_RATIO * shorter])


def check_image_header(encoded):
    """encoded, once its header passes the image-size rule: a request with a
    PNG of a few hundred KB claiming 12,000x12,000 pixels gets InvalidArgument
    before any decoder allocates them (it pushed a server past 6 GB), and the
    server goes on serving."""
    height, width = header_size(encoded)
    known = height >= 0
    checks = [
        tf.debugging.Assert(known, ["not a JPEG, PNG, GIF, BMP or WebP image"]),
        tf.debugging.Assert(tf.logical_or(tf.logical_not(known), size_is_allowed(height, width)), [
            tf.strings.format(
                "image of {}x{} pixels refused: each side must be 1 to {} pixels, at most {} "
                "pixels in all, the longer side at most {} times the shorter",
                (width, height, imagefile.MAX_SIDE, imagefile.MAX_PIXELS,
                 imagefile.MAX_ASPECT_RATIO))])]
    with tf.control_dependencies(checks):
        return tf.identity(encoded)


def serving_preprocess(encoded, image_size, preprocessing=None):
    """Encoded bytes of any image TensorFlow decodes -> the network input,
    normalised as the model.json "preprocessing" given says (FlowIO.normalize).

    FlowIO stores every image as JPEG (PNG and the rest re-encoded at
    JPEG_QUALITY, 4:4:4, transparency on white) and evaluation runs
    preprocess_for_eval on those bytes. The served graph does the same: a
    JPEG goes straight to preprocess_for_eval, exactly as useModel.py's
    Classifier and Evaluation.py see it; anything else is decoded, composited
    and re-encoded as FlowIO would, so the network sees what it was trained
    on. Not replicated: EXIF orientation (TensorFlow ignores EXIF) and
    --max_side (the image is shrunk to at most image_size / 0.875 anyway).
    Every image first passes check_image_header: the image-size rule of
    imagefile.py, from the header, before anything is decoded.
    """
    encoded = check_image_header(encoded)
    # Room for the longest signature check, so substr never runs past the end.
    padded = tf.strings.join([encoded, b"\0" * 12])
    is_jpeg = _starts_with(padded, b"\xff\xd8\xff")
    may_have_alpha = tf.logical_or(  # PNG or WebP; a BMP's 4th byte is often padding
        _starts_with(padded, b"\x89PNG"),
        tf.logical_and(_starts_with(padded, b"RIFF"), _starts_with(padded, b"WEBP", 8)))

    def on_white():
        # As stored: 1 to 4 channels (gray, gray + alpha, RGB, RGB + alpha);
        # WebP's decoder refuses a channel count other than the file's own.
        image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
        channels = tf.shape(image)[2]
        colour = tf.cond(channels < 3, lambda: tf.tile(image[:, :, :1], [1, 1, 3]),
                         lambda: image[:, :, :3])
        alpha = tf.cond(tf.equal(channels % 2, 0), lambda: image[:, :, -1:],
                        lambda: tf.fill(tf.shape(image[:, :, :1]), tf.constant(255, tf.uint8)))
        alpha = tf.cast(alpha, tf.float32) / 255.0
        background = tf.constant(imagefile.BACKGROUND, tf.float32)
        blended = tf.cast(colour, tf.float32) * alpha + background * (1.0 - alpha)
        return tf.cast(tf.round(blended), tf.uint8)

    def opaque():
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    def as_jpeg():
        rgb = tf.cond(may_have_alpha, on_white, opaque)
        return tf.io.encode_jpeg(rgb, quality=imagefile.JPEG_QUALITY, chroma_downsampling=False)

    jpeg = tf.cond(is_jpeg, lambda: encoded, as_jpeg)
    return FlowIO.preprocess_for_eval(jpeg, image_size, preprocessing)


def _next_version(export_dir):
    """TensorFlow Serving loads the highest integer sub-folder: one above it."""
    versions = [int(name) for name in os.listdir(export_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(model_dir, export_dir, checkpoint=None, precision="fp32"):
    """Writes a SavedModel of the checkpoint to export_dir/<next version>;
    returns (its path, the checkpoint).

    precision "fp32" (the default) runs on any server. "bf16" or "fp16" build
    the layers in that type (variables stay float32, read through casts), for
    a server with the matching hardware: the graph is fixed in the SavedModel,
    so the serving machine cannot choose as Classifier does."""
    manifest = modeldir.load_manifest(model_dir)
    modeldir.resolve_checkpoint(model_dir, checkpoint)  # a clear error if there is none
    try:
        os.makedirs(export_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".export-", dir=export_dir)
    except OSError as error:
        raise UserError(f"--export {export_dir}: cannot write there ({cli.reason(error)})")
    try:
        return _export_saved_model(manifest, model_dir, checkpoint, staging, export_dir,
                                   precision)
    except (OSError, tf.errors.OpError) as error:
        raise UserError(f"--export {export_dir}: cannot write there ({cli.reason(error)}); "
                        f"nothing was exported: free some space or choose another folder")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_saved_model(manifest, model_dir, checkpoint, staging, export_dir, precision):
    """export_saved_model's work: built in staging, then moved in."""
    size, preprocessing = manifest["image_size"], manifest["preprocessing"]
    graph = tf.Graph()
    with modeldir.quiet_tf1_notices(), graph.as_default(), \
            tf.compat.v1.Session(graph=graph) as session:
        encoded = tf.compat.v1.placeholder(tf.string, [None], name=SERVING_INPUT)
        images = tf.map_fn(_plain(lambda e: serving_preprocess(e, size, preprocessing)),
                           encoded,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        probabilities = network_probabilities(images, manifest, hardware.DTYPES[precision])
        # Every class, best first: clients slice [:, :k] for a top-k.
        top = tf.math.top_k(probabilities, k=len(manifest["labels"]))
        names = tf.gather(tf.constant(manifest["labels"]), top.indices)
        # Only the variables of the graph built above are read from the
        # checkpoint; nothing of a stored graph is imported.
        checkpoint = modeldir.restore_chosen(session, model_dir, checkpoint)
        signature = tf.compat.v1.saved_model.predict_signature_def(
            inputs={SERVING_INPUT: encoded},
            outputs={"classes": names, "probabilities": top.values,
                     "class_ids": top.indices})
        # Written to a hidden folder, then renamed: TensorFlow Serving polls
        # export_dir and must never load a half-written version.
        builder = tf.compat.v1.saved_model.Builder(os.path.join(staging, "model"))
        builder.add_meta_graph_and_variables(
            session, [tf.saved_model.SERVING],
            signature_def_map={
                tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature},
            strip_default_attrs=True)  # loadable by older TensorFlow Serving builds
        builder.save()
    while True:
        target = os.path.join(export_dir, str(_next_version(export_dir)))
        try:
            os.rename(os.path.join(staging, "model"), target)
            break
        except OSError:  # another export took that number meanwhile
            if not os.path.exists(target):
                raise
    return target, checkpoint


def tflite_pixels(encoded_images, image_size):
    """JPEG bytes (from imagefile.encode_image_file) -> the TFLite model's input:
    float32 RGB 0..255 [N, image_size, image_size, 3], resized and cropped as
    FlowIO.preprocess_for_eval does before normalising (FlowIO.eval_pixels): the
    model normalises them itself, with its model.json's values.
    imagefile.eval_pixels gives the same pixels without TensorFlow."""
    pixels = tf.stack([FlowIO.eval_pixels(e, image_size) for e in encoded_images])
    return pixels.numpy().astype(np.float32)


PIXELS_INPUT = "pixels"                # the pixel models' input and output names
PROBABILITIES_OUTPUT = "probabilities"
ONNX_OPSET = 15  # tf2onnx 1.17's default, pinned: ONNX Runtime has run it since 1.10 (2021)


def frozen_pixel_graph(model_dir, checkpoint=None):
    """The pixel contract of the TFLite and ONNX exports, as one frozen graph:
    (GraphDef, manifest, checkpoint).

    Input PIXELS_INPUT: float32 RGB 0..255 [N, size, size, 3], the image's
    shorter side resized (antialiased bilinear) to ceil(size / 0.875), or to
    size up to 32 px (imagefile.eval_crop), and the central square taken
    (imagefile.eval_pixels, FlowIO.preprocess_for_eval before normalising). Output PROBABILITIES_OUTPUT: [N, num_classes] in
    labels.txt order. Normalisation is inside the model (model.json's
    "preprocessing", FlowIO.normalize), so a client only resizes and crops.
    The variables are constants: the converters take the graph as it is.
    """
    manifest = modeldir.load_manifest(model_dir)
    modeldir.resolve_checkpoint(model_dir, checkpoint)  # a clear error if there is none
    size = manifest["image_size"]
    graph = tf.Graph()
    with modeldir.quiet_tf1_notices(), graph.as_default(), \
            tf.compat.v1.Session(graph=graph) as session:
        pixels = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3],
                                          name=PIXELS_INPUT)
        probabilities = network_probabilities(
            FlowIO.normalize(pixels, manifest["preprocessing"]), manifest)
        assert probabilities.op.name == PROBABILITIES_OUTPUT, probabilities.op.name
        checkpoint = modeldir.restore_chosen(session, model_dir, checkpoint)
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), [PROBABILITIES_OUTPUT])
    return frozen, manifest, checkpoint


def _write_model_files(flag, path, model_bytes, labels):
    """Writes the model to path and the class names (one per line, in output
    order) to path's .labels.txt; each file is written to a temporary name and
    renamed, so a reader never sees half a file. Returns the labels path."""
    labels_path = imagefile.labels_path(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        for target, data in ((path, model_bytes),
                             (labels_path, "".join(f"{name}\n" for name in
                                                   labels).encode("utf-8"))):
            with open(target + ".tmp", "wb") as f:
                f.write(data)
            os.replace(target + ".tmp", target)
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot write ({error.strerror or error})")
    return labels_path


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
    with modeldir.quiet_tf1_notices(), graph.as_default(), \
            tf.compat.v1.Session(graph=graph) as session:
        tf.graph_util.import_graph_def(frozen, name="")
        converter = tf.compat.v1.lite.TFLiteConverter.from_session(
            session, [graph.get_tensor_by_name(PIXELS_INPUT + ":0")],
            [graph.get_tensor_by_name(PROBABILITIES_OUTPUT + ":0")])
        flatbuffer = converter.convert()
    labels_path = _write_model_files("--export_tflite", path, flatbuffer, manifest["labels"])
    return path, labels_path, checkpoint


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
    from onnx import helper, numpy_helper  # only the ONNX export needs them

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name, op_type):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def constant(name):
        return numpy_helper.to_array(initializers[name]) if name in initializers else None

    def channel_padding(pad):
        """(zero channels before, after) that a Pad node adds in NCHW, or None."""
        mode = [a.s for a in pad.attribute if a.name == "mode"]
        pads = constant(pad.input[1]) if len(pad.input) > 1 else None
        fill = constant(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0
        if mode not in ([], [b"constant"]) or pads is None or fill is None or np.any(fill):
            return None
        if pads.shape != (8,) or pads[[0, 2, 3, 4, 6, 7]].any():  # channels only
            return None
        return int(pads[1]), int(pads[5])

    rewrites = {}  # the Relu node's name -> (the nodes in place of the four, the other three)
    for pad in graph.node:
        padding = channel_padding(pad) if pad.op_type == "Pad" else None
        add = padding and only_consumer(pad.output[0], "Add")
        if not add:
            continue
        residual = add.input[1] if add.input[0] == pad.output[0] else add.input[0]
        conv, relu = producers.get(residual), only_consumer(add.output[0], "Relu")
        weights = bias = None
        if conv is not None and conv.op_type == "Conv" and len(conv.input) == 3:
            weights, bias = constant(conv.input[1]), constant(conv.input[2])
        if (relu is None or weights is None or bias is None
                or only_consumer(residual, "Add") is None
                or any(a.name == "group" and a.i != 1 for a in conv.attribute)):
            continue
        before, after = padding
        channels = len(weights)
        nodes, outputs = [], []
        for part, start, stop in (("before", 0, before),
                                  ("shortcut", before, channels - after),
                                  ("after", channels - after, channels)):
            if start == stop:
                continue
            name = f"{conv.name}/{part}"
            graph.initializer.extend([numpy_helper.from_array(weights[start:stop], name + "/W"),
                                      numpy_helper.from_array(bias[start:stop], name + "/B")])
            split = helper.make_node("Conv", [conv.input[0], name + "/W", name + "/B"],
                                     [name], name=name)
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
        rewrites[relu.name] = (nodes, {pad.name, conv.name, add.name})
    replaced = set().union(*(names for _, names in rewrites.values()))
    kept = []
    for node in graph.node:  # the new nodes in the Relu's place: after all they read
        if node.name in rewrites:
            kept.extend(rewrites[node.name][0])
        elif node.name not in replaced:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return len(rewrites)


def export_onnx(model_dir, path, checkpoint=None):
    """Writes an ONNX model of the checkpoint (frozen_pixel_graph: the TFLite
    model's contract, batch size free) to path and the class names beside it;
    returns (path, labels path, checkpoint).

    Pixels in, as for TFLite: tf2onnx cannot convert the SavedModel's
    image-decoding string ops, and ONNX has no JPEG decoder. The model's
    metadata (custom_metadata_map in ONNX Runtime) holds what a client needs
    besides the labels: "max_side" (the --max_side images were shrunk to
    before the JPEG encoding, JSON null for none) and "checkpoint". The
    option-A shortcuts are rewritten for ONNX Runtime's fastest layout
    (split_padded_shortcuts).
    """
    try:  # only this export needs them, and tf2onnx takes seconds to import
        import onnx
        import tf2onnx
    except ImportError as error:
        raise UserError(f"--export_onnx needs {error.name}: pip install -r requirements.txt")
    frozen, manifest, checkpoint = frozen_pixel_graph(model_dir, checkpoint)
    # tf2onnx logs each conversion step at INFO: it would bury the one line that matters.
    with modeldir.quiet_tf1_notices(), tf2onnx.logging.set_scope_level(
            logging.ERROR, logging.getLogger("tf2onnx")):
        model, _ = tf2onnx.convert.from_graph_def(
            frozen, input_names=[PIXELS_INPUT + ":0"],
            output_names=[PROBABILITIES_OUTPUT + ":0"], opset=ONNX_OPSET,
            tensors_to_rename={PIXELS_INPUT + ":0": PIXELS_INPUT,
                               PROBABILITIES_OUTPUT + ":0": PROBABILITIES_OUTPUT})
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"  # not tf2onnx's "unk__215"
    split_padded_shortcuts(model)
    max_side = manifest.get("preprocessing", {}).get("max_side")
    onnx.helper.set_model_props(model, {"max_side": json.dumps(max_side),
                                                "checkpoint": checkpoint})
    labels_path = _write_model_files("--export_onnx", path, model.SerializeToString(),
                                     manifest["labels"])
    return path, labels_path, checkpoint


def parse_args(argv=None):
    parser = cli.ArgumentParser(description="Classify images with a trained model, or "
                                            "export it for serving.")
    parser.add_argument("images", nargs="*", help="image files, folders or glob patterns")
    parser.add_argument("--model_dir", default="models", help="(default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="a checkpoint prefix, 'best' or 'latest' (the newest) (default: "
                             "best/'s when there is one, else the newest)")
    parser.add_argument("--top_k", type=cli.positive_int, default=3, help="(default: %(default)s)")
    parser.add_argument("--threshold", type=cli.probability, default=None,
                        help="below this probability the answer is 'unknown'")
    parser.add_argument("--batch_size", type=cli.positive_int, default=32, help="(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--precision", choices=hardware.PRECISIONS, default="auto",
                        help="classify in this precision (default: auto, the fastest this "
                             "machine has that keeps fp32's answers: fp32 on CPUs, fp16 on "
                             "GPUs with tensor cores; said on stderr)")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="write a SavedModel for TensorFlow Serving to DIR/<next version>")
    parser.add_argument("--export_precision", choices=sorted(hardware.DTYPES), default="fp32",
                        help="the SavedModel's layers in this precision (default: "
                             "%(default)s, which runs anywhere; bf16 for servers with AMX "
                             "or GPUs of compute capability 8.0+, fp16 for GPUs)")
    parser.add_argument("--export_tflite", metavar="FILE", default=None,
                        help="write a TensorFlow Lite model (pixels in) to FILE")
    parser.add_argument("--export_onnx", metavar="FILE", default=None,
                        help="write an ONNX model (pixels in) to FILE, for "
                             "clients/onnx_predict.py and ONNX Runtime")
    args = parser.parse_args(argv)
    if not (args.images or args.export or args.export_tflite or args.export_onnx):
        parser.error("give images to classify, or --export DIR / --export_tflite FILE / "
                     "--export_onnx FILE")
    return args


def main():
    args = parse_args()
    modeldir.load_manifest(args.model_dir)  # its clear errors before any other
    # The first line, on stderr (stdout holds the answers): which checkpoint, and why.
    print(modeldir.describe_checkpoint(args.model_dir, args.checkpoint), file=sys.stderr,
          flush=True)
    document = {}
    if args.export:
        path, checkpoint = export_saved_model(args.model_dir, args.export, args.checkpoint,
                                              args.export_precision)
        document.update(saved_model=imagefile.display_name(path),
                        saved_model_precision=args.export_precision)
        if not args.json:
            print(f"exported {checkpoint} -> {path} ({args.export_precision}; signature "
                  f"serving_default: {SERVING_INPUT} -> classes, probabilities, class_ids)")
    if args.export_tflite:
        path, labels_path, checkpoint = export_tflite(args.model_dir, args.export_tflite,
                                                      args.checkpoint)
        document.update(tflite=imagefile.display_name(path),
                        tflite_labels=imagefile.display_name(labels_path))
        if not args.json:
            print(f"exported {checkpoint} -> {path} (float32 RGB 0..255 pixels in, "
                  f"probabilities out; class names in {labels_path})")
    if args.export_onnx:
        path, labels_path, checkpoint = export_onnx(args.model_dir, args.export_onnx,
                                                    args.checkpoint)
        document.update(onnx=path, onnx_labels=labels_path)
        if not args.json:
            print(f"exported {checkpoint} -> {path} (ONNX opset {ONNX_OPSET}, float32 RGB "
                  f"0..255 pixels in, probabilities out; class names in {labels_path}; "
                  f"run it with clients/onnx_predict.py)")
    if not args.images:
        if args.json:
            print(json.dumps({"exported": document}, ensure_ascii=False, indent=1))
        return
    paths, problems = imagefile.expand_inputs(args.images)
    classifier = Classifier(args.model_dir, args.checkpoint, args.batch_size, args.precision)
    results = problems + classifier.predict(paths, args.top_k, args.threshold)
    classified = sum(1 for r in results if "predictions" in r)
    for result in results:  # printable and valid JSON whatever bytes a name holds
        result["path"] = imagefile.display_name(result["path"])
    if args.json:
        if document:
            document = {"exported": document}
        document.update(checkpoint=imagefile.display_name(classifier.checkpoint),
                        results=results, precision=classifier.precision._asdict())
        print(json.dumps(document, ensure_ascii=False, indent=1))
    else:
        # On stderr: stdout stays one "path: label (...)" line per image.
        print(classifier.precision, file=sys.stderr)
        imagefile.print_results(results)
    sys.exit(0 if classified else 1)


if __name__ == "__main__":
    cli.run_main(main)
