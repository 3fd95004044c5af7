"""Transfer on Fashion-MNIST: a source model on 5 classes, fine-tuned on the other 5.

    apt-get install dataset-fashion-mnist
    python bench/transfer.py [--work_dir /tmp/transfer] [--per_class 20,100,500]
                             [--modes scratch,head,last_stage,all] [--seeds 1,2,3]
                             [--source_epochs 8]

Source task: classes 0-4 (T-shirt_top, Trouser, Pullover, Dress, Coat), every
image of theirs in the 60,000-image training file. Target task: classes 5-9
(Sandal, Shirt, Sneaker, Bag, Ankle_boot); for each N of --per_class its
training images are the first N of each class in the training file (file
order, as data/make_demo_data.py takes them, so the smaller sets are inside
the larger). The target's test set is every image of classes 5-9 in the
official test file (5,000), used only for the final top-1: never for early
stopping or the choice of checkpoint (that is FlowIO.py's validation split of
the N images, default --validation_ratio 0.2: 4 of 20).

As a user runs the scripts: `python FlowIO.py --image_dir SOURCE`, then
`python train.py --pretrained off --epochs SOURCE_EPOCHS` (kept in WORK and
reused once finished); for each N, FlowIO.py on its folder and, per mode, a
new --model_dir: scratch is `train.py --pretrained off`; head, last_stage and
all are `train.py --init_checkpoint WORK/source-model --fine_tune MODE`; each
of these runs once per seed of --seeds (train.py --seed S, in its own new
model folder, WORK/models/N-MODE-seedS; the modes take turns within a seed);
all else is train.py's defaults. Then `python Evaluation.py --image_dir TEST
--json` gives the test top-1. WORK/results.json keeps a row per N, mode and
seed (a re-run replaces its row). The markdown table shows, per N and mode,
over the seeds in results.json: the mean test top-1 and its min-max,
train.py's mean wall minutes and the mean img/s: for head the forward pass
that computes the features (train.py's "the network's features of ..."
line; the head's own progress lines count cached rows), else the median of
the progress lines of the last stage (its first line, with the warm-up, left
out where there are more). Writing the folders and FlowIO.py are not timed. A train.py without --fine_tune (an older one) trains
from scratch by default for 28-pixel images: then --pretrained off is left
out, and the fine-tuning modes are skipped with a message.
"""
import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from data.make_demo_data import CLASS_NAMES, SOURCE_DIR, read_idx  # noqa: E402
from fashion_mnist import cpu_name  # noqa: E402  (bench/, this script's folder)

SOURCE_CLASSES, TARGET_CLASSES = range(0, 5), range(5, 10)
MODES = ("scratch", "head", "last_stage", "all")
STARTS = {"scratch": "scratch", "head": "source model, head trained",
          "last_stage": "source model, last stage + head trained",
          "all": "source model, all layers trained"}


def load(split):
    """(images, labels) of one Fashion-MNIST file."""
    prefix = {"test": "t10k", "train": "train"}[split]
    path = os.path.join(SOURCE_DIR, f"{prefix}-images-idx3-ubyte.gz")
    if not os.path.exists(path):
        sys.exit(f"error: {path} not found: run 'apt-get install dataset-fashion-mnist'")
    return read_idx(path), read_idx(os.path.join(SOURCE_DIR, f"{prefix}-labels-idx1-ubyte.gz"))


def write_folders(folder, data, classes, per_class=0):
    """Class folders of PNGs: the first per_class images (0: all) of each class.
    Written once, through a temporary name, and reused when present."""
    if os.path.isdir(folder):
        return
    images, labels = data
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    for label in classes:
        class_dir = os.path.join(partial, CLASS_NAMES[label])
        os.makedirs(class_dir)
        indices = np.flatnonzero(labels == label)
        for index in indices[:per_class or len(indices)]:
            Image.fromarray(images[index]).save(os.path.join(class_dir, f"{index:05d}.png"),
                                                optimize=True)
    os.rename(partial, folder)
    print(f"wrote {folder}", flush=True)


def run(*command):
    """Runs a repository script, its output shown as it comes; (seconds, stdout)."""
    started, lines = time.time(), []
    with subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=subprocess.PIPE,
                          text=True, bufsize=1) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    if process.returncode:
        sys.exit(f"error: {' '.join(command)} exited with {process.returncode}")
    return time.time() - started, "".join(lines)


def last_match(pattern, text):
    matches = re.findall(pattern, text)
    return float(matches[-1]) if matches else None


