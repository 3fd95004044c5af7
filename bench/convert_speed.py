"""Conversion speed: FlowIO.py's suite.data.convert against a single-process slim-style converter.

    python bench/convert_speed.py [--num_images 2000] [--rounds 3]

Both contenders turn the same folder of photo-like 800x600 JPEGs
(bench/photos.py, cached under /tmp/bench-photos) into sharded TFRecords with
TF-slim's keys:

  slim    the pattern of TF-slim's datasets/download_and_convert_flowers.py,
          written here from its description: one process; every file's bytes
          are decoded with tf.io.decode_jpeg in one tf.compat.v1.Session (to
          learn height and width and to prove the file decodes), then written
          as a tf.train.Example, 5 shards per split, 20% held out.
  flowio  suite.data.convert.convert(image_dir, output_dir), what FlowIO.py
          runs, with its defaults: all cores, Pillow decoding and checking,
          duplicate detection, a 20% stratified split, automatic shard count,
          dataset.json.

Each run is a fresh Python process (so FlowIO forks its workers from a
process where TensorFlow has run nothing, as in `python FlowIO.py`), and the
clock starts after `import tensorflow`: what is timed is the conversion, not
the interpreter. The runs alternate (slim, flowio, slim, flowio, ...) so that
load from other users of the machine falls on both; the files are read once
beforehand so both find them in the page cache. Printed: each run's images/s
and the CPU time it and other processes used meanwhile, each contender's
images/s over all its runs, and the ratio flowio / slim (over all runs, and
the median of the rounds' ratios).
"""
import argparse
import json
import resource
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import photos  # noqa: E402

OUT_ROOT = "/tmp/bench-convert"
CONTENDERS = ("slim", "flowio")


