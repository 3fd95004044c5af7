"""Quantized exports against fp32: top-1, file size and speed, in ONNX
Runtime (through clients/onnx_predict.py's OnnxClassifier, as users run it)
and LiteRT.

    # a trained model and a class-per-folder test set (e.g. bench/fashion_mnist.py's)
    python bench/quantized_exports.py --model_dir /tmp/fashion-mnist/models \\
        --image_dir /tmp/fashion-mnist/test [--workdir /tmp/bench-quantize]
    # speed at 224 px: a layer_50 of random weights (bench/predict_speed.py's
    # stand-in), calibrated on photo-like JPEGs; its top-1 means nothing
    python bench/quantized_exports.py --stand_in layer_50 [--image_size 224]
    # top-1 at 224 px: a layer_50 trained here on Fashion-MNIST upscaled to
    # 224x224 colour JPEGs (--per_class of the training file, 3 epochs; 30
    # per class of the test file judge), as no ImageNet-trained model can be
    # fetched offline
    python bench/quantized_exports.py --fashion_mnist_224 [--per_class 200]

The six exports (ONNX and TFLite, each fp32, int8 and fp16), and an ONNX
int8 with int8 activations instead of uint8 (the choice of
suite.export.quantize), are made in-process with suite.export (useModel.py
--export_onnx/--export_tflite [--quantize]), cached in --workdir. The test
images become the pixel models' input once, with the client's own code
(onnx_predict.image_pixels), and are cached there too. Speed: images/s for one image a call and for
batches of 32, each export in turn for --seconds, --rounds times, the order
rotated each round so that the machine's load hits all alike; the median
round is printed, with the ratio to the same runtime's fp32.
"""
import argparse
import glob
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "clients")]

from suite.plumbing import environment  # noqa: E402

environment.configure()
import onnx_predict  # noqa: E402
from suite.export.onnx_model import export_onnx  # noqa: E402
from suite.export.quantize import calibration_pixels, quantize_onnx  # noqa: E402
from suite.export.tflite_model import export_tflite  # noqa: E402
from suite.images.eval_transform import eval_pixels  # noqa: E402
from suite.model.manifest import load_manifest  # noqa: E402

PRECISIONS = ("fp32", "int8", "fp16")
BATCH = 32


def cpu_name():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        info = f.read()
    name = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.startswith("model name"))
    flags = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
    extras = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16") if f in flags]
    return f"{name} ({', '.join(extras) or 'AVX2 only'}), {os.cpu_count()} cores"


def test_set(image_dir, size, workdir):
    """(pixels [N, size, size, 3], class names [N]) of a class-per-folder
    set, made with the client's code and cached."""
    cache = os.path.join(workdir, f"test-{size}.npz")
    if not os.path.exists(cache):
        paths = sorted(glob.glob(os.path.join(image_dir, "*", "*")))
        pixels = np.stack([onnx_predict.image_pixels(p, size) for p in paths])
        names = np.array([os.path.basename(os.path.dirname(p)) for p in paths])
        np.savez(cache, pixels=pixels, names=names)
    data = np.load(cache)
    return data["pixels"], data["names"]


def stand_in(args):
    """A random-weight model folder and photo-like calibration pixels."""
    from predict_speed import make_images, write_model_dir
    model_dir = write_model_dir(os.path.join(args.workdir, f"{args.stand_in}-model"),
                                args.stand_in, args.image_size, 1000)
    paths = make_images(os.path.join(args.workdir, "photos"), 300)
    calibration = np.stack([eval_pixels(open(p, "rb").read(), args.image_size)
                            for p in paths])
    return model_dir, calibration


