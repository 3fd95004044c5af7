"""The label audit on real data: Fashion-MNIST with labels flipped on purpose.

    apt-get install dataset-fashion-mnist
    python bench/label_audit.py [--work_dir /tmp/label-audit] [--fraction 0.05]
                                [--noise uniform,realistic,clean] [-- TRAIN.PY FLAGS...]

For each kind of noise, a --fraction of the 60,000 training images is moved
to another class folder (hard links to the clean files, so nothing is
copied): "uniform" to any other class, "realistic" between the classes
people confuse (T-shirt/Shirt, Pullover/Coat, Sneaker/Ankle boot, the flipped
images drawn from those six classes); "clean" flips nothing, for the test
top-1 without noise and what the audit flags in Fashion-MNIST's own labels
(no retraining). Then, as a user would:
`python FlowIO.py --image_dir NOISY`, `python train.py`, `python
Evaluation.py --audit` (timed: the audit's cost), `python Evaluation.py
--image_dir TEST` on the official test file; and again after `FlowIO.py
--exclude label_audit.csv`. Prints, per noise: how many the audit flagged,
their precision and recall against the flips, the precision (= recall) of
the top N of three rankings of every image (N = the number flipped;
self-confidence, normalized margin, confident learning's order), and the
test top-1 before and after the exclusion.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.fashion_mnist import cpu_name  # noqa: E402

CLASS_NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
CONFUSED = {0: 6, 6: 0, 2: 4, 4: 2, 7: 9, 9: 7}  # by Fashion-MNIST label


def run(*command):
    started = time.time()
    subprocess.run([sys.executable, *command], cwd=REPO, check=True)
    return time.time() - started


def clean_tree(work_dir, split):
    folder = os.path.join(work_dir, split)
    if not os.path.isdir(folder):
        run(os.path.join("data", "make_demo_data.py"), "--split", split, "--per_class", "0",
            "--output", folder)
    return folder


def flips(clean, noise, fraction, seed=0):
    """{file name: (true class, given class)} for the flipped images."""
    if noise == "clean":
        return {}
    rng = np.random.default_rng(seed)
    files = [(name, label) for label, cls in enumerate(CLASS_NAMES)
             for name in sorted(os.listdir(os.path.join(clean, cls)))]
    count = round(fraction * len(files))
    if noise == "realistic":
        files = [(name, label) for name, label in files if label in CONFUSED]
    chosen = rng.choice(len(files), count, replace=False)
    flipped = {}
    for i in chosen:
        name, label = files[i]
        other = CONFUSED[label] if noise == "realistic" else \
            (label + rng.integers(1, len(CLASS_NAMES))) % len(CLASS_NAMES)
        flipped[name] = (label, int(other))
    return flipped


def noisy_tree(clean, folder, flipped):
    shutil.rmtree(folder, ignore_errors=True)
    for label, cls in enumerate(CLASS_NAMES):
        os.makedirs(os.path.join(folder, cls))
    for label, cls in enumerate(CLASS_NAMES):
        for name in os.listdir(os.path.join(clean, cls)):
            given = flipped.get(name, (label, label))[1]
            os.link(os.path.join(clean, cls, name),
                    os.path.join(folder, CLASS_NAMES[given], name))


def test_top1(models, test, out):
    run("Evaluation.py", "--model_dir", models, "--image_dir", test, "--output_dir", out)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)["top1"]


def rankings(models, records, flipped):
    """Top-N precision of each ranking of every image (N = len(flipped))."""
    from suite.evaluation.evaluate import Source, predict_split
    from suite.hardware.precision import choose_precision
    from suite.insight.audit import flag_label_issues, label_scores
    from suite.model.manifest import load_manifest
    manifest, precision = load_manifest(models), choose_precision("fp32", purpose="prediction")
    parts = [predict_split(manifest, models, None, Source(records, split, 256), precision)
             for split in ("train", "validation")]
    probabilities = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(int)
    names = [os.path.basename(name) for p in parts for name in p[2]]
    truth = np.array([name in flipped for name in names])
    n = len(flipped)
    own = label_scores(labels, probabilities)
    others = probabilities.copy()
    others[np.arange(len(labels)), labels] = -1
    margin = own - others.max(axis=1)
    found = {"self-confidence": np.argsort(own)[:n], "normalized margin": np.argsort(margin)[:n],
             "confident learning's order": flag_label_issues(labels, probabilities)[:n]}
    return {key: truth[index].sum() / n for key, index in found.items()}


def one_noise(args, noise, clean, test, train_flags):
    flipped = flips(clean, noise, args.fraction)
    base = os.path.join(args.work_dir, noise)
    images, records, models = (os.path.join(base, name) for name in ("images", "tfrecords",
                                                                     "models"))
    for folder in (records, models):
        shutil.rmtree(folder, ignore_errors=True)
    noisy_tree(clean, images, flipped)
    run("FlowIO.py", "--image_dir", images, "--output_dir", records)
    training = run("train.py", "--data_dir", records, "--model_dir", models, *train_flags)
    before = test_top1(models, test, os.path.join(base, "test-before"))
    audit_dir = os.path.join(base, "audit")
    cost = run("Evaluation.py", "--model_dir", models, "--data_dir", records, "--audit",
               "--output_dir", audit_dir)
    audit_csv = os.path.join(audit_dir, "label_audit.csv")
    with open(audit_csv, encoding="utf-8", newline="") as f:
        flagged = {os.path.basename(row["file"]) for row in csv.DictReader(f)}
    hits = len(flagged & set(flipped))
    result = {"noise": noise, "flipped": len(flipped), "flagged": len(flagged),
              "precision": hits / max(len(flagged), 1), "recall": hits / max(len(flipped), 1),
              "audit_minutes": cost / 60, "train_minutes": training / 60, "test_before": before}
    if not flipped:
        return dict(result, top_n={}, test_after=float("nan"))
    ranked = rankings(models, records, flipped)
    shutil.rmtree(models)
    run("FlowIO.py", "--image_dir", images, "--output_dir", records, "--exclude", audit_csv)
    retraining = run("train.py", "--data_dir", records, "--model_dir", models, *train_flags)
    after = test_top1(models, test, os.path.join(base, "test-after"))
    return dict(result, top_n=ranked, retrain_minutes=retraining / 60, test_after=after)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="/tmp/label-audit")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--noise", default="uniform,realistic")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="flags for train.py, after --")
    args = parser.parse_args()
    train_flags = [f for f in args.train_flags if f != "--"]
    clean, test = clean_tree(args.work_dir, "train"), clean_tree(args.work_dir, "test")
    results = [one_noise(args, noise, clean, test, train_flags)
               for noise in args.noise.split(",")]
    print(f"\n{cpu_name()}, {os.cpu_count()} cores; python train.py {' '.join(train_flags)}")
    for r in results:
        print(json.dumps(r))
        top_n = ", ".join(f"{key} {value:.2f}" for key, value in r["top_n"].items())
        print(f"| {r['noise']} {args.fraction:.0%} ({r['flipped']}) | {r['flagged']} | "
              f"{r['precision']:.2f} | {r['recall']:.2f} | {top_n} | "
              f"{r['audit_minutes']:.1f} | {r['test_before']:.4f} | {r['test_after']:.4f} |")


if __name__ == "__main__":
    main()
