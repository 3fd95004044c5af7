"""Prediction speed at 224 px: useModel.Classifier against Keras' ResNet50.predict,
the start-up cost of `python useModel.py one.jpg`, and the serving runtimes
(TensorFlow, SavedModel, LiteRT, ONNX Runtime): latency and memory.

    python bench/predict_speed.py [--num_images 1000] [--batch_size 32] [--chunks 4]
                                  [--startup_runs 3] [--workdir /tmp/bench-predict]
                                  [--sections throughput,startup,runtimes]
                                  [--rounds 8] [--single_runs 4] [--batch_runs 4]
                                  [--precision auto|fp32|bf16|fp16]

About 5 minutes on a 2-core CPU for the first two sections (ResNet-50 at 224
px runs at ~10 images/s there); --num_images 200 for a quicker look (the rate
is the same once both are warm). The runtimes section takes about 5 more
(the three exports are made once and cached in --workdir).

Set-up (cached in --workdir, not timed):
  images   --num_images photo-like 224x224 JPEGs (smooth colour fields plus
           noise, quality 90), one folder.
  ours     a layer_50 model at 224 px with 1000 classes, random initialisation,
           written in train.py's format (model.json + labels.txt from
           suite.model.manifest.write_manifest, a tf.compat.v1.train.Saver
           checkpoint model.ckpt-0 with relative paths), loaded with
           suite.prediction.classifier.Classifier(model_dir, batch_size,
           precision), which useModel.py runs. Per image it checks the file
           with Pillow (suite.images.decoding.encode_image_file: decode, EXIF,
           colour mode; a plain JPEG is passed on byte for byte), then the
           graph decodes, resizes the shorter side to 256 (antialiased) and
           centre-crops 224 (suite.preprocessing.evaluation.preprocess_for_eval).
  keras    tf.keras.applications.ResNet50(weights=None), in the Keras policy of
           the same precision (mixed_bfloat16, mixed_float16), model.predict over a
           tf.data pipeline of the same files: read_file, decode_jpeg, resize
           to 224x224 (bilinear), resnet50.preprocess_input, batch, prefetch.

Both are warmed up on one batch (graph optimisation, tracing), then the
folder is split into --chunks chunks and each chunk is classified by both,
alternating which goes first (ours, keras / keras, ours / ...), so a change
in the machine's load hits both alike. Printed: images/s per chunk and
overall, the ratio ours / keras, and that ratio per multiply-add (the two
networks' Conv2D and MatMul work per image, counted from their graphs: our
option-A shortcuts have no projection convs, so ours does less work).

Start-up: a layer_14 model at 224 px (10 classes, random initialisation,
same format); `python useModel.py one.jpg --model_dir M` is started
--startup_runs times and timed from the start of the process to the printed
answer, and to its exit; `python -c "import tensorflow"` is timed the same
way as the floor every TensorFlow program pays.

Runtimes: the layer_50 model above, exported once by `useModel.py --export
--export_tflite --export_onnx`; each of useModel.Classifier (TensorFlow), the
SavedModel (tf.saved_model.load, the file bytes to serving_default), the
TFLite model in LiteRT, the ONNX model in clients/onnx_predict.py (ONNX
Runtime, no TensorFlow; with one thread per core, and with --threads 1) and
the same client with a plain ONNX Runtime session (as it was before its
memory work) runs in a process of its own
(bench/serving_worker.py --serve), started one after the other; then they
take turns, from image files to probabilities: --rounds rounds in which each
runs --single_runs single images, the order reversed in every other round,
so that a change in the machine's load hits all alike; the peak RSS of each
after them; a batch each to warm up, --batch_runs rounds of one --batch_size
batch each, the peak RSS after them; then, for LiteRT and ONNX, the same
rounds on pixels prepared beforehand ("model only"). Printed: the medians,
each runtime's time and peak RSS as a ratio to the Classifier's, and the
load average over the section.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import numpy as np
from PIL import Image

from suite.plumbing import environment

environment.configure()  # before TensorFlow loads

import tensorflow as tf

import resnet
from suite.model.checkpoints import CHECKPOINT_PREFIX, list_checkpoints
from suite.model.manifest import MANIFEST_FILE, write_manifest
from suite.prediction.classifier import Classifier
from train_speed import KERAS_POLICIES  # bench/ is the script's folder, on sys.path

SIZE = 224


def make_images(folder, count, seed=0):
    """count photo-like JPEGs of SIZE x SIZE; kept if already there."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{i:05d}.jpg") for i in range(count)]
    rng = np.random.default_rng(seed)
    for path in paths:
        if os.path.exists(path):
            continue
        # A smooth colour field (a 6x6 grid, upsampled) with noise: JPEG
        # sizes and decode costs like a photo's, unlike flat or white noise.
        field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        pixels = np.asarray(field.resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float64)
        pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path + ".tmp", format="JPEG", quality=90)
        os.replace(path + ".tmp", path)
    return paths


