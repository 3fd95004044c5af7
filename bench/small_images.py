"""Stem, resolution and augmentation for small images, on Fashion-MNIST's training file.

    apt-get install dataset-fashion-mnist
    python bench/small_images.py [--epochs 2] [--configs imagenet:32:standard,small:28:light,...]
                                 [--work_dir /tmp/fashion-mnist]

Each configuration (stem:image_size:augmentation) trains layer_14 with
train.py's other defaults and --seed 0 for the same --epochs, one after the
other, on FlowIO's split of the 60,000-image training file (55,000 train,
5,000 validation); the official test file is not touched, so this is a fair
place to choose defaults. Prints per configuration: minutes of training,
images/s (the run's own average), and the validation top-1 at the end.
"""
import argparse
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ("imagenet:32:standard,imagenet:32:light,imagenet:64:light,"
                   "small:28:standard,small:28:light")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="2")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--work_dir", default="/tmp/fashion-mnist")
    args = parser.parse_args()
    train_dir = os.path.join(args.work_dir, "train")
    if not os.path.isdir(train_dir):
        subprocess.run([sys.executable, os.path.join(REPO, "data", "make_demo_data.py"),
                        "--split", "train", "--per_class", "0", "--output", train_dir],
                       check=True)
    records = os.path.join(args.work_dir, "tfrecords-tuning")
    subprocess.run([sys.executable, "FlowIO.py", "--image_dir", train_dir, "--output_dir",
                    records, "--overwrite"], cwd=REPO, check=True, capture_output=True)
    rows = []
    for config in args.configs.split(","):
        stem, size, augmentation = config.split(":")
        model_dir = os.path.join(args.work_dir, f"tuning-{stem}-{size}-{augmentation}")
        subprocess.run(["rm", "-rf", model_dir], check=True)
        started = time.time()
        result = subprocess.run(
            [sys.executable, "train.py", "--data_dir", records, "--model_dir", model_dir,
             "--stem", stem, "--image_size", size, "--augment", augmentation,
             "--epochs", args.epochs, "--seed", "0", "--log_every_steps", "100"],
            cwd=REPO, check=True, capture_output=True, text=True)
        minutes = (time.time() - started) / 60
        rates = [float(r) for r in re.findall(r"([0-9.]+) img/s", result.stdout)]
        top1 = re.findall(r"validation top-1 at step \d+: ([0-9.]+)", result.stdout)[-1]
        rows.append((config, minutes, sum(rates) / len(rates), top1))
        print(f"| {stem} | {size} | {augmentation} | {minutes:.1f} | {rows[-1][2]:.0f} | {top1} |",
              flush=True)


if __name__ == "__main__":
    main()
