"""Classifies images with a trained model, or exports it for serving.

    python useModel.py IMAGE|FOLDER|GLOB [...] [--model_dir models] [--top_k 3]
                       [--threshold P] [--json] [--checkpoint PATH|best|latest]
                       [--precision auto|fp32|bf16|fp16]
                       [--explain OUT_DIR [--explain_class NAME]]
    python useModel.py --export DIR [--export_precision fp32|bf16|fp16]
    python useModel.py --export_tflite FILE [--quantize int8|fp16]
    python useModel.py --export_onnx FILE [--quantize int8|fp16] [--data_dir DIR]

It uses best/'s checkpoint when there is one, else the newest, and its first
line, on stderr, says which and why. Folders are searched recursively; a file
that cannot be used gets one error line (or a JSON entry with "error") and
the others go on; the exit code is non-zero only when nothing could be
classified. Each image is read exactly as FlowIO.py stores it and
Evaluation.py reads it. --explain OUT_DIR also writes, per classified image,
OUT_DIR/<its name>.png: the image as the network sees it beside its Grad-CAM
heat map of the predicted class, or of --explain_class (suite.insight.explain).

From Python, load once and classify many:

    from useModel import Classifier
    classifier = Classifier("models")
    for result in classifier.predict(["a.jpg", "b.png"], top_k=3):
        print(result["path"], result["predictions"][0])  # {"label": ..., "probability": ...}

--export writes a SavedModel for TensorFlow Serving to DIR/<next version>
(suite.export.saved_model: image bytes in, every class with its probability
out); --export_tflite and --export_onnx write pixel models that carry their
class names and pixel contract in their metadata (suite.export.metadata),
with the names also in a labels file beside them, the two written as a pair
(suite.export.pixel_graph); clients/onnx_predict.py runs the ONNX model
without TensorFlow, and clients/serve.py serves it over HTTP. --quantize
int8 makes those two smaller and faster, calibrated on a few hundred of the
model's training images (--data_dir, default the records model.json names);
fp16 halves them (suite.export.quantize).
"""
import json
import sys

from suite.plumbing import environment

if __name__ == "__main__":
    environment.configure(verbose="--verbose" in sys.argv)  # before TensorFlow loads

from suite.export.onnx_model import ONNX_OPSET, export_onnx
from suite.export.quantize import CHOICES as QUANTIZE_CHOICES
from suite.export.quantize import calibration_pixels
from suite.export.saved_model import SERVING_INPUT, export_saved_model
from suite.export.tflite_model import export_tflite
from suite.hardware.precision import DTYPES
from suite.images.finding import expand_inputs
from suite.insight.explain import Explainer, class_id, write_explanations
from suite.model.checkpoints import describe_checkpoint
from suite.model.manifest import load_manifest
from suite.plumbing import flags
from suite.plumbing.errors import run_main
from suite.plumbing.names import display_name
from suite.prediction.classifier import Classifier
from suite.prediction.results import print_results

__all__ = ["Classifier"]  # the Python API (see above)


def parse_args(argv=None):
    parser = flags.ArgumentParser(description="Classify images with a trained model, or "
                                              "export it for serving.")
    parser.add_argument("images", nargs="*", help="image files, folders or glob patterns")
    flags.add_model_dir(parser)
    flags.add_checkpoint(parser)
    flags.add_answers(parser)
    parser.add_argument("--batch_size", type=flags.positive_int, default=32,
                        help="images per run of the network (default: %(default)s)")
    flags.add_json(parser)
    flags.add_precision(parser, "prediction")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="write a SavedModel for TensorFlow Serving to DIR/<next version>")
    parser.add_argument("--export_precision", choices=sorted(DTYPES), default="fp32",
                        help="the SavedModel's layers in this precision (default: "
                             "%(default)s, which runs anywhere; bf16 for servers with AMX "
                             "or GPUs of compute capability 8.0+, fp16 for GPUs)")
    parser.add_argument("--export_tflite", metavar="FILE", default=None,
                        help="write a TensorFlow Lite model (pixels in) to FILE")
    parser.add_argument("--export_onnx", metavar="FILE", default=None,
                        help="write an ONNX model (pixels in) to FILE, for "
                             "clients/onnx_predict.py and ONNX Runtime")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="the TFLite and ONNX exports in int8 (calibrated on the "
                             "model's training images: smaller, and faster on CPUs) or fp16 "
                             "(half the size); default: float32")
    parser.add_argument("--data_dir", default=None,
                        help="FlowIO.py's records to calibrate --quantize int8 on (default: "
                             "those the model was trained on, as model.json names them)")
    parser.add_argument("--explain", metavar="OUT_DIR", default=None,
                        help="also write a Grad-CAM heat map of each image's predicted "
                             "class to OUT_DIR/<image name>.png (made unique, never over "
                             "a file already there)")
    parser.add_argument("--explain_class", metavar="NAME", default=None,
                        help="with --explain: the heat maps of this class (a name in "
                             "labels.txt) instead of the predicted one")
    args = parser.parse_args(argv)
    if not (args.images or args.export or args.export_tflite or args.export_onnx):
        parser.error("give images to classify, or --export DIR / --export_tflite FILE / "
                     "--export_onnx FILE")
    if args.quantize and not (args.export_tflite or args.export_onnx):
        parser.error("--quantize applies to --export_tflite and --export_onnx")
    if args.data_dir and args.quantize != "int8":
        parser.error("--data_dir is what --quantize int8 calibrates on")
    if args.explain and not args.images:
        parser.error("--explain explains the images it is given: give some")
    if args.explain_class is not None and not args.explain:
        parser.error("--explain_class goes with --explain OUT_DIR")
    return args