def progress_speed(output):
    """The median img/s of the progress lines of train.py's last stage (after
    its last "stage i of n" line), the first left out where there are more."""
    rates = [float(rate) for rate in re.findall(r"^step \d+/\d+ .* ([\d.]+) img/s",
                                                output.split("\nstage ")[-1], re.MULTILINE)]
    return statistics.median(rates[1:] if len(rates) > 1 else rates) if rates else None


def has_fine_tune():
    """Whether this train.py has --fine_tune (and so --pretrained off)."""
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout
    return "--fine_tune" in help_text


def finished(model_dir):
    """Whether model_dir holds a finished train.py run: a checkpoint at
    model.json's last step, or an early stop recorded in validation.json."""
    try:
        with open(os.path.join(model_dir, "model.json"), encoding="utf-8") as f:
            total = json.load(f)["training"]["total_steps"]
    except (OSError, ValueError, KeyError):
        return False
    steps = [int(m.group(1)) for path in glob.glob(os.path.join(model_dir, "model.ckpt-*.index"))
             if (m := re.search(r"model\.ckpt-(\d+)\.index$", path))]
    if steps and max(steps) >= total:
        return True
    try:
        with open(os.path.join(model_dir, "validation.json"), encoding="utf-8") as f:
            return bool(steps) and "stopped_early" in json.load(f)
    except (OSError, ValueError):
        return False


def flowio(image_dir, records):
    """FlowIO.py with its defaults into a new records folder; insists on a
    validation split (the choice of checkpoint needs one)."""
    shutil.rmtree(records, ignore_errors=True)
    run("FlowIO.py", "--image_dir", image_dir, "--output_dir", records)
    with open(os.path.join(records, "dataset.json"), encoding="utf-8") as f:
        counts = json.load(f)["num_examples"]
    if not counts.get("validation"):
        sys.exit(f"error: FlowIO.py made no validation split of {image_dir}")
    return counts


def train_source(work_dir, source_dir, epochs, scratch_flags, previous):
    """The source model, trained unless WORK/source-model holds a finished run;
    its record (validation top-1, minutes) for results.json."""
    model_dir = os.path.join(work_dir, "source-model")
    if finished(model_dir):
        print(f"reusing the finished source model in {model_dir}", flush=True)
        return previous or {"model_dir": model_dir}
    records = os.path.join(work_dir, "source-records")
    shutil.rmtree(model_dir, ignore_errors=True)
    counts = flowio(source_dir, records)
    flags = [*scratch_flags, "--epochs", str(epochs)]
    seconds, output = run("train.py", "--data_dir", records, "--model_dir", model_dir, *flags)
    top1 = last_match(r"best validation top-1 ([\d.]+)", output)
    if top1 is None:
        top1 = last_match(r"validation top-1 at step \d+: ([\d.]+)", output)
    return {"model_dir": model_dir, "train_command": " ".join(["python train.py", *flags]),
            "train_images": counts["train"], "validation_images": counts["validation"],
            "validation_top1": top1, "train_minutes": round(seconds / 60, 2),
            "img_per_s": last_match(r"([\d.]+) img/s", output), "cpu": cpu_name()}


def evaluate(model_dir, test_dir):
    """The test top-1 from Evaluation.py --json (one JSON object on stdout)."""
    result = subprocess.run([sys.executable, "Evaluation.py", "--model_dir", model_dir,
                             "--image_dir", test_dir, "--json"],
                            cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["top1"]


def run_mode(work_dir, per_class, mode, seed, flags, records, test_dir):
    """One train.py run with --seed seed in a new model folder, and its row."""
    model_dir = os.path.join(work_dir, "models", f"{per_class}-{mode}-seed{seed}")
    shutil.rmtree(model_dir, ignore_errors=True)
    flags = [*flags, "--seed", str(seed)]
    seconds, output = run("train.py", "--data_dir", records, "--model_dir", model_dir, *flags)
    return {"per_class": per_class, "mode": mode, "seed": seed, "start": STARTS[mode],
            "test_top1": evaluate(model_dir, test_dir),
            "train_minutes": round(seconds / 60, 2), "img_per_s": progress_speed(output),
            "features_img_per_s": last_match(
                r"the network's features of .* ([\d.]+) img/s", output),
            "train_command": " ".join(["python train.py", *flags]), "cpu": cpu_name()}


def mode_flags(mode, fine_tune, source_model):
    """train.py's flags for a mode; None when this train.py cannot run it."""
    if mode == "scratch":
        return ["--pretrained", "off"] if fine_tune else []
    if not fine_tune:
        print(f"skipping mode {mode}: this train.py has no --fine_tune", flush=True)
        return None
    return ["--init_checkpoint", source_model, "--fine_tune", mode]


def load_results(path):
    """WORK/results.json; rows of an older version of this script, without a
    seed, are left out (train.py chose a random seed for them)."""
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError):
        return {"source": None, "rows": []}
    old = [row for row in results["rows"] if "seed" not in row]
    if old:
        print(f"dropping {len(old)} row(s) without a seed from {path}", flush=True)
    results["rows"] = [row for row in results["rows"] if "seed" in row]
    return results


