"""Accuracy on real data: Fashion-MNIST through the four scripts, as a user runs them.

    apt-get install dataset-fashion-mnist
    python bench/fashion_mnist.py [--work_dir /tmp/fashion-mnist] [-- TRAIN.PY FLAGS...]

The user's path with nothing chosen but folders: the 60,000-image training
file as class folders (data/make_demo_data.py --split train --per_class 0),
then `python FlowIO.py --image_dir TRAIN` (its default validation split),
`python train.py` (its defaults, plus any flags after --), and
`python Evaluation.py --image_dir TEST` on the official 10,000-image test
file, which takes no part in training, early stopping or the choice of
checkpoint. Prints the minutes FlowIO and train.py took together (the
budget of BENCHMARKS.md, "Accuracy"), the test top-1 and macro-recall, and
the CPU. Writing the folders is not timed: that is the user's data.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*command):
    started = time.time()
    subprocess.run([sys.executable, *command], cwd=REPO, check=True)
    return time.time() - started


def cpu_name():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def write_folders(work_dir):
    """The training and official test files as class folders under work_dir
    (written once): {"train": folder, "test": folder}."""
    folders = {split: os.path.join(work_dir, split) for split in ("train", "test")}
    for split, folder in folders.items():
        if not os.path.isdir(folder):
            subprocess.run([sys.executable, os.path.join(REPO, "data", "make_demo_data.py"),
                            "--split", split, "--per_class", "0", "--output", folder],
                           check=True)
    return folders


def user_path(work_dir, train_flags):
    """FlowIO.py, train.py with train_flags, Evaluation.py --image_dir TEST:
    (seconds of FlowIO, seconds of train.py, Evaluation.py's metrics.json)."""
    folders = write_folders(work_dir)
    records, models = (os.path.join(work_dir, name) for name in ("tfrecords", "models"))
    for folder in (records, models):
        shutil.rmtree(folder, ignore_errors=True)
    flowio = run("FlowIO.py", "--image_dir", folders["train"], "--output_dir", records)
    training = run("train.py", "--data_dir", records, "--model_dir", models, *train_flags)
    evaluation_dir = os.path.join(work_dir, "evaluation")
    run("Evaluation.py", "--model_dir", models, "--image_dir", folders["test"],
        "--output_dir", evaluation_dir)
    with open(os.path.join(evaluation_dir, "metrics.json"), encoding="utf-8") as f:
        return flowio, training, json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="/tmp/fashion-mnist")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="flags for train.py, after --")
    args = parser.parse_args()
    train_flags = [f for f in args.train_flags if f != "--"]
    flowio, training, metrics = user_path(args.work_dir, train_flags)
    recalls = [row["recall"] for row in metrics["per_class"]]
    command = " ".join(["python train.py", *train_flags])
    print(f"\n{cpu_name()}, {os.cpu_count()} cores")
    print(f"| `{command}` | {(flowio + training) / 60:.1f} (FlowIO {flowio / 60:.1f}) "
          f"| {metrics['top1']:.4f} | {sum(recalls) / len(recalls):.4f} |")


if __name__ == "__main__":
    main()