def write_model_dir(model_dir, model, image_size, num_classes):
    """A randomly initialised model folder in train.py's format; kept if there."""
    if os.path.exists(os.path.join(model_dir, MANIFEST_FILE)) and \
            list_checkpoints(model_dir):
        return model_dir
    labels = [f"class_{i:04d}" for i in range(num_classes)]
    write_manifest(model_dir, {
        "model": model, "num_classes": num_classes, "image_size": image_size,
        "shortcut": "A", "preprocessing": {"max_side": None},
        "data": {"fingerprint": "random initialisation (bench)"}, "labels": labels})
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(0)
        images = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        resnet.build(images, model, num_classes, is_train=False)
        tf.compat.v1.train.get_or_create_global_step()
        session.run(tf.compat.v1.global_variables_initializer())
        # As suite.model.checkpoints.save_checkpoint writes it: relative paths,
        # no meta graph.
        tf.compat.v1.train.Saver(save_relative_paths=True).save(
            session, os.path.join(model_dir, CHECKPOINT_PREFIX), global_step=0,
            write_meta_graph=False)
    return model_dir


def multiply_adds(graph):
    """Multiply-adds per image of the Conv2D and MatMul ops of a graph: the
    two networks differ (our option-A shortcuts have no projection convs),
    so the rates are also compared per multiply-add."""
    total = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            kernel = op.inputs[1].shape.as_list()
            total += np.prod(op.outputs[0].shape.as_list()[1:]) * np.prod(kernel[:3])
        elif op.type == "MatMul":
            total += op.inputs[0].shape.as_list()[-1] * op.inputs[1].shape.as_list()[-1]
    return int(total)


def network_multiply_adds(keras_model):
    with tf.Graph().as_default() as graph:
        images = tf.compat.v1.placeholder(tf.float32, [1, SIZE, SIZE, 3])
        resnet.build(images, "layer_50", 1000, is_train=False)
    keras_graph = tf.function(lambda x: keras_model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, SIZE, SIZE, 3])).graph
    return {"ours": multiply_adds(graph), "keras": multiply_adds(keras_graph)}