def export(args):
    """The exports the flags ask for; returns what --json reports of them."""
    document = {}
    quantized, calibration = "", None
    if args.quantize:
        quantized = f"{args.quantize}, "
        if args.quantize == "int8":
            calibration = calibration_pixels(load_manifest(args.model_dir), args.data_dir)
            quantized = f"int8 calibrated on {len(calibration)} training images, "
        document.update(quantize=args.quantize)
    if args.export:
        path, checkpoint = export_saved_model(args.model_dir, args.export, args.checkpoint,
                                              args.export_precision)
        document.update(saved_model=display_name(path),
                        saved_model_precision=args.export_precision)
        if not args.json:
            print(f"exported {checkpoint} -> {path} ({args.export_precision}; signature "
                  f"serving_default: {SERVING_INPUT} -> classes, probabilities, class_ids)")
    if args.export_tflite:
        path, labels_path, checkpoint = export_tflite(args.model_dir, args.export_tflite,
                                                      args.checkpoint, args.quantize,
                                                      calibration)
        document.update(tflite=display_name(path), tflite_labels=display_name(labels_path))
        if not args.json:
            print(f"exported {checkpoint} -> {path} ({quantized}float32 RGB 0..255 pixels in, "
                  f"probabilities out; class names in its metadata and in {labels_path})")
    if args.export_onnx:
        path, labels_path, checkpoint = export_onnx(args.model_dir, args.export_onnx,
                                                    args.checkpoint, args.quantize, calibration)
        document.update(onnx=display_name(path), onnx_labels=display_name(labels_path))
        if not args.json:
            print(f"exported {checkpoint} -> {path} (ONNX opset {ONNX_OPSET}, {quantized}"
                  f"float32 RGB 0..255 pixels in, probabilities out; class names in its "
                  f"metadata and in {labels_path}; run it with clients/onnx_predict.py)")
    return document


def explain(args, results):
    """--explain: the heat maps of the classified images, written to OUT_DIR
    (suite.insight.explain); returns the line that says where they went."""
    explainer = Explainer(args.model_dir, args.checkpoint, args.batch_size)
    written = write_explanations(explainer, results, args.explain, args.explain_class)
    explainer.close()
    return (f"Grad-CAM heat maps: {written} PNG{'s' * (written != 1)} in "
            f"{display_name(args.explain)}")


def main():
    args = parse_args()
    manifest = load_manifest(args.model_dir)  # its clear errors before any other
    if args.explain_class is not None:
        class_id(args.explain_class, manifest["labels"])
    # The first line, on stderr (stdout holds the answers): which checkpoint, and why.
    print(describe_checkpoint(args.model_dir, args.checkpoint), file=sys.stderr, flush=True)
    document = export(args)
    if not args.images:
        if args.json:
            print(json.dumps({"exported": document}, ensure_ascii=False, indent=1))
        return
    paths, problems = expand_inputs(args.images)
    classifier = Classifier(args.model_dir, args.checkpoint, args.batch_size, args.precision)
    results = problems + classifier.predict(paths, args.top_k, args.threshold)
    classified = sum(1 for r in results if "predictions" in r)
    where = None
    if args.explain:
        classifier.close()  # the explainer loads its own network
        where = explain(args, results)
    for result in results:  # printable and valid JSON whatever bytes a name holds
        result["path"] = display_name(result["path"])
    if args.json:
        if document:
            document = {"exported": document}
        document.update(checkpoint=display_name(classifier.checkpoint),
                        results=results, precision=classifier.precision._asdict())
        print(json.dumps(document, ensure_ascii=False, indent=1))
    else:
        # On stderr: stdout stays one "path: label (...)" line per image.
        print(classifier.precision, file=sys.stderr)
        print_results(results)
    if where:  # last, on stderr: stdout holds only the answers
        print(where, file=sys.stderr)
    sys.exit(0 if classified else 1)


if __name__ == "__main__":
    run_main(main)
