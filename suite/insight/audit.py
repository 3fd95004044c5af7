"""The label audit (Evaluation.py --audit): which of the user's images
probably carry the wrong label, from the trained model's probabilities on
them, by confident learning (Northcutt et al. 2021; cleanlab's
find_label_issues).

An image is flagged when the model is confident it belongs to another class,
with each class's own confidence as the threshold (so a class the model is
less sure of is not flagged wholesale), and the count of flags per pair of
classes estimated from the confident joint. Flagged images are ranked by
their label's probability, the least likely first (self-confidence;
BENCHMARKS.md, "Label audit", compares the rankings).

The probabilities are the trained model's on the images it was trained on:
no extra training, but a model that memorised a wrong label no longer flags
it. BENCHMARKS.md, "Label audit", measures what is found on Fashion-MNIST
with labels flipped on purpose."""
import csv
import io
import os
from typing import NamedTuple

import numpy as np

from suite.data.contract import SPLITS, load_dataset_info
from suite.evaluation.evaluate import Source, predict_split
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write, open_regular_file
from suite.plumbing.names import some

AUDIT_CSV = "label_audit.csv"
COLUMNS = ["file", "label", "suggested", "label_probability", "suggested_probability", "split"]


def label_scores(labels, probabilities):
    """Each image's label quality: the probability of its own label
    (cleanlab's self-confidence); the lower, the more suspect."""
    return probabilities[np.arange(len(labels)), labels]


def flag_label_issues(labels, probabilities):
    """The indices of the images confident learning flags, the most
    suspect first."""
    from cleanlab.filter import find_label_issues  # a second to import: only for the audit
    present = np.unique(labels)
    if len(present) < 2:  # confident learning compares classes
        return np.zeros(0, dtype=int)
    return find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate",
                             return_indices_ranked_by="self_confidence", n_jobs=1)


def audit_rows(labels, probabilities, files, splits, class_names):
    """The flagged images as rows of COLUMNS, the most suspect first.
    files: each image's path; splits: its split."""
    labels = np.asarray(labels, dtype=int)
    suggested = probabilities.argmax(axis=1)
    rows = []
    for i in flag_label_issues(labels, probabilities):
        rows.append({"file": files[i], "label": class_names[labels[i]],
                     "suggested": class_names[suggested[i]],
                     "label_probability": round(float(probabilities[i, labels[i]]), 4),
                     "suggested_probability": round(float(probabilities[i, suggested[i]]), 4),
                     "split": splits[i]})
    return rows


def write_audit(rows, path):
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        atomic_write(path, table.getvalue())
    except OSError as error:
        raise UserError(f"cannot write {path} ({reason(error)}): free some space or choose "
                        f"another --output_dir")


def read_audit(path):
    """label_audit.csv's rows, or None when there is none (or it cannot be
    read: the report page then says the audit was not run)."""
    try:
        with open_regular_file(path) as f:
            return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline="")))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def user_paths(names, tree):
    """The records' file names (relative to the tree FlowIO.py read) as paths
    the user can open and give FlowIO.py --exclude; the names as they are
    when the tree is unknown."""
    return [os.path.join(tree, name) if tree else name for name in names]


class Audit(NamedTuple):
    rows: list          # audit_rows' flagged images
    images: int         # how many were audited
    checkpoint: str     # the weights that judged them
    image_dir: str      # the tree FlowIO.py converted (dataset.json), or None


def audit(manifest, model_dir, checkpoint, data_dir, precision, batch_size):
    """Audits every record of both splits of data_dir: an Audit."""
    info = load_dataset_info(data_dir)
    if info["classes"] != manifest["labels"]:
        raise UserError(f"--audit: {data_dir} has classes {some(info['classes'], 10)} but the "
                        f"model in {model_dir} has {some(manifest['labels'], 10)}; audit the "
                        f"records it was trained on")
    options = info.get("options", {})
    trees = {"train": options.get("image_dir"),
             "validation": options.get("validation_dir") or options.get("image_dir")}
    probabilities, labels, files, splits = [], [], [], []
    for split in SPLITS:
        if not info["num_examples"].get(split):
            continue
        p, y, names, checkpoint = predict_split(manifest, model_dir, checkpoint,
                                                Source(data_dir, split, batch_size), precision)
        probabilities.append(p)
        labels.append(y)
        files.extend(user_paths(names, trees[split]))
        splits.extend([split] * len(names))
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    return Audit(audit_rows(labels, probabilities, files, splits, manifest["labels"]),
                 len(files), checkpoint, options.get("image_dir"))


def print_audit(result, path, data_dir, out):
    """The audit's lines: how many were flagged, the first few, and how to
    leave them out of the next training without touching the files."""
    rows = result.rows
    print(f"label audit: {len(rows)} of {result.images} images look mislabelled (confident "
          f"learning on the model's probabilities) -> {path}", file=out)
    for row in rows[:10]:
        print(f"  {row['file']}: labelled {row['label']} "
              f"(p={row['label_probability']:.3f}), looks like {row['suggested']} "
              f"(p={row['suggested_probability']:.3f})", file=out)
    if len(rows) > 10:
        print(f"  ... and {len(rows) - 10} more in {path}", file=out)
    if rows:
        print(f"Look at them and move the wrong ones to their folder, or leave the listed "
              f"images out of the next conversion: python FlowIO.py --image_dir "
              f"{result.image_dir or 'IMAGES'} --output_dir {data_dir} --exclude {path}", file=out)