def keras_dataset(paths, batch_size):
    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, [SIZE, SIZE])
        return tf.keras.applications.resnet50.preprocess_input(image)
    return (tf.data.Dataset.from_tensor_slices(list(paths))
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def classify_ours(classifier, paths):
    results = classifier.predict(list(paths), top_k=5)
    assert all("predictions" in r for r in results), [r for r in results if "error" in r][:1]
    return len(results)


def classify_keras(model, paths, batch_size):
    probabilities = model.predict(keras_dataset(paths, batch_size), verbose=0)
    assert probabilities.shape == (len(paths), 1000)
    return len(probabilities)


def throughput(args, paths):
    model_dir = write_model_dir(os.path.join(args.workdir, "layer_50-224"), "layer_50", SIZE, 1000)
    start = time.perf_counter()
    classifier = Classifier(model_dir, batch_size=args.batch_size, precision=args.precision)
    print(f"ours: Classifier(layer_50, {SIZE} px) loaded in {time.perf_counter() - start:.1f} s; "
          f"{classifier.precision}")
    start = time.perf_counter()
    tf.keras.mixed_precision.set_global_policy(KERAS_POLICIES[classifier.precision.name])
    keras_model = tf.keras.applications.ResNet50(weights=None)
    print(f"keras: ResNet50(weights=None) built in {time.perf_counter() - start:.1f} s")
    contenders = {"ours": lambda chunk: classify_ours(classifier, chunk),
                  "keras": lambda chunk: classify_keras(keras_model, chunk, args.batch_size)}
    for name, run in contenders.items():  # warm-up: graph optimisation, tracing
        start = time.perf_counter()
        run(paths[:args.batch_size])
        print(f"{name}: warm-up batch of {args.batch_size} in {time.perf_counter() - start:.1f} s")
    seconds = {name: 0.0 for name in contenders}
    counted = {name: 0 for name in contenders}
    chunks = [list(c) for c in np.array_split(paths, args.chunks) if len(c)]
    for index, chunk in enumerate(chunks):
        order = list(contenders) if index % 2 == 0 else list(contenders)[::-1]
        rates = []
        for name in order:
            start = time.perf_counter()
            counted[name] += contenders[name](chunk)
            elapsed = time.perf_counter() - start
            seconds[name] += elapsed
            rates.append(f"{name} {len(chunk) / elapsed:6.2f} img/s")
        print(f"chunk {index + 1}/{len(chunks)} ({len(chunk)} images): " + ", ".join(rates))
    classifier.close()
    return ({name: counted[name] / seconds[name] for name in contenders}, counted,
            network_multiply_adds(keras_model))


def time_process(command, runs):
    """(median seconds to the first stdout line, median seconds to exit)."""
    answered, exited = [], []
    for _ in range(runs):
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        line = process.stdout.readline()
        answered.append(time.perf_counter() - start)
        process.communicate()
        exited.append(time.perf_counter() - start)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode})")
    return statistics.median(answered), statistics.median(exited), line.strip()


RUNTIMES = ("classifier", "saved_model", "litert", "onnx", "onnx_1thread", "onnx_plain")
RUNTIME_NAMES = {"classifier": "useModel.Classifier (TensorFlow)",
                 "saved_model": "SavedModel (tf.saved_model.load)",
                 "litert": "TFLite in LiteRT (ai_edge_litert)",
                 "onnx": "clients/onnx_predict.py (ONNX Runtime)",
                 "onnx_1thread": "clients/onnx_predict.py --threads 1",
                 "onnx_plain": "clients/onnx_predict.py, plain ONNX Runtime session"}


def exports(model_dir, folder):
    """{runtime: model path} for each runtime; the three exports made once, then cached."""
    models = {"classifier": model_dir,
              "saved_model": os.path.join(folder, "saved_model", "1"),
              "litert": os.path.join(folder, "model.tflite"),
              "onnx": os.path.join(folder, "model.onnx")}
    models["onnx_1thread"] = models["onnx_plain"] = models["onnx"]
    if not all(os.path.exists(path) for path in models.values()):
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(REPO, "useModel.py"), "--model_dir",
                        model_dir, "--export", os.path.join(folder, "saved_model"),
                        "--export_tflite", models["litert"], "--export_onnx", models["onnx"]],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"exported SavedModel, TFLite and ONNX in {time.perf_counter() - start:.0f} s")
    return models