def row_key(row):
    return row["per_class"], MODES.index(row["mode"]), row["seed"]


def save_results(path, results, new_rows):
    """Merges new_rows into results (a row per images per class, mode and seed)."""
    keys = {row_key(row) for row in new_rows}
    rows = sorted([row for row in results["rows"] if row_key(row) not in keys] + new_rows,
                  key=row_key)
    results["rows"] = rows
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def print_table(results, command):
    def number(value, form):
        return "n/a" if value is None else format(value, form)

    source = results.get("source") or {}
    print(f"\nsource model ({source.get('train_command', '?')}): validation top-1 "
          f"{number(source.get('validation_top1'), '.4f')}, "
          f"{number(source.get('train_minutes'), '.1f')} train.py minutes")
    print("\n| images per class | start | seeds | test top-1 (mean) | min-max "
          "| train.py minutes | img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    groups = {}
    for row in results["rows"]:
        groups.setdefault((row["per_class"], row["mode"]), []).append(row)
    for (per_class, mode), rows in groups.items():
        top1 = [row["test_top1"] for row in rows]
        key = "features_img_per_s" if mode == "head" else "img_per_s"
        speeds = [row.get(key) for row in rows if row.get(key) is not None]
        speed = number(statistics.mean(speeds) if speeds else None, ".1f")
        print(f"| {per_class} | {STARTS[mode]} | {', '.join(str(r['seed']) for r in rows)} "
              f"| {statistics.mean(top1):.4f} | {min(top1):.4f}-{max(top1):.4f} "
              f"| {statistics.mean(row['train_minutes'] for row in rows):.2f} "
              f"| {'features ' if mode == 'head' and speeds else ''}{speed} |")
    print(f"\n{cpu_name()}, {os.cpu_count()} cores; `{command}`")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="/tmp/transfer")
    parser.add_argument("--per_class", default="20,100,500",
                        help="target training images per class, comma-separated")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--seeds", default="1,2,3",
                        help="comma-separated train.py --seed values: each mode and N "
                             "runs once per seed")
    parser.add_argument("--source_epochs", type=int, default=8)
    args = parser.parse_args()
    args.per_class = [int(n) for n in args.per_class.split(",")]
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error("--seeds: comma-separated whole numbers")
    args.modes = args.modes.split(",")
    if any(n <= 0 for n in args.per_class):
        parser.error("--per_class: positive numbers")
    if set(args.modes) - set(MODES):
        parser.error(f"--modes: of {', '.join(MODES)}")
    return args


def main():
    args = parse_args()
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    train, test = load("train"), load("test")
    write_folders(os.path.join(work, "source"), train, SOURCE_CLASSES)
    test_dir = os.path.join(work, "test")
    write_folders(test_dir, test, TARGET_CLASSES)
    for n in args.per_class:
        write_folders(os.path.join(work, f"target-{n}"), train, TARGET_CLASSES, n)
    fine_tune = has_fine_tune()
    results_path = os.path.join(work, "results.json")
    results = load_results(results_path)
    results["source"] = train_source(work, os.path.join(work, "source"), args.source_epochs,
                                     mode_flags("scratch", fine_tune, None), results["source"])
    save_results(results_path, results, [])
    for n in args.per_class:
        flags = {mode: mode_flags(mode, fine_tune, results["source"]["model_dir"])
                 for mode in args.modes}
        if not any(f is not None for f in flags.values()):
            continue
        records = os.path.join(work, f"target-{n}-records")
        flowio(os.path.join(work, f"target-{n}"), records)
        for seed in args.seeds:
            for mode in args.modes:
                if flags[mode] is not None:
                    row = run_mode(work, n, mode, seed, flags[mode], records, test_dir)
                    save_results(results_path, results, [row])
    print_table(results, " ".join(["python bench/transfer.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
