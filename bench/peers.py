"""Time to accuracy against what users would run instead: Fashion-MNIST's
folders, the same 2 cores, the same minutes for each contender.

    apt-get install dataset-fashion-mnist
    python bench/peers.py [--work_dir /tmp/fashion-mnist] [--minutes 10,30]
                          [--contenders ours,keras_tutorial,keras_resnet,yolo]
                          [--yolo_python /tmp/yolo-venv/bin/python]

Each contender runs in its own process, one after another (never two at
once), on the class folders of bench/fashion_mnist.py, and is judged on the
official 10,000-image test file, which takes no part in training or in the
choice of checkpoint:

  ours            FlowIO.py, train.py --time_budget MINUTES, Evaluation.py
                  --image_dir TEST (bench/fashion_mnist.py's path)
  keras_tutorial  Keras as its tutorials teach it: image_dataset_from_directory
                  at 32 px (validation_split 0.1), Rescaling(1/255),
                  keras.applications.ResNet50(weights=None), Adam at its
                  default rate, epochs until the minutes are up
  keras_resnet    the best Keras recipe written in an hour: the images in
                  memory, random flips and 4-px translations, a ResNet-20-style
                  network (3 stages of 32/64/128 channels, 3 basic blocks
                  each), SGD with Nesterov momentum, label smoothing 0.1, a
                  warm-up then a cosine decay over the minutes (the schedule
                  follows the clock), the last weights
  yolo            Ultralytics `yolo classify train` from its untrained
                  yolo11n-cls.yaml at imgsz 32 with `time=MINUTES/60`, in its
                  own environment (--yolo_python; it needs PyTorch); its
                  validation split is 5,000 training images, as FlowIO.py's

Minutes count from the start of data preparation (FlowIO.py, the Keras
datasets, Ultralytics' scan) to the end of training; evaluation on the
test file is not counted. Prints one table row per contender and budget
(ours with its training compute, from model.json), with the CPU.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.fashion_mnist import cpu_name, user_path, write_folders  # noqa: E402

IMAGE_SIZE, BATCH_SIZE, VALIDATION_IMAGES = 32, 128, 5000
CONTENDERS = ("ours", "keras_tutorial", "keras_resnet", "yolo")


# ---------------------------------------------------------------------------
# Keras: run in a child process of this script (--child)
# ---------------------------------------------------------------------------
def deadline(started, seconds):
    """A Keras callback that ends training when the minutes are up (checked
    after each batch), counted from `started`, taken before the data were read."""
    import keras

    class Deadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if time.time() - started > seconds:
                self.model.stop_training = True
    return Deadline()


def _keras_tutorial(folders, started, seconds):
    import keras
    train = keras.utils.image_dataset_from_directory(
        folders["train"], validation_split=0.1, subset="training", seed=123,
        image_size=(IMAGE_SIZE, IMAGE_SIZE), batch_size=32)
    validation = keras.utils.image_dataset_from_directory(
        folders["train"], validation_split=0.1, subset="validation", seed=123,
        image_size=(IMAGE_SIZE, IMAGE_SIZE), batch_size=32)
    model = keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)), keras.layers.Rescaling(1 / 255),
        keras.applications.ResNet50(weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                    classes=len(train.class_names))])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train.prefetch(2), validation_data=validation, epochs=10_000, verbose=2,
              callbacks=[deadline(started, seconds)])
    return model, 1.0  # the model rescales its input itself


# PyTorch's default (its momentum 0.1): Keras' 0.99 lags the weights of a
# run this short, and the moving statistics were off by 4x after 200 steps.
def _basic_block(x, channels, stride):
    import keras
    from keras import layers
    shortcut = x
    x = layers.Conv2D(channels, 3, stride, padding="same", use_bias=False,
                      kernel_regularizer=keras.regularizers.l2(5e-4))(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False,
                      kernel_regularizer=keras.regularizers.l2(5e-4))(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    if stride != 1 or shortcut.shape[-1] != channels:
        shortcut = layers.BatchNormalization(momentum=0.9)(
            layers.Conv2D(channels, 1, stride, use_bias=False)(shortcut))
    return layers.ReLU()(x + shortcut)


def _small_resnet(num_classes):
    import keras
    from keras import layers
    inputs = keras.Input((28, 28, 1))
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(
        layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)))
    for stage, channels in enumerate((32, 64, 128)):
        for block in range(3):
            x = _basic_block(x, channels, 2 if stage and not block else 1)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes)(x))


def _keras_resnet(folders, started, seconds):
    import keras
    import numpy as np
    import tensorflow as tf
    data = keras.utils.image_dataset_from_directory(
        folders["train"], color_mode="grayscale", image_size=(28, 28), batch_size=None,
        shuffle=True, seed=123)
    images, labels = (np.stack(a) for a in zip(*data.as_numpy_iterator()))
    images = images.astype(np.float32) / 255.0
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                keras.layers.RandomTranslation(4 / 28, 4 / 28,
                                                               fill_mode="constant")])
    train = (tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images))
             .batch(BATCH_SIZE, drop_remainder=True)
             .map(lambda x, y: (augment(x, training=True), tf.one_hot(y, 10)),
                  num_parallel_calls=2).prefetch(2))
    peak = 0.1 * BATCH_SIZE / 128

    class ClockSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """A 3% warm-up, then a cosine decay to zero as the minutes run out."""

        def __call__(self, step):
            return tf.py_function(self._rate, [], tf.float32)

        def _rate(self):
            left = min(1.0, (time.time() - started) / seconds)
            return peak * (left / 0.03 if left < 0.03 else
                           0.5 * (1 + math.cos(math.pi * (left - 0.03) / 0.97)))

    model = _small_resnet(10)
    model.compile(optimizer=keras.optimizers.SGD(ClockSchedule(), momentum=0.9, nesterov=True),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=0.1),
                  metrics=["accuracy"])
    model.fit(train, epochs=10_000, verbose=2, callbacks=[deadline(started, seconds)])
    return model, 255.0


def _keras_test_top1(model, divide_by, folders, grayscale):
    import keras
    import numpy as np
    size = 28 if grayscale else IMAGE_SIZE
    test = keras.utils.image_dataset_from_directory(
        folders["test"], color_mode="grayscale" if grayscale else "rgb",
        image_size=(size, size), batch_size=256, shuffle=False)
    correct = total = 0
    for images, labels in test:
        logits = model(images / divide_by, training=False)
        correct += int(np.sum(np.argmax(logits, axis=1) == labels.numpy()))
        total += len(labels)
    return correct / total


def keras_child(name, work_dir, minutes):
    started = time.time()
    folders = write_folders(work_dir)
    train = _keras_tutorial if name == "keras_tutorial" else _keras_resnet
    model, divide_by = train(folders, started, minutes * 60)
    seconds = time.time() - started
    top1 = _keras_test_top1(model, divide_by, folders, grayscale=name == "keras_resnet")
    print(json.dumps({"minutes": seconds / 60, "top1": top1}))


# ---------------------------------------------------------------------------
# Ultralytics, in its own environment
# ---------------------------------------------------------------------------
YOLO_CHILD = """
import json, sys, time
from ultralytics import YOLO
root, minutes, project = sys.argv[1], float(sys.argv[2]), sys.argv[3]
started = time.time()
model = YOLO("yolo11n-cls.yaml")
model.train(data=root, imgsz=32, time=minutes / 60, device="cpu", workers=2, plots=False,
            project=project, name="run", exist_ok=True, pretrained=False, amp=False)