def runtimes(args, paths):
    """The runtimes' workers taking turns: {runtime: {"single_s": [...],
    "batch_s": [...], "single_model_s", "batch_model_s", "peak_rss_single_mb",
    "peak_rss_mb", "load_s", "tensorflow_imported"}}, and the load averages seen."""
    model_dir = write_model_dir(os.path.join(args.workdir, "layer_50-224"), "layer_50", SIZE, 1000)
    models = exports(model_dir, os.path.join(args.workdir, "layer_50-224-exports"))
    image_list = os.path.join(args.workdir, "runtime-images.txt")
    with open(image_list, "w", encoding="utf-8") as f:
        f.writelines(f"{path}\n" for path in paths)
    workers = {}
    try:
        for name in RUNTIMES:  # one at a time: no load overlaps another's
            workers[name] = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "serving_worker.py"), name, models[name],
                 image_list, "--batch_size", str(args.batch_size), "--serve"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            ready = json.loads(workers[name].stdout.readline())
            print(f"{name}: loaded in {ready['load_s']:.1f} s")
        return take_turns(workers, args)
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()


def take_turns(workers, args):
    def ask(name, command):
        workers[name].stdin.write(command + "\n")
        workers[name].stdin.flush()
        line = workers[name].stdout.readline()
        if not line:
            raise SystemExit(f"bench/serving_worker.py {name} stopped")
        return json.loads(line)

    results = {name: {"single_s": [], "batch_s": [], "single_model_s": [],
                      "batch_model_s": []} for name in workers}
    loads = [os.getloadavg()[0]]

    def rounds(count, key, command):
        for round_index in range(count):
            order = list(workers) if round_index % 2 == 0 else list(workers)[::-1]
            for name in order:
                results[name][key] += ask(name, command)["seconds"]
            loads.append(os.getloadavg()[0])

    rounds(args.rounds, "single_s", f"singles {args.single_runs}")
    for name in workers:
        results[name]["peak_rss_single_mb"] = ask(name, "peak")["peak_rss_mb"]
        ask(name, "batch")  # warm-up
    rounds(args.batch_runs, "batch_s", "batch")
    for name in workers:
        peak = ask(name, "peak")
        results[name].update(peak_rss_mb=peak["peak_rss_mb"],
                             tensorflow_imported=peak["tensorflow_imported"])
    rounds(args.rounds, "single_model_s", f"model_singles {args.single_runs}")
    rounds(args.batch_runs, "batch_model_s", "model_batch")
    return results, loads


