"""Training input speed at 224 px: suite.data.pipeline against Keras' image_dataset_from_directory.

    python bench/input_speed.py [--num_images 2000] [--batches 20] [--rounds 6]
                                [--resnet_steps 0]

Both contenders read the same photo-like 800x600 JPEGs (bench/photos.py,
cached under /tmp/bench-photos) and yield training batches of 32 images of
224x224 with the same augmentation: a random crop of 25-100% of the image
area with aspect ratio 3/4..4/3 (tf.image.sample_distorted_bounding_box),
resized to 224x224 (bilinear, antialiased), a random left-right flip, and
ImageNet mean/std normalisation.

  flowio  suite.data.pipeline.make_dataset(records, "train", 224, 32,
          training=True), train.py's input pipeline, over the TFRecords that
          FlowIO.py's conversion (suite.data.convert) makes from the photos at
          the start (under /tmp/bench-input/; not timed).
  keras   keras.utils.image_dataset_from_directory(photos, image_size=(600, 800),
          batch_size=None) -- the photos' own size, so the crop is taken from
          the full picture as FlowIO's is -- then .repeat(), a tf.data map
          with the augmentation above written with tf.image ops, .batch(32)
          and .prefetch(AUTOTUNE). tf.image ops because Keras 3 has no
          random-resized-crop layer (keras.layers.RandomCrop takes a
          fixed-size crop), and a map over the dataset rather than layers
          inside the model because that is Keras' own advice for augmentation
          when training on a CPU (asynchronous, overlapping training).

Each timed segment builds a fresh iterator, discards --warmup batches (so
buffers are full and tf.data's autotuner has settled), then times --batches
batches; segments alternate flowio, keras, flowio, keras, ... for --rounds
rounds, and each iterator is deleted (which stops its background threads)
before the next one starts, so neither prefetches during the other's
segment. Printed: images/s per segment (with the CPU time this process and
other processes used meanwhile), per contender over all segments, the ratio
flowio / keras, and each contender's rate against the ResNet-50 training
rate at 224 px on this CPU (measured here with --resnet_steps N > 0, else the
README's ~3 images/s).
"""
import argparse
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import photos  # noqa: E402
from suite.plumbing import environment  # noqa: E402

environment.configure()  # before TensorFlow loads

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from suite.data.convert import convert  # noqa: E402
from suite.data.pipeline import make_dataset  # noqa: E402
from suite.preprocessing.augment import AUGMENTATIONS  # noqa: E402
from suite.preprocessing.normalization import normalize  # noqa: E402

RECORDS_ROOT = "/tmp/bench-input"
IMAGE_SIZE = 224
BATCH_SIZE = 32
CITED_RESNET50_RATE = 3.0  # images/s, README.md (train.py --model layer_50 --image_size 224)


def records_for(image_dir):
    """FlowIO.py's TFRecords of image_dir, converted afresh (a few seconds) by
    suite.data.convert so that they are what the current FlowIO.py writes."""
    output_dir = os.path.join(RECORDS_ROOT, os.path.basename(image_dir))
    print(f"converting {image_dir} -> {output_dir} (not timed)", flush=True)
    return output_dir, convert(image_dir, output_dir)


def flowio_dataset(records_dir):
    return make_dataset(records_dir, "train", IMAGE_SIZE, BATCH_SIZE, training=True)


def keras_augment(image, label):
    """The same training transform as suite.preprocessing.augment's
    preprocess_for_train with the standard preset (photos), on a decoded image."""
    preset = AUGMENTATIONS["standard"]
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=preset["aspect"], area_range=preset["area"],
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
    image = tf.image.random_flip_left_right(image)
    return normalize(image), label


