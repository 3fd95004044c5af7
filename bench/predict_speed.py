"""Prediction speed at 224 px: useModel.Classifier against Keras' ResNet50.predict,
and the start-up cost of `python useModel.py one.jpg`.

    python bench/predict_speed.py [--num_images 1000] [--batch_size 32] [--chunks 4]
                                  [--startup_runs 3] [--workdir /tmp/bench-predict]
                                  [--precision auto|fp32|bf16|fp16]

About 5 minutes on a 2-core CPU (ResNet-50 at 224 px runs at ~10 images/s
there); --num_images 200 for a quicker look (the rate is the same once both
are warm).

Set-up (cached in --workdir, not timed):
  images   --num_images photo-like 224x224 JPEGs (smooth colour fields plus
           noise, quality 90), one folder.
  ours     a layer_50 model at 224 px with 1000 classes, random initialisation,
           written in train.py's format (model.json + labels.txt from
           modeldir.write_manifest, a tf.compat.v1.train.Saver checkpoint
           model.ckpt-0 with relative paths), loaded with
           useModel.Classifier(model_dir, batch_size, precision). Per image it checks the
           file with Pillow (imagefile.encode_image_file: decode, EXIF, colour
           mode; a plain JPEG is passed on byte for byte), then the graph
           decodes, resizes the shorter side to 256 (antialiased) and
           centre-crops 224 (FlowIO.preprocess_for_eval).
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
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import numpy as np
from PIL import Image

import cli

cli.configure_environment()  # before TensorFlow loads

import tensorflow as tf

import modeldir
import resnet
import useModel
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
    if os.path.exists(os.path.join(model_dir, modeldir.MANIFEST_FILE)) and \
            modeldir.list_checkpoints(model_dir):
        return model_dir
    labels = [f"class_{i:04d}" for i in range(num_classes)]
    modeldir.write_manifest(model_dir, {
        "model": model, "num_classes": num_classes, "image_size": image_size,
        "shortcut": "A", "preprocessing": {"max_side": None},
        "data": {"fingerprint": "random initialisation (bench)"}}, labels)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(0)
        images = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        resnet.build(images, model, num_classes, is_train=False)
        tf.compat.v1.train.get_or_create_global_step()
        session.run(tf.compat.v1.global_variables_initializer())
        # As modeldir.save_checkpoint writes it: relative paths, no meta graph.
        tf.compat.v1.train.Saver(save_relative_paths=True).save(
            session, os.path.join(model_dir, modeldir.CHECKPOINT_PREFIX), global_step=0,
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
    classifier = useModel.Classifier(model_dir, batch_size=args.batch_size,
                                     precision=args.precision)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=1000, help="images in the folder")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=4,
                        help="the folder is timed in this many alternating chunks")
    parser.add_argument("--startup_runs", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/bench-predict",
                        help="cache of the images and the two model folders")
    parser.add_argument("--precision", default="auto",
                        help="ours (and Keras' policy) in this precision (default: auto)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    print(f"TensorFlow {tf.__version__}, Keras {tf.keras.__version__}, "
          f"{os.cpu_count()} CPU core(s), GPU: {bool(tf.config.list_physical_devices('GPU'))}")
    paths = make_images(os.path.join(args.workdir, f"images-{args.num_images}"), args.num_images)

    print(f"\n1. classifying {len(paths)} JPEGs of {SIZE}x{SIZE}, batch {args.batch_size}")
    rates, counted, work = throughput(args, paths)
    print(f"ours  (useModel.Classifier, layer_50): {rates['ours']:.2f} images/s "
          f"({counted['ours']} images; {work['ours'] / 1e9:.2f} G multiply-adds/image)")
    print(f"keras (ResNet50.predict):              {rates['keras']:.2f} images/s "
          f"({counted['keras']} images; {work['keras'] / 1e9:.2f} G multiply-adds/image)")
    ratio = rates["ours"] / rates["keras"]
    print(f"ratio ours / keras: {ratio:.2f} in images/s, "
          f"{ratio * work['ours'] / work['keras']:.2f} in multiply-adds/s")

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


if __name__ == "__main__":
    main()