def fashion_mnist_224(args):
    """(model folder, test folder): Fashion-MNIST images upscaled (bicubic) to
    224x224 RGB JPEGs, class folders; FlowIO.py and a layer_50 trained from
    random weights on them; each step kept once done."""
    sys.path.insert(0, os.path.join(REPO, "data"))
    from make_demo_data import CLASS_NAMES, SOURCE_DIR, read_idx
    from PIL import Image
    folders = {}
    for split, prefix, per_class in (("train", "train", args.per_class), ("test", "t10k", 30)):
        folders[split] = folder = os.path.join(args.workdir, split)
        if os.path.isdir(folder):
            continue
        images = read_idx(os.path.join(SOURCE_DIR, f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(SOURCE_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
        for label, name in enumerate(CLASS_NAMES):
            os.makedirs(os.path.join(folder + ".partial", name))
            for index in np.flatnonzero(labels == label)[:per_class]:
                Image.fromarray(images[index]).convert("RGB").resize((224, 224), Image.BICUBIC) \
                    .save(os.path.join(folder + ".partial", name, f"{index:05d}.jpg"), quality=90)
        os.replace(folder + ".partial", folder)
    records, model_dir = (os.path.join(args.workdir, name) for name in ("records", "models"))
    for done, command in ((records, ["FlowIO.py", "--image_dir", folders["train"],
                                     "--output_dir", records]),
                          (model_dir, ["train.py", "--data_dir", records, "--model_dir",
                                       model_dir, "--model", "layer_50", "--image_size", "224",
                                       "--pretrained", "off", "--epochs", str(args.epochs)])):
        if not os.path.isdir(done):
            subprocess.run([sys.executable, os.path.join(REPO, command[0]), *command[1:]],
                           check=True)
    return model_dir, folders["test"]


def make_exports(model_dir, calibration, workdir):
    """{(runtime, precision): path}, made once."""
    paths = {}
    for runtime, export, ext in (("onnx", export_onnx, "onnx"),
                                 ("litert", export_tflite, "tflite")):
        for precision in PRECISIONS:
            path = os.path.join(workdir, f"{precision}.{ext}")
            if not os.path.exists(path):
                started = time.perf_counter()
                export(model_dir, path, quantize=None if precision == "fp32" else precision,
                       calibration=calibration)
                print(f"exported {path} in {time.perf_counter() - started:.0f} s", flush=True)
            paths[runtime, precision] = path
    # The choice of uint8 activations (suite.export.quantize), against int8.
    path = os.path.join(workdir, "int8-activations.onnx")
    if not os.path.exists(path):
        import onnx
        model = quantize_onnx(onnx.load(paths["onnx", "fp32"]), "int8", calibration, "int8")
        onnx.helper.set_model_props(model, {p.key: p.value for p in
                                            onnx.load(paths["onnx", "int8"]).metadata_props})
        onnx.save(model, path)
    paths["onnx", "int8, int8 activations"] = path
    return paths


class LiteRT:
    """A TFLite model in LiteRT (XNNPACK, every core), one interpreter per batch size."""

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter
        self._path, self._interpreters = path, {}
        self._make = lambda: Interpreter(model_path=path, num_threads=os.cpu_count())

    def probabilities(self, pixels):
        if len(pixels) not in self._interpreters:
            interpreter = self._make()
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, pixels.shape)
            interpreter.allocate_tensors()
            self._interpreters[len(pixels)] = interpreter
        interpreter = self._interpreters[len(pixels)]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def load(runtime, path):
    return onnx_predict.OnnxClassifier(path) if runtime == "onnx" else LiteRT(path)


def top1(model, pixels, names, labels):
    rows = np.concatenate([model.probabilities(pixels[start:start + BATCH])
                           for start in range(0, len(pixels), BATCH)])
    return float(np.mean(np.array(labels)[rows.argmax(1)] == names)), rows


def images_per_second(model, pixels, seconds):
    model.probabilities(pixels)  # warm
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.probabilities(pixels)
        done += len(pixels)
    return done / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir")
    parser.add_argument("--image_dir", help="class folders to measure top-1 on")
    parser.add_argument("--stand_in", help="a network of random weights, e.g. layer_50")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--fashion_mnist_224", action="store_true",
                        help="train a layer_50 on Fashion-MNIST at 224 px and measure it")
    parser.add_argument("--per_class", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    args.workdir = args.workdir or ("/tmp/bench-quantize-" + (
        args.stand_in or ("fashion-mnist-224" if args.fashion_mnist_224 else "model")))
    os.makedirs(args.workdir, exist_ok=True)
    if args.fashion_mnist_224:
        args.model_dir, args.image_dir = fashion_mnist_224(args)
    if args.stand_in:
        model_dir, calibration = stand_in(args)
    else:
        model_dir, calibration = args.model_dir, calibration_pixels(load_manifest(args.model_dir))
    manifest = load_manifest(model_dir)
    paths = make_exports(model_dir, calibration, args.workdir)
    models = {key: load(key[0], path) for key, path in paths.items()}
    size = manifest["image_size"]
    print(f"CPU: {cpu_name()}; {manifest['model']} at {size} px")
    accuracy = {}
    if args.image_dir:
        pixels, names = test_set(args.image_dir, size, args.workdir)
        reference = None
        for key, model in models.items():
            accuracy[key], rows = top1(model, pixels, names, manifest["labels"])
            if key == ("onnx", "fp32"):
                reference = rows.argmax(1)
            agree = np.mean(rows.argmax(1) == reference) if reference is not None else 1
            print(f"  {key[0]:6s} {key[1]}: top-1 {accuracy[key]:.4f} on {len(names)} images, "
                  f"same top-1 as ONNX fp32 on {agree:.2%}", flush=True)
    if args.rounds:
        print_table(paths, accuracy, measure_speed(models, size, args))


def measure_speed(models, size, args):
    """{(model key, batch size): images/s of each round}, the models taking turns."""
    inputs = {1: np.random.default_rng(0).random((1, size, size, 3), np.float32) * 255}
    inputs[BATCH] = np.random.default_rng(1).random((BATCH, size, size, 3), np.float32) * 255
    speeds = {(key, batch): [] for key in models for batch in inputs}
    order = list(models)
    for round_index in range(args.rounds):
        for key in order[round_index % len(order):] + order[:round_index % len(order)]:
            for batch, batch_pixels in inputs.items():
                speeds[key, batch].append(images_per_second(models[key], batch_pixels,
                                                            args.seconds))
        print(f"  round {round_index + 1}/{args.rounds} done", flush=True)
    return speeds


def print_table(paths, accuracy, speeds):
    print(f"\n| runtime | precision | size MB | top-1 | img/s, 1 image | img/s, batch {BATCH} |")
    print("|---|---|---|---|---|---|")
    for key, path in paths.items():
        cells = []
        for batch in (1, BATCH):
            median = float(np.median(speeds[key, batch]))
            base = float(np.median(speeds[(key[0], "fp32"), batch]))
            cells.append(f"{median:,.0f} ({median / base:.2f}x)")
        top = f"{accuracy[key]:.4f}" if key in accuracy else "-"
        print(f"| {key[0]} | {key[1]} | {os.path.getsize(path) / 1e6:.1f} | {top} | "
              f"{cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