def keras_dataset(image_dir):
    photo_size = (photos.HEIGHT, photos.WIDTH)
    dataset = keras.utils.image_dataset_from_directory(
        image_dir, labels="inferred", label_mode="int", image_size=photo_size,
        batch_size=None, shuffle=True, seed=0, verbose=False)
    dataset = dataset.repeat().map(keras_augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(BATCH_SIZE, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def cpu_seconds():
    """(CPU seconds used by this process, by the whole machine), so a segment
    can tell how much of the cores other users took."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (usage.ru_utime + usage.ru_stime,
            (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"))


def time_segment(make, warmup, batches):
    """(images/s, seconds, own CPU s, other processes' CPU s) over `batches`
    batches of a fresh iterator, after `warmup` batches."""
    iterator = iter(make())
    for _ in range(warmup):
        images = next(iterator)[0]
    assert tuple(images.shape) == (BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3), images.shape
    cpu_before, start = cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds, cpu_after = time.perf_counter() - start, cpu_seconds()
    del iterator
    own = cpu_after[0] - cpu_before[0]
    others = max(0.0, cpu_after[1] - cpu_before[1] - own)
    return batches * BATCH_SIZE / seconds, seconds, own, others


def resnet50_rate(steps):
    """images/s of ResNet-50 training steps at 224 px, batch 32, fp32, of train.py's
    own graph (bench/train_speed.py's build_ours: the product's
    suite.training.graph.build_training_graph), on fixed random inputs so that
    only the network is timed."""
    import argparse
    from train_speed import build_ours  # bench/ is on sys.path
    graph, train_op, config = build_ours(argparse.Namespace(
        data_dir=None, precision="fp32", model="layer_50", image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE, xla=False))
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        with graph.as_default():
            session.run(tf.compat.v1.global_variables_initializer())
        session.run(train_op)  # warm-up: graph optimisation, memory allocation
        start = time.perf_counter()
        for _ in range(steps):
            session.run(train_op)
        return steps * BATCH_SIZE / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--num_classes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5, help="batches discarded per segment")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per segment")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--resnet_steps", type=int, default=0,
                        help="time this many ResNet-50 training steps (batch 32, 224 px); "
                             "0: use the README's ~3 images/s")
    args = parser.parse_args()

    image_dir = photos.photo_dir(args.num_images, args.num_classes)
    records_dir, info = records_for(image_dir)
    print(f"images: {photos.describe(image_dir)}")
    print(f"records: {records_dir}: train {info['num_examples']['train']} in "
          f"{len(info['shards']['train'])} shards; keras reads all "
          f"{args.num_images} files (the per-image work is the same)")
    print(f"machine: {os.cpu_count()} cores; TensorFlow {tf.__version__}, Keras {keras.__version__} "
          f"({keras.backend.backend()} backend); load average before: {os.getloadavg()[0]:.2f} "
          f"(other users' processes share the cores)")
    for root, _, files in os.walk(image_dir):  # into the page cache for both
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                f.read()

    contenders = {"flowio": lambda: flowio_dataset(records_dir),
                  "keras": lambda: keras_dataset(image_dir)}
    rates = {name: [] for name in contenders}
    for round_index in range(args.rounds):
        for name, make in contenders.items():
            rate, seconds, own, others = time_segment(make, args.warmup, args.batches)
            rates[name].append(rate)
            print(f"round {round_index + 1} {name:6s}: {rate:.1f} images/s ({args.batches} batches "
                  f"of {BATCH_SIZE} in {seconds:.1f} s; CPU: this process {own:.1f} s, other "
                  f"processes {others:.1f} s, of {os.cpu_count() * seconds:.1f} core-s)", flush=True)
        print(f"round {round_index + 1} ratio flowio/keras: "
              f"{rates['flowio'][-1] / rates['keras'][-1]:.2f}x", flush=True)
    # Harmonic mean: the rate over all timed images, each segment being equally long.
    overall = {name: len(r) / sum(1 / x for x in r) for name, r in rates.items()}
    print(f"all rounds: flowio {overall['flowio']:.1f} images/s, keras {overall['keras']:.1f} "
          f"images/s, ratio flowio/keras {overall['flowio'] / overall['keras']:.2f}x (median of "
          f"the rounds' ratios {statistics.median(a / b for a, b in zip(*rates.values())):.2f}x)")
    print(f"load average after the input runs: {os.getloadavg()[0]:.2f}")

    if args.resnet_steps > 0:
        train_rate = resnet50_rate(args.resnet_steps)
        source = f"measured: {args.resnet_steps} steps of batch {BATCH_SIZE} after 1 warm-up step"
    else:
        train_rate = CITED_RESNET50_RATE
        source = "cited from README.md; --resnet_steps N measures it"
    print(f"ResNet-50 training at {IMAGE_SIZE} px: {train_rate:.2f} images/s ({source})")
    for name, rate in overall.items():
        print(f"  {name} input / ResNet-50 training: {rate / train_rate:.1f}x")


if __name__ == "__main__":
    main()