# ---------------------------------------------------------------------------
# The slim-style converter (single process, TensorFlow decoding)
# ---------------------------------------------------------------------------
def slim_style_convert(image_dir, output_dir, validation_share=0.2, num_shards=5, seed=0):
    """Class folders -> {train,validation}-NNNNN-of-NNNNN.tfrecord; returns the count."""
    import tensorflow as tf

    class_names = sorted(d for d in os.listdir(image_dir)
                         if os.path.isdir(os.path.join(image_dir, d)))
    class_ids = {name: index for index, name in enumerate(class_names)}
    filenames = [os.path.join(image_dir, name, f) for name in class_names
                 for f in sorted(os.listdir(os.path.join(image_dir, name)))]
    random.Random(seed).shuffle(filenames)
    num_validation = int(len(filenames) * validation_share)
    splits = {"train": filenames[num_validation:], "validation": filenames[:num_validation]}

    def feature_bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def feature_int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    written = 0
    with tf.Graph().as_default():
        encoded_in = tf.compat.v1.placeholder(dtype=tf.string)
        decoded = tf.io.decode_jpeg(encoded_in, channels=3)
        with tf.compat.v1.Session() as session:
            for split, names in splits.items():
                per_shard = -(-len(names) // num_shards)
                for shard in range(num_shards):
                    path = os.path.join(output_dir,
                                        f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord")
                    with tf.io.TFRecordWriter(path) as writer:
                        for filename in names[shard * per_shard:(shard + 1) * per_shard]:
                            with tf.io.gfile.GFile(filename, "rb") as f:
                                data = f.read()
                            image = session.run(decoded, feed_dict={encoded_in: data})
                            label = class_ids[os.path.basename(os.path.dirname(filename))]
                            example = tf.train.Example(features=tf.train.Features(feature={
                                "image/encoded": feature_bytes(data),
                                "image/format": feature_bytes(b"jpg"),
                                "image/class/label": feature_int(label),
                                "image/height": feature_int(image.shape[0]),
                                "image/width": feature_int(image.shape[1]),
                            }))
                            writer.write(example.SerializeToString())
                            written += 1
    return written


# ---------------------------------------------------------------------------
# One timed run (in its own process)
# ---------------------------------------------------------------------------
def cpu_seconds():
    """(CPU seconds used by this process and its reaped children, by the whole
    machine), so a run can tell how much of the cores other users took."""
    own = sum(getattr(resource.getrusage(who), field)
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return own, (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def count_records(output_dir):
    import tensorflow as tf
    return sum(1 for name in os.listdir(output_dir) if name.endswith(".tfrecord")
               for _ in tf.data.TFRecordDataset(os.path.join(output_dir, name)))


def trial(contender, image_dir, output_dir):
    """Times one conversion; prints {"images": n, "seconds": s, "records": n} as JSON."""
    import tensorflow as tf  # noqa: F401  (imported before the clock starts)
    shutil.rmtree(output_dir, ignore_errors=True)
    os.makedirs(output_dir)
    if contender == "flowio":
        from suite.data.convert import convert
    cpu_before, start = cpu_seconds(), time.perf_counter()
    if contender == "slim":
        images = slim_style_convert(image_dir, output_dir)
    else:
        info = convert(image_dir, output_dir)
        images = sum(info["num_examples"].values())
    seconds, cpu_after = time.perf_counter() - start, cpu_seconds()
    if contender == "flowio":
        assert not info["skipped"], info["skipped"][:3]
    own = cpu_after[0] - cpu_before[0]
    print(json.dumps({"images": images, "seconds": seconds, "cpu": own,
                      "others_cpu": max(0.0, cpu_after[1] - cpu_before[1] - own),
                      "records": count_records(output_dir)}))


def run_trial(contender, image_dir):
    output_dir = os.path.join(OUT_ROOT, contender)
    process = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_trial", contender,
         "--_image_dir", image_dir, "--_output_dir", output_dir],
        capture_output=True, text=True)
    if process.returncode != 0:
        sys.exit(f"{contender} run failed:\n{process.stderr[-3000:]}")
    result = json.loads(process.stdout.strip().splitlines()[-1])
    if result["records"] != result["images"]:
        sys.exit(f"{contender}: {result['records']} records for {result['images']} images")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--num_classes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each contender, alternating (default: %(default)s)")
    parser.add_argument("--_trial", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--_image_dir", help=argparse.SUPPRESS)
    parser.add_argument("--_output_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._trial:
        trial(args._trial, args._image_dir, args._output_dir)
        return

    image_dir = photos.photo_dir(args.num_images, args.num_classes)
    print(f"images: {photos.describe(image_dir)}")
    print(f"machine: {os.cpu_count()} cores; FlowIO workers: {os.cpu_count()}; "
          f"load average before: {os.getloadavg()[0]:.2f} (other users' processes share the cores)")
    for root, _, files in os.walk(image_dir):  # into the page cache for both
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                f.read()
    totals = {c: [0, 0.0] for c in CONTENDERS}
    ratios = []
    for round_index in range(args.rounds):
        rates = {}
        for contender in CONTENDERS:
            result = run_trial(contender, image_dir)
            rates[contender] = result["images"] / result["seconds"]
            totals[contender][0] += result["images"]
            totals[contender][1] += result["seconds"]
            print(f"round {round_index + 1} {contender:6s}: {result['images']} images in "
                  f"{result['seconds']:.1f} s = {rates[contender]:.1f} images/s  (CPU: this run "
                  f"{result['cpu']:.1f} s, other processes {result['others_cpu']:.1f} s, of "
                  f"{os.cpu_count() * result['seconds']:.1f} core-s)", flush=True)
        ratios.append(rates["flowio"] / rates["slim"])
        print(f"round {round_index + 1} ratio flowio/slim: {ratios[-1]:.2f}x", flush=True)
    overall = {c: n / s for c, (n, s) in totals.items()}
    print(f"all rounds: slim {overall['slim']:.1f} images/s, flowio {overall['flowio']:.1f} "
          f"images/s, ratio flowio/slim {overall['flowio'] / overall['slim']:.2f}x "
          f"(median of the rounds' ratios {statistics.median(ratios):.2f}x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(OUT_ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
