"""One runtime's prediction latency and peak memory, measured in a process of
its own (bench/predict_speed.py starts one per runtime, so that each peak RSS
is that runtime's alone).

    python bench/serving_worker.py RUNTIME MODEL IMAGE_LIST [--single_runs 20]
                                   [--batch_size 32] [--batch_runs 5] [--threads N]

RUNTIME and MODEL:
  classifier   a model folder: useModel.Classifier(MODEL).predict(paths)
  saved_model  a SavedModel version folder of useModel.py --export: the file
               bytes to its serving_default signature
  litert       a .tflite of --export_tflite, in ai_edge_litert's Interpreter,
               pixels from clients/onnx_predict.image_pixels
  onnx         a .onnx of --export_onnx: clients/onnx_predict.OnnxClassifier
               (MODEL).predict(paths), in ONNX Runtime
IMAGE_LIST: a text file of image paths, one per line.

Every latency runs from image files to probabilities (reading, decoding,
resizing included): what a back-end pays per request. For litert and onnx
"model only" is also timed: the runtime on pixels prepared beforehand.
Three single images to warm up, then --single_runs single images (each a
different file); the process's peak RSS then (VmHWM: imports, model,
single images); a batch to warm up, then --batch_runs batches, and the peak
RSS after them. Medians and peaks are printed as one JSON line, with whether
TensorFlow was imported: only classifier and saved_model import it.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "clients"))

import numpy as np

import cli


def load_classifier(model, args):
    cli.configure_environment()  # loads TensorFlow: only the TensorFlow runtimes call it
    import useModel
    classifier = useModel.Classifier(model, batch_size=args.batch_size)
    return classifier.predict, None


def load_saved_model(model, args):
    cli.configure_environment()
    import tensorflow as tf
    serve = tf.saved_model.load(model).signatures["serving_default"]

    def run(paths):
        data = []
        for path in paths:
            with open(path, "rb") as f:
                data.append(f.read())
        return serve(image_bytes=tf.constant(data))["probabilities"].numpy()
    return run, None


def load_litert(model, args):
    from ai_edge_litert.interpreter import Interpreter
    import onnx_predict
    interpreter = Interpreter(model_path=model, num_threads=args.threads)
    details = interpreter.get_input_details()[0]
    size = details["shape"][1]
    output = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def on_pixels(pixels):
        if shape[0] != pixels.shape:  # resizing re-plans the graph: only when it changes
            interpreter.resize_tensor_input(details["index"], pixels.shape)
            interpreter.allocate_tensors()
            shape[0] = pixels.shape
        interpreter.set_tensor(details["index"], pixels)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    prepare = lambda paths: np.stack([onnx_predict.image_pixels(p, size) for p in paths])
    return lambda paths: on_pixels(prepare(paths)), (prepare, on_pixels)


def load_onnx(model, args):
    import onnx_predict
    classifier = onnx_predict.OnnxClassifier(model, batch_size=args.batch_size,
                                             threads=args.threads)

    prepare = lambda paths: np.stack([onnx_predict.image_pixels(p, classifier.image_size,
                                                                classifier.max_side)
                                      for p in paths])
    return classifier.predict, (prepare, classifier.probabilities)


LOADERS = {"classifier": load_classifier, "saved_model": load_saved_model,
           "litert": load_litert, "onnx": load_onnx}


def peak_rss_mb():
    """This process's peak RSS: VmHWM, not getrusage's ru_maxrss, which Linux
    carries over from the parent's memory at the fork before exec (the
    parent here has TensorFlow loaded: every worker would start at ~550 MB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def median_seconds(function, inputs):
    times = []
    for item in inputs:
        start = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runtime", choices=sorted(LOADERS))
    parser.add_argument("model")
    parser.add_argument("image_list")
    parser.add_argument("--single_runs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batch_runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="LiteRT's and ONNX Runtime's threads (default: every core, "
                             "as TensorFlow uses)")
    args = parser.parse_args()
    with open(args.image_list, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    needed = args.batch_size * args.batch_runs + args.single_runs + 3
    if len(paths) < needed:
        raise SystemExit(f"{args.image_list} lists {len(paths)} images; {needed} needed")
    start = time.perf_counter()
    run, model_only = LOADERS[args.runtime](args.model, args)
    result = {"runtime": args.runtime, "load_s": time.perf_counter() - start}
    singles = [[p] for p in paths[3:3 + args.single_runs]]
    rest = paths[3 + args.single_runs:]
    batches = [rest[i * args.batch_size:(i + 1) * args.batch_size]
               for i in range(args.batch_runs)]
    # Single images first, so the peak RSS after them is that of a process
    # serving one image at a time; batches' activations come on top of it.
    for path in paths[:3]:  # warm-up: the first runs plan, allocate, optimise
        run([path])
    result["single_s"] = median_seconds(run, singles)
    result["peak_rss_single_mb"] = peak_rss_mb()
    run(paths[:args.batch_size])
    result["batch_s"] = median_seconds(run, batches)
    if model_only:
        prepare, on_pixels = model_only
        result["single_model_s"] = median_seconds(on_pixels, [prepare(p) for p in singles])
        result["batch_model_s"] = median_seconds(on_pixels, [prepare(b) for b in batches])
    result["peak_rss_mb"] = peak_rss_mb()
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    print(json.dumps(result))


if __name__ == "__main__":
    main()
