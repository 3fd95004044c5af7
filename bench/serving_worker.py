"""One runtime's prediction latency and peak memory, measured in a process of
its own (bench/predict_speed.py starts one per runtime, so that each peak RSS
is that runtime's alone).

    python bench/serving_worker.py RUNTIME MODEL IMAGE_LIST [--single_runs 20]
                                   [--batch_size 32] [--batch_runs 5] [--threads N]
                                   [--serve]

RUNTIME and MODEL:
  classifier   a model folder: useModel.Classifier(MODEL).predict(paths)
               (suite.prediction.classifier.Classifier)
  saved_model  a SavedModel version folder of useModel.py --export: the file
               bytes to its serving_default signature
  litert       a .tflite of --export_tflite, in ai_edge_litert's Interpreter,
               pixels from clients/onnx_predict.image_pixels
  onnx         a .onnx of --export_onnx: clients/onnx_predict.OnnxClassifier
               (MODEL).predict(paths), in ONNX Runtime
  onnx_1thread the same with one ONNX Runtime thread (--threads ignored)
  onnx_plain   the same client with a plain ONNX Runtime session, as it was
               before its memory work (issue 16): the model file loaded as it
               is, no memory arena, memory patterns, a whole batch in one run,
               glibc's malloc left alone (PlainOnnxClassifier)
IMAGE_LIST: a text file of image paths, one per line.

Every latency runs from image files to probabilities (reading, decoding,
resizing included): what a back-end pays per request. For litert and the
onnx runtimes "model only" is also timed: the runtime on pixels prepared
beforehand. Three single images to warm up, then --single_runs single images
(each a different file); the process's peak RSS then (VmHWM: imports, model,
single images); a batch to warm up, then --batch_runs batches, and the peak
RSS after them; then the model-only runs. Medians and peaks are printed as
one JSON line, with whether TensorFlow was imported: only classifier and
saved_model import it.

--serve: the same, in turns with other workers (bench/predict_speed.py). After
the model is loaded and three single images have warmed it up, one JSON line
{"ready": true, "load_s"}; then one JSON line in answer to each line read:
  singles K      K single images, the next files of the list (cyclically):
                 {"seconds": [...]}
  batch          one batch of --batch_size, the next files: {"seconds": [s]}
  model_singles K, model_batch   the same on pixels prepared beforehand (not
                 timed); {"seconds": []} for runtimes without a model-only run
  peak           {"peak_rss_mb", "tensorflow_imported"}
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

from suite.plumbing import environment  # imports no TensorFlow


def load_classifier(model, args):
    environment.configure()  # loads TensorFlow: only the TensorFlow runtimes call it
    from suite.prediction.classifier import Classifier
    classifier = Classifier(model, batch_size=args.batch_size)
    return classifier.predict, None


def load_saved_model(model, args):
    environment.configure()
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


def load_onnx(model, args, plain=False, threads=None):
    import onnx_predict
    kind = plain_onnx_classifier(onnx_predict) if plain else onnx_predict.OnnxClassifier
    classifier = kind(model, batch_size=args.batch_size, threads=threads or args.threads)

    prepare = lambda paths: np.stack([onnx_predict.image_pixels(p, classifier.image_size,
                                                                classifier.max_side)
                                      for p in paths])
    return classifier.predict, (prepare, classifier.probabilities)


def plain_onnx_classifier(onnx_predict):
    class PlainOnnxClassifier(onnx_predict.OnnxClassifier):
        """clients/onnx_predict.py with the session it had before its memory
        work: full graph optimisations on the model file as it is, no memory
        arena, memory patterns, a whole batch in one run, and glibc's malloc
        left alone. (Its images are filled into the batch in place, as the
        client's now are.)"""
        run_images = None

        def _load_session(self, onnxruntime, model_path, options):
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = True
            return onnxruntime.InferenceSession(model_path, options,
                                                providers=onnx_predict.PROVIDERS)
    return PlainOnnxClassifier


LOADERS = {"classifier": load_classifier, "saved_model": load_saved_model,
           "litert": load_litert, "onnx": load_onnx,
           "onnx_1thread": lambda model, args: load_onnx(model, args, threads=1),
           "onnx_plain": lambda model, args: load_onnx(model, args, plain=True)}


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
    """The median time of function(item) over inputs (an iterable: items
    made one at a time are not timed)."""
    times = []
    for item in inputs:
        start = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def serve(run, model_only, paths, args, result):
    """--serve: answers the commands read from stdin, one JSON line each."""
    position = [3]  # the three warm-up images come first

    def take(count):
        start = position[0]
        position[0] += count
        return [paths[(start + i) % len(paths)] for i in range(count)]

    def seconds(function, inputs):
        times = []
        for item in inputs:
            start = time.perf_counter()
            function(item)
            times.append(time.perf_counter() - start)
        return times

    print(json.dumps(dict(result, ready=True)), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "singles":
            answer = {"seconds": seconds(run, [[p] for p in take(int(command[1]))])}
        elif command[0] == "batch":
            answer = {"seconds": seconds(run, [take(args.batch_size)])}
        elif command[0] in ("model_singles", "model_batch"):
            if model_only is None:
                answer = {"seconds": []}
            else:
                prepare, on_pixels = model_only
                inputs = ([[p] for p in take(int(command[1]))] if command[0] == "model_singles"
                          else [take(args.batch_size)])
                answer = {"seconds": seconds(on_pixels, map(prepare, inputs))}
        elif command[0] == "peak":
            answer = {"peak_rss_mb": peak_rss_mb(),
                      "tensorflow_imported": "tensorflow" in sys.modules}
        else:
            raise SystemExit(f"unknown command {line.strip()!r}")
        print(json.dumps(answer), flush=True)


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
    parser.add_argument("--serve", action="store_true",
                        help="take commands on stdin (bench/predict_speed.py's turns)")
    args = parser.parse_args()
    with open(args.image_list, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    needed = args.batch_size if args.serve else \
        args.batch_size * args.batch_runs + args.single_runs + 3
    if len(paths) < needed:
        raise SystemExit(f"{args.image_list} lists {len(paths)} images; {needed} needed")
    start = time.perf_counter()
    run, model_only = LOADERS[args.runtime](args.model, args)
    result = {"runtime": args.runtime, "load_s": time.perf_counter() - start}
    if args.serve:
        for path in paths[:3]:  # warm-up
            run([path])
        return serve(run, model_only, paths, args, result)
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
    result["peak_rss_mb"] = peak_rss_mb()
    if model_only:  # after the peak: the bench's own copies of the pixels are not the runtime's
        prepare, on_pixels = model_only
        result["single_model_s"] = median_seconds(on_pixels, map(prepare, singles))
        result["batch_model_s"] = median_seconds(on_pixels, map(prepare, batches))
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    print(json.dumps(result))


if __name__ == "__main__":
    main()
