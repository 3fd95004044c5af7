"""Classifies images with a trained model.

    python useModel.py IMAGE|FOLDER|GLOB [...] [--model_dir models] [--top_k 3]
                       [--threshold P] [--json] [--checkpoint PATH|best]
                       [--precision auto|fp32|bf16|fp16]

Folders are searched recursively; a file that cannot be read gets one error
line (or a JSON entry with "error") and the others go on. The exit code is
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

--export writes a SavedModel to DIR/<version> (the next free integer, the
layout TensorFlow Serving watches). Its "serving_default" signature takes
`image_bytes`, a 1-D string tensor of encoded images (JPEG, PNG, GIF, BMP,
WebP), and returns, for each image, every class most probable first:
`classes` [batch, num_classes] (names), `probabilities` [batch, num_classes]
and `class_ids` [batch, num_classes] (indices into labels.txt). Its layers
compute in float32 (it runs anywhere) unless --export_precision says bf16 or
fp16. The graph is built from code (modeldir.build_network +
FlowIO.preprocess_for_eval) and only the checkpoint's variables are read.
TensorFlow's decoders ignore EXIF, so clients must send upright images
(useModel.py and FlowIO.py rotate by EXIF).

--export_tflite writes a TensorFlow Lite model taking RGB pixels, float32
0..255, [N, size, size, 3] (shorter side resized to ceil(size / 0.875), then
the central square: see tflite_pixels()), returning probabilities
[N, num_classes] in labels.txt order; the class names go to FILE's
.labels.txt beside it, one per line.
"""
import argparse
import glob
import json
import os
import shutil
import sys
import tempfile

import numpy as np

import cli

if __name__ == "__main__":
    cli.configure_environment()  # before TensorFlow is imported below

import tensorflow as tf

import FlowIO
import hardware
import imagefile
import modeldir
from cli import UserError


class Classifier:
    """A trained model loaded once: predict() classifies lists of image files."""

    def __init__(self, model_dir="models", checkpoint=None, batch_size=32, precision="auto"):
        self.manifest = modeldir.load_manifest(model_dir)
        self.labels = self.manifest["labels"]
        self.batch_size = batch_size
        self.checkpoint = modeldir.resolve_checkpoint(model_dir, checkpoint)
        # hardware.choose_precision: "auto" is the fastest this machine has
        # that keeps the answers (BENCHMARKS.md, "Precision").
        self.precision = hardware.choose_precision(precision, purpose="prediction")
        network = modeldir.frozen_network(self.manifest, self.checkpoint,
                                          self.precision.graph_dtype)
        self._graph = tf.Graph()
        with self._graph.as_default():
            # The input is encoded JPEG bytes, as FlowIO stores them; the graph
            # runs the evaluation preprocessing, so prediction = evaluation.
            self._encoded = tf.compat.v1.placeholder(tf.string, [None], name="encoded_images")
            size = self.manifest["image_size"]
            images = tf.map_fn(_plain(lambda e: FlowIO.preprocess_for_eval(e, size)),
                               self._encoded,
                               fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            self._probabilities = tf.nn.softmax(modeldir.import_network(network, images))
        self._session = tf.compat.v1.Session(
            graph=self._graph, config=hardware.session_config(False, self.precision))

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
                try:
                    encoded.append(imagefile.encode_image_file(result["path"], max_side)[0])
                    batch.append(result)
                except imagefile.BadImage as error:
                    result["error"] = str(error)
            if not encoded:
                continue
            for result, row in zip(batch, self.probabilities(encoded)):
                order = np.argsort(-row)[:max(1, top_k)]
                result["predictions"] = [{"label": self.labels[i], "probability": float(row[i])}
                                         for i in order]
                best = result["predictions"][0]
                unsure = threshold is not None and best["probability"] < threshold
                result["label"] = "unknown" if unsure else best["label"]
        return results

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


def serving_preprocess(encoded, image_size):
    """Encoded bytes of any image TensorFlow decodes -> the network input.

    FlowIO stores every image as JPEG (PNG and the rest re-encoded at
    JPEG_QUALITY, 4:4:4, transparency on white) and evaluation runs
    preprocess_for_eval on those bytes. The served graph does the same: a
    JPEG goes straight to preprocess_for_eval, exactly as useModel.py's
    Classifier and Evaluation.py see it; anything else is decoded, composited
    and re-encoded as FlowIO would, so the network sees what it was trained
    on. Not replicated: EXIF orientation (TensorFlow ignores EXIF) and
    --max_side (the image is shrunk to image_size / 0.875 anyway).
    """
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
    return FlowIO.preprocess_for_eval(jpeg, image_size)


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
    checkpoint = modeldir.resolve_checkpoint(model_dir, checkpoint)
    size = manifest["image_size"]
    try:
        os.makedirs(export_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".export-", dir=export_dir)
    except OSError as error:
        raise UserError(f"--export {export_dir}: cannot write there "
                               f"({error.strerror or error})")
    try:
        graph = tf.Graph()
        with modeldir.quiet_tf1_notices(), graph.as_default(), \
                tf.compat.v1.Session(graph=graph) as session:
            encoded = tf.compat.v1.placeholder(tf.string, [None], name=SERVING_INPUT)
            images = tf.map_fn(_plain(lambda e: serving_preprocess(e, size)), encoded,
                               fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            probabilities = network_probabilities(images, manifest, hardware.DTYPES[precision])
            # Every class, best first: clients slice [:, :k] for a top-k.
            top = tf.math.top_k(probabilities, k=len(manifest["labels"]))
            names = tf.gather(tf.constant(manifest["labels"]), top.indices)
            # Only the variables of the graph built above are read from the
            # checkpoint; nothing of a stored graph is imported.
            modeldir.restore(session, checkpoint)
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
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, checkpoint


def tflite_pixels(encoded_images, image_size):
    """JPEG bytes (from imagefile.encode_image_file) -> the TFLite model's input:
    float32 RGB 0..255 [N, image_size, image_size, 3], resized and cropped as
    FlowIO.preprocess_for_eval does (the model normalises them itself)."""
    images = [FlowIO.preprocess_for_eval(e, image_size) for e in encoded_images]
    pixels = tf.stack(images) * tf.constant(FlowIO.STD_RGB) + tf.constant(FlowIO.MEAN_RGB)
    return pixels.numpy().astype(np.float32)


def export_tflite(model_dir, path, checkpoint=None):
    """Writes a TensorFlow Lite model of the checkpoint to path and the class
    names beside it; returns (path, labels path, checkpoint).

    The model takes pixels, not bytes: TFLite's builtin ops have no image
    decoder (the SELECT_TF_OPS route would need the Flex delegate, which
    mobile runtimes rarely ship), and apps decode with the platform's own
    decoder anyway. Normalisation is inside the model, so a client only
    resizes and crops.
    """
    manifest = modeldir.load_manifest(model_dir)
    checkpoint = modeldir.resolve_checkpoint(model_dir, checkpoint)
    size = manifest["image_size"]
    graph = tf.Graph()
    with modeldir.quiet_tf1_notices():
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            pixels = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="pixels")
            probabilities = network_probabilities(FlowIO.normalize(pixels), manifest)
            modeldir.restore(session, checkpoint)
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [probabilities.op.name])
        # Converted from the frozen graph in a session without variables: from
        # the session above, the converter logs an error about the variables'
        # initialisers, harmless but alarming.
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            tf.graph_util.import_graph_def(frozen, name="")
            converter = tf.compat.v1.lite.TFLiteConverter.from_session(
                session, [graph.get_tensor_by_name(pixels.name)],
                [graph.get_tensor_by_name(probabilities.name)])
            flatbuffer = converter.convert()
    labels_path = os.path.splitext(path)[0] + ".labels.txt"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        for target, data in ((path, flatbuffer),
                             (labels_path, "".join(f"{name}\n" for name in
                                                   manifest["labels"]).encode("utf-8"))):
            with open(target + ".tmp", "wb") as f:
                f.write(data)
            os.replace(target + ".tmp", target)
    except OSError as error:
        raise UserError(f"--export_tflite {path}: cannot write ({error.strerror or error})")
    return path, labels_path, checkpoint