seconds = time.time() - started
best = YOLO(f"{project}/run/weights/best.pt")
metrics = best.val(data=root, split="test", imgsz=32, device="cpu", plots=False)
print(json.dumps({"minutes": seconds / 60, "top1": float(metrics.top1)}))
"""


def yolo_folders(work_dir):
    """Ultralytics' layout (train/, val/, test/ of class folders), hard links
    to the same files: the last VALIDATION_IMAGES / 10 of each class in
    sorted order for val."""
    folders = write_folders(work_dir)
    root = os.path.join(work_dir, "yolo")
    if os.path.isdir(root):
        return root
    per_class = VALIDATION_IMAGES // 10
    for name in sorted(os.listdir(folders["train"])):
        files = sorted(os.listdir(os.path.join(folders["train"], name)))
        for split, chosen in (("train", files[:-per_class]), ("val", files[-per_class:])):
            os.makedirs(os.path.join(root, split, name))
            for file in chosen:
                os.link(os.path.join(folders["train"], name, file),
                        os.path.join(root, split, name, file))
    os.symlink(folders["test"], os.path.join(root, "test"))
    return root


def run_yolo(args, minutes):
    root = yolo_folders(args.work_dir)
    environment = dict(os.environ, YOLO_OFFLINE="1")
    return child_result(subprocess.run(
        [args.yolo_python, "-c", YOLO_CHILD, root, str(minutes),
         os.path.join(args.work_dir, "yolo-runs")], env=environment, capture_output=True,
        text=True))


def child_result(process):
    """A child's last line, its JSON result; or its last error line."""
    if process.returncode:
        return {"error": process.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_contender(args, name, minutes):
    if name == "ours":
        flowio, training, metrics = user_path(args.work_dir, ["--time_budget", str(minutes)])
        with open(os.path.join(args.work_dir, "models", "model.json"), encoding="utf-8") as f:
            pflop = json.load(f)["compute"]["pflop"]
        return {"minutes": (flowio + training) / 60, "top1": metrics["top1"], "pflop": pflop}
    if name == "yolo":
        return run_yolo(args, minutes)
    return child_result(subprocess.run([sys.executable, __file__, "--child", name,
                                        "--work_dir", args.work_dir, "--minutes", str(minutes)],
                                       capture_output=True, text=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="/tmp/fashion-mnist")
    parser.add_argument("--minutes", default="10,30")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--yolo_python", default="/tmp/yolo-venv/bin/python")
    parser.add_argument("--child", choices=("keras_tutorial", "keras_resnet"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return keras_child(args.child, args.work_dir, float(args.minutes))
    print(f"{cpu_name()}, {os.cpu_count()} cores")
    print("| contender | budget (minutes) | minutes | PFLOP | test top-1 |\n"
          "|---|---:|---:|---:|---:|")
    for minutes in (float(m) for m in args.minutes.split(",")):
        for name in args.contenders.split(","):
            result = run_contender(args, name, minutes)
            if "error" in result:
                print(f"| {name} | {minutes:g} | failed: {result['error'][0]} | | |", flush=True)
            else:
                pflop = f"{result['pflop']:.3g}" if "pflop" in result else ""
                print(f"| {name} | {minutes:g} | {result['minutes']:.1f} | {pflop} | "
                      f"{result['top1']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