def print_runtimes(results, loads, batch_size):
    def median(name, key):
        values = results[name][key]
        return statistics.median(values) if values else None
    reference = results["classifier"]
    print(f"load average over the section: {min(loads):.1f}-{max(loads):.1f}")
    print(f"| runtime | 1 image (ms) | batch of {batch_size} (ms) | images/s (batch) | "
          f"model only: 1 image / batch (ms) | time / Classifier's, 1 image / batch | "
          f"peak RSS, 1 image / batch (MB) | RSS / Classifier's, 1 image / batch | "
          f"imports TensorFlow |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in results:
        single, batch = median(name, "single_s"), median(name, "batch_s")
        model_single, model_batch = median(name, "single_model_s"), median(name, "batch_model_s")
        model_only = (f"{model_single * 1e3:.0f} / {model_batch * 1e3:.0f}"
                      if model_single is not None else "-")
        rss_single, rss_batch = results[name]["peak_rss_single_mb"], results[name]["peak_rss_mb"]
        imports = "yes" if results[name]["tensorflow_imported"] else "no"
        print(f"| {RUNTIME_NAMES[name]} | {single * 1e3:.0f} | {batch * 1e3:.0f} | "
              f"{batch_size / batch:.1f} | {model_only} | "
              f"{single / median('classifier', 'single_s'):.2f} / "
              f"{batch / median('classifier', 'batch_s'):.2f} | "
              f"{rss_single:.0f} / {rss_batch:.0f} | "
              f"{rss_single / reference['peak_rss_single_mb']:.2f} / "
              f"{rss_batch / reference['peak_rss_mb']:.2f} | {imports} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=1000, help="images in the folder")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=4,
                        help="the folder is timed in this many alternating chunks")
    parser.add_argument("--startup_runs", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/bench-predict",
                        help="cache of the images, the model folders and the exports")
    parser.add_argument("--sections", default="throughput,startup,runtimes",
                        help="which to run, comma-separated (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="runtimes: rounds of single images, the runtimes taking turns")
    parser.add_argument("--single_runs", type=int, default=4,
                        help="runtimes: single images each runtime runs in its turn")
    parser.add_argument("--batch_runs", type=int, default=4,
                        help="runtimes: rounds of one batch each")
    parser.add_argument("--precision", default="auto",
                        help="ours (and Keras' policy) in this precision (default: auto)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    unknown = sections - {"throughput", "startup", "runtimes"}
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}")
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    print(f"TensorFlow {tf.__version__}, Keras {tf.keras.__version__}, "
          f"{os.cpu_count()} CPU core(s), GPU: {bool(tf.config.list_physical_devices('GPU'))}")
    paths = make_images(os.path.join(args.workdir, f"images-{args.num_images}"), args.num_images)

    if "throughput" in sections:
        print(f"\n1. classifying {len(paths)} JPEGs of {SIZE}x{SIZE}, batch {args.batch_size}")
        rates, counted, work = throughput(args, paths)
        print(f"ours  (useModel.Classifier, layer_50): {rates['ours']:.2f} images/s "
              f"({counted['ours']} images; {work['ours'] / 1e9:.2f} G multiply-adds/image)")
        print(f"keras (ResNet50.predict):              {rates['keras']:.2f} images/s "
              f"({counted['keras']} images; {work['keras'] / 1e9:.2f} G multiply-adds/image)")
        ratio = rates["ours"] / rates["keras"]
        print(f"ratio ours / keras: {ratio:.2f} in images/s, "
              f"{ratio * work['ours'] / work['keras']:.2f} in multiply-adds/s")

    if "startup" in sections:
        print(f"\n2. start-up: process start -> printed answer, median of {args.startup_runs}")
        small = write_model_dir(os.path.join(args.workdir, "layer_14-224"), "layer_14", SIZE, 10)
        one = paths[0]
        answer, exit_time, line = time_process(
            [sys.executable, os.path.join(REPO, "useModel.py"), one, "--model_dir", small],
            args.startup_runs)
        _, import_tf, _ = time_process([sys.executable, "-c", "import tensorflow"],
                                       args.startup_runs)
        print(f"python useModel.py one.jpg (layer_14, {SIZE} px): answer after {answer:.2f} s, "
              f"exit after {exit_time:.2f} s")
        print(f"  ({line})")
        print(f"python -c 'import tensorflow': {import_tf:.2f} s "
              f"(ratio useModel answer / import: {answer / import_tf:.2f})")

    if "runtimes" in sections:
        print(f"\n3. serving runtimes (layer_50, {SIZE} px, 1000 classes), each in its own "
              f"process, taking turns: files -> probabilities, medians of {args.rounds} "
              f"rounds of {args.single_runs} single images each and {args.batch_runs} "
              f"rounds of one batch of {args.batch_size}")
        results, loads = runtimes(args, paths)
        print_runtimes(results, loads, args.batch_size)
        models = exports(os.path.join(args.workdir, "layer_50-224"),
                         os.path.join(args.workdir, "layer_50-224-exports"))
        answers = {}
        for name, command in (
                ("useModel.py", [os.path.join(REPO, "useModel.py"), paths[0], "--model_dir",
                                 models["classifier"]]),
                ("clients/onnx_predict.py", [os.path.join(REPO, "clients", "onnx_predict.py"),
                                             models["onnx"], paths[0]])):
            answers[name], _, _ = time_process([sys.executable, *command], args.startup_runs)
            print(f"start-up, python {name} one.jpg (layer_50): answer after "
                  f"{answers[name]:.2f} s (median of {args.startup_runs})")
        print(f"ratio onnx_predict / useModel start-up: "
              f"{answers['clients/onnx_predict.py'] / answers['useModel.py']:.2f}")

if __name__ == "__main__":
    main()