def expand_inputs(inputs):
    """Files, folders (recursively, hidden entries skipped) and glob patterns ->
    (paths, problems) where problems are inputs that matched nothing."""
    paths, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = FlowIO.walk_files(item)
            if not found:
                problems.append({"path": item, "error": "folder has no files"})
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                problems.append({"path": item, "error": "pattern matches no file"})
            paths.extend(matches)
        else:
            problems.append({"path": item, "error": "no such file or folder"})
    return paths, problems


def main():
    parser = argparse.ArgumentParser(description="Classify images with a trained model, or "
                                                 "export it for serving.")
    parser.add_argument("images", nargs="*", help="image files, folders or glob patterns")
    parser.add_argument("--model_dir", default="models", help="(default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="a checkpoint prefix or 'best' (default: the newest)")
    parser.add_argument("--top_k", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="below this probability the answer is 'unknown'")
    parser.add_argument("--batch_size", type=int, default=32, help="(default: %(default)s)")
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
    args = parser.parse_args()
    if not (args.images or args.export or args.export_tflite):
        parser.error("give images to classify, or --export DIR / --export_tflite FILE")
    document = {}
    if args.export:
        path, checkpoint = export_saved_model(args.model_dir, args.export, args.checkpoint,
                                              args.export_precision)
        document.update(saved_model=path, saved_model_precision=args.export_precision)
        if not args.json:
            print(f"exported {checkpoint} -> {path} ({args.export_precision}; signature "
                  f"serving_default: {SERVING_INPUT} -> classes, probabilities, class_ids)")
    if args.export_tflite:
        path, labels_path, checkpoint = export_tflite(args.model_dir, args.export_tflite,
                                                      args.checkpoint)
        document.update(tflite=path, tflite_labels=labels_path)
        if not args.json:
            print(f"exported {checkpoint} -> {path} (float32 RGB 0..255 pixels in, "
                  f"probabilities out; class names in {labels_path})")
    if not args.images:
        if args.json:
            print(json.dumps({"exported": document}, ensure_ascii=False, indent=1))
        return
    paths, problems = expand_inputs(args.images)
    classifier = Classifier(args.model_dir, args.checkpoint, args.batch_size, args.precision)
    results = problems + classifier.predict(paths, args.top_k, args.threshold)
    classified = sum(1 for r in results if "predictions" in r)
    if args.json:
        if document:
            document = {"exported": document}
        document.update(checkpoint=classifier.checkpoint, results=results,
                        precision=classifier.precision._asdict())
        print(json.dumps(document, ensure_ascii=False, indent=1))
    else:
        # On stderr: stdout stays one "path: label (...)" line per image.
        print(classifier.precision, file=sys.stderr)
        for result in results:
            if "error" in result:
                print(f"{result['path']}: error: {result['error']}", file=sys.stderr)
                continue
            guesses = ", ".join(f"{p['label']} {p['probability']:.3f}"
                                for p in result["predictions"])
            print(f"{result['path']}: {result['label']}  ({guesses})")
    sys.exit(0 if classified else 1)


if __name__ == "__main__":
    cli.run_main(main)
